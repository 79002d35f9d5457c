"""The Workflow Builder step "Send a text with D7": signed ``function_executed`` events into the real app, the strict
fake Slack recording ``functions.completeSuccess`` / ``functions.completeError`` (each execution completes once),
the fake D7 on the wire. Redelivery sends once; a restart between the ack and D7's answer completes once."""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bot.sending.intake import Intake, NotRecorded
from bot.slack.listeners import FUNCTIONS
from bot.slack.steps import step_request
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import TEAM_ID, FakeSlack
from tests.harness import POLICY, App, running_app, sign
from tests.test_replicas_and_shutdown import stop
from tests.test_restart import bot_env, rows, start_bot, wait_until

SMS = "/messages/v1/send"
ROOT = Path(__file__).resolve().parent.parent
_events = itertools.count(1)


def step_event(execution_id: str, **inputs: Any) -> bytes:
    """The Events API body Slack posts when a workflow reaches the app's send_text step."""
    values = {"via": "sms", "channel": "C0OPS", "runner": "U0ALICE"} | inputs
    return json.dumps(
        {
            "token": "deprecated-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": "A0APP",
            "type": "event_callback",
            "event_id": f"EvStep{next(_events):06d}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM_ID, "user_id": "U0BOT", "is_bot": True}],
            "event": {
                "type": "function_executed",
                "function": {"id": "Fn0SENDTEXT", "callback_id": "send_text", "title": "Send a text with D7"},
                "inputs": values,
                "function_execution_id": execution_id,
                "workflow_execution_id": f"Wx{execution_id}",
                "event_ts": f"{time.time():.6f}",
                "bot_access_token": "xwfp-workflow-token",
            },
        }
    ).encode()


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    slack.add_user("U0ALICE", "alice", "+1 415 555 0150")
    slack.add_channel("C0RANDOM")
    slack.add_channel("C0PRIVATE", public=False, users=["U0BOB"])  # the policy allows it; the runner is not in it
    return slack


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path) as running:
        yield running


def completions(slack: FakeSlack) -> list[tuple[str, dict[str, Any]]]:
    """Every completion Slack accepted: ("success" | "error", its arguments; outputs as JSON, as slack_sdk sends)."""
    done = [
        ("success", c | {"outputs": json.loads(c["outputs"]) if isinstance(c["outputs"], str) else c["outputs"]})
        for c in slack.of("functions.completeSuccess")
    ]
    return done + [("error", c) for c in slack.of("functions.completeError")]


def test_the_manifest_declares_the_step_the_bot_serves() -> None:
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    assert set(manifest["functions"]) == set(FUNCTIONS)
    step = manifest["functions"]["send_text"]
    assert set(step["output_parameters"]["properties"]) == {"request_id", "status", "recipients_count", "segments"}
    assert step["input_parameters"]["properties"]["runner"]["type"] == "slack#/types/user_id"
    assert step["input_parameters"]["properties"]["people"]["items"]["type"] == "slack#/types/user_id"
    assert manifest["settings"]["function_runtime"] == "remote"
    assert manifest["settings"]["org_deploy_enabled"] is True
    assert "function_executed" in manifest["settings"]["event_subscriptions"]["bot_events"]


