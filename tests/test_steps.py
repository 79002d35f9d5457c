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
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml

from bot.sending.intake import Intake, NotRecorded
from bot.slack.listeners import FUNCTIONS
from bot.slack.payloads import StepExecuted
from bot.slack.steps import step_request
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import TEAM_ID, FakeSlack
from tests.harness import POLICY, App, running_app, sign
from tests.test_replicas_and_shutdown import stop
from tests.test_restart import bot_env, rows, start_bot, wait_until

SMS = "/messages/v1/send"
ROOT = Path(__file__).resolve().parent.parent
_events = itertools.count(1)
# Workflow steps send only under rules that opt in (surfaces); the rest of the harness's policy as it is.
STEP_POLICY = POLICY.replace(
    "    max_recipients: 5\n", "    max_recipients: 5\n    surfaces: [commands, forms, workflows]\n", 1
)
assert STEP_POLICY != POLICY


def ran_by(user: str) -> dict[str, str]:
    """A ``slack#/types/user_context`` value as Slack fills it in: the person and Slack's own proof of them."""
    return {"id": user, "secret": f"NDE0NTIxNDg3MjQ{user}"}


def step_event(execution_id: str, **inputs: Any) -> bytes:
    """The Events API body Slack posts when a workflow reaches the app's send_text step."""
    values = {"via": "sms", "channel": "C0OPS", "runner": ran_by("U0ALICE")} | inputs
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
    async with running_app(slack, fake_d7, tmp_path, STEP_POLICY) as running:
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
    # Only Slack fills in a user context: the workflow's author cannot name who the step sends as.
    assert step["input_parameters"]["properties"]["runner"]["type"] == "slack#/types/user_context"
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
        ({"numbers": "+14155550100", "message": "hi", "runner": None}, "the step needs 'Who runs it' set to"),
        (
            {"numbers": "+14155550100", "message": "hi", "runner": "U0ALICE"},
            "'Who runs it' is a user ID the workflow's author chose",
        ),
        ({"numbers": "+14155550100", "message": "hi", "runner": {"id": "U0ALICE"}}, "the step needs 'Who runs it'"),
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
    (tmp_path / "policy.yml").write_text(STEP_POLICY)
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
    event = StepExecuted.model_validate(json.loads(step_event("Fx0005", numbers="+14155550100", message="hi"))["event"])
    request = step_request(event, TEAM_ID)
    with pytest.raises(NotRecorded):
        await intake.record(request)
    # Not abandoned: the redelivered event records it and it is sent (a person would have been told "not recorded").
    unconfirmed = SimpleNamespace(request=request, recorded_by=None)  # as it would be read back
    assert intake.abandoned(unconfirmed) is None  # type: ignore[arg-type]


async def test_a_step_whose_author_named_the_runner_sends_nothing_and_announces_nobody(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    """The first red-team finding: a step with its 'Who runs it' fixed by the author to Alice sent as Alice. A user
    ID is something an author types; only Slack's user context says who ran the workflow."""
    slack.run_step("Fx0101")
    event = step_event("Fx0101", numbers="+14155550100", message="as alice", runner="U0ALICE")
    assert (await app.event(event)).status_code == 200
    await app.settle()

    assert fake_d7.requests == []
    assert slack.of("chat.postMessage") == []  # nobody is announced as sending
    assert await app.relay.storage.sends.audit() == []  # nothing recorded, nothing charged to Alice's budget
    ((kind, call),) = completions(slack)
    assert kind == "error"
    assert "'Who runs it' is a user ID the workflow's author chose" in call["error"]


async def test_a_step_sends_as_the_person_slack_says_ran_it_and_the_channel_is_told_the_run(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    slack.add_user("U0CAROL", "carol", "+1 415 555 0160")
    slack.run_step("Fx0102")
    event = step_event("Fx0102", numbers="+14155550100", message="hello", runner=ran_by("U0CAROL"))
    assert (await app.event(event)).status_code == 200
    await app.settle()

    assert len(fake_d7.bodies(SMS)) == 1
    (record,) = await app.relay.storage.sends.audit()
    assert record.request.user_id == "U0CAROL"
    announcement = next(p for p in slack.of("chat.postMessage") if not p.get("thread_ts"))
    head = announcement["blocks"][0]["text"]["text"]
    assert head.startswith(":outbox_tray: <@U0CAROL> is sending an SMS")
    assert head.endswith("(a workflow's step, run `WxFx0102`)")


async def test_a_step_under_a_rule_that_does_not_opt_in_workflows_is_refused(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path, POLICY) as app:  # the ops rule lists no surfaces: the default
        slack.run_step("Fx0103")
        assert (await app.event(step_event("Fx0103", numbers="+14155550100", message="hi"))).status_code == 200
        await app.settle()

    assert fake_d7.requests == []
    ((kind, call),) = completions(slack)
    assert kind == "error"
    assert call["error"] == (
        "Not sent: rule 'ops may page on-call' does not take sends from workflow steps "
        "(its surfaces: commands, forms; an admin may add workflows)"
    )


async def test_a_step_from_a_private_channel_the_bot_cannot_see_is_refused(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    """The policy allows C0NOTJOINED, a private channel the bot is not in: Slack answers its members with
    channel_not_found, which is not membership."""
    slack.add_channel("C0NOTJOINED", member=False, public=False)
    slack.run_step("Fx0104")
    event = step_event("Fx0104", channel="C0NOTJOINED", numbers="+14155550100", message="hi")
    assert (await app.event(event)).status_code == 200
    await app.settle()

    assert fake_d7.requests == []
    ((kind, call),) = completions(slack)
    assert kind == "error"
    assert call["error"].startswith("Not sent: the bot cannot see who is in C0NOTJOINED (it is not in it)")


async def test_a_step_naming_more_people_than_any_rule_allows_is_refused_before_any_look_up(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    people = [f"U0P{i:04d}" for i in range(1000)]
    slack.run_step("Fx0105")
    assert (await app.event(step_event("Fx0105", people=people, message="hi"))).status_code == 200
    await app.settle()

    assert fake_d7.requests == []
    assert slack.of("users.info") == []  # counted, not looked up
    ((kind, call),) = completions(slack)
    assert kind == "error"
    assert call["error"] == "Not sent: 1000 recipients is more than the 5 rule 'ops may page on-call' allows"