async def test_a_step_sends_under_the_policy_posts_the_result_and_completes_with_the_outputs(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    slack.run_step("Fx0001")
    answer = await app.event(step_event("Fx0001", numbers="+1 415 555 0100", people=["U0ALICE"], message="disk full"))
    assert answer.status_code == 200
    await app.settle()

    (body,) = fake_d7.bodies(SMS)
    (message,) = body["messages"]
    assert (message["recipients"], message["content"]) == (["+14155550100", "+14155550150"], "disk full")
    assert body["message_globals"]["originator"] == "OpsAlert"
    (record,) = await app.relay.storage.sends.audit()
    assert completions(slack) == [
        (
            "success",
            {
                "function_execution_id": "Fx0001",
                "outputs": {
                    "request_id": record.request_id,
                    "status": "accepted",
                    "recipients_count": 2,
                    "segments": 1,
                },
            },
        )
    ]
    announcement = next(p for p in slack.of("chat.postMessage") if not p.get("thread_ts"))
    assert announcement["channel"] == "C0OPS"
    assert "<@U0ALICE> is sending an SMS" in announcement["blocks"][0]["text"]["text"]


async def test_a_redelivered_step_sends_once_and_completes_once(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    slack.run_step("Fx0002")
    event = step_event("Fx0002", numbers="+14155550100", message="once")
    assert (await app.event(event)).status_code == 200
    again = json.loads(event) | {"event_id": "EvStepAgain"}  # Slack delivers the step again, as a new event
    assert (await app.event(json.dumps(again).encode(), retry=1)).status_code == 200
    await app.settle()

    assert len(fake_d7.bodies(SMS)) == 1
    assert [kind for kind, _ in completions(slack)] == ["success"]


@pytest.mark.parametrize(
    ("inputs", "error"),
    [
        (
            {"channel": "C0RANDOM", "numbers": "+14155550100", "message": "hi"},
            "Not sent: C0RANDOM is not allowed to send via SMS",
        ),
        ({"numbers": "+1 415 555 0100, +1 555", "message": "hi"}, "Not sent: '+1 555' is not a valid phone number"),
        ({"numbers": "+14155550100"}, "the message is empty"),
        ({"numbers": "+14155550100", "message": "hi", "runner": ""}, "'Who runs it' must be a person"),
        (
            {"numbers": "+14155550100", "message": "hi", "channel": "C0PRIVATE"},
            "Not sent: you are not a member of C0PRIVATE",
        ),
        ({"people": ["alice"], "message": "hi"}, "'People' must hold Slack users, not 'alice'"),
    ],
)
async def test_a_refused_step_fails_with_the_reason_and_sends_nothing(
    app: App, slack: FakeSlack, fake_d7: FakeD7, inputs: dict[str, Any], error: str
) -> None:
    slack.run_step("Fx0003")
    assert (await app.event(step_event("Fx0003", **inputs))).status_code == 200
    await app.settle()

    assert fake_d7.requests == []
    ((kind, call),) = completions(slack)
    assert kind == "error"
    assert call["function_execution_id"] == "Fx0003"
    assert call["error"].startswith(error), call["error"]
    assert "<" not in call["error"]  # plain words: Workflow Builder shows no Slack markup


def test_a_restart_between_the_ack_and_d7s_answer_completes_the_step_once(slack: FakeSlack, tmp_path: Path) -> None:
    (tmp_path / "policy.yml").write_text(POLICY)
    slack.run_step("Fx0004")
    with FakeD7(delay=5.0) as d7:
        env = bot_env(slack, d7, tmp_path)
        url = f"http://127.0.0.1:{env['PORT']}/slack/events"
        body = step_event("Fx0004", numbers="+14155550100", message="during a restart")
        procs = []
        try:
            procs.append(bot := start_bot(env, tmp_path, tmp_path / "a.log"))
            headers = {"Content-Type": "application/json", **sign(body)}
            assert httpx.post(url, content=body, headers=headers, timeout=5).status_code == 200
            wait_until(lambda: len(d7.requests) == 1, 10)  # at D7, not answered yet
            bot.send_signal(signal.SIGKILL)
            bot.wait(timeout=10)
            procs.append(again := start_bot(env, tmp_path, tmp_path / "b.log"))
            wait_until(lambda: all(r["posted_at"] for r in rows(tmp_path / "bot.db")), 30)
            again.send_signal(signal.SIGTERM)
            again.wait(timeout=30)
        finally:
            stop(*procs)

    (row,) = rows(tmp_path / "bot.db")
    assert row["state"] == "unknown"  # at D7 when the bot died: never sent twice
    assert len(d7.bodies(SMS)) == 1
    ((kind, call),) = completions(slack)
    assert (kind, call["outputs"]["status"]) == ("success", "unknown")


async def test_a_step_the_database_did_not_keep_is_left_for_slack_to_deliver_again() -> None:
    class Down:
        async def record(self, request: Any, deadline: Any) -> None:
            raise ConnectionRefusedError("the database is down (test)")

    intake = Intake(Down(), timedelta(minutes=15), lambda: None)  # type: ignore[arg-type]
    request = step_request(json.loads(step_event("Fx0005", numbers="+14155550100", message="hi"))["event"], TEAM_ID)
    with pytest.raises(NotRecorded):
        await intake.record(request)
    # Not abandoned: the redelivered event records it and it is sent (a person would have been told "not recorded").
    assert not intake.abandoned(request)
