"""``python -m bot`` as a process: startup refusals, graceful SIGTERM, and the Socket Mode wiring."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck
from slack_sdk.socket_mode.request import SocketModeRequest

from bot.app import open_relay
from bot.config import Settings
from bot.serving import make_socket_handler
from tests.fakes.d7 import TOKEN as D7_TOKEN
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from tests.harness import POLICY, settings_for, sign, slash_command

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel("C0OPS")
        yield fake


def bot_env(slack: FakeSlack, tmp_path: Path, **extra: str) -> dict[str, str]:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "BOT_POLICY": str(policy),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        **extra,
    }


def run_bot(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot"], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_refused_bot_token_stops_with_a_clear_message(slack: FakeSlack, tmp_path: Path) -> None:
    result = run_bot(bot_env(slack, tmp_path, SLACK_BOT_TOKEN="xoxb-revoked"), tmp_path)

    assert result.returncode == 2
    assert "error: Slack refused SLACK_BOT_TOKEN (invalid_auth)." in result.stderr
    assert "xoxb-revoked" not in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_slack_stops_with_a_clear_message(slack: FakeSlack, tmp_path: Path) -> None:
    env = bot_env(slack, tmp_path, SLACK_API_URL=f"http://127.0.0.1:{free_port()}/api/")

    result = run_bot(env, tmp_path)

    assert result.returncode == 2
    assert "error: cannot reach Slack at http://127.0.0.1:" in result.stderr


def test_unreachable_database_stops_with_a_clear_message(slack: FakeSlack, tmp_path: Path) -> None:
    result = run_bot(bot_env(slack, tmp_path, DATABASE_URL=f"postgresql://nobody@127.0.0.1:{free_port()}/x"), tmp_path)

    assert result.returncode == 2
    assert "error: cannot prepare the database (" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_signing_secret_in_http_mode_stops(slack: FakeSlack, tmp_path: Path) -> None:
    env = bot_env(slack, tmp_path)
    del env["SLACK_SIGNING_SECRET"]

    result = run_bot(env, tmp_path)

    assert result.returncode == 2
    assert "SLACK_SIGNING_SECRET: is required in HTTP mode" in result.stderr


def test_sigterm_lets_the_send_in_flight_finish(slack: FakeSlack, tmp_path: Path) -> None:
    with FakeD7(delay=1.5) as d7:
        env = bot_env(slack, tmp_path, D7_API_TOKEN=D7_TOKEN, D7_API_URL=d7.url)
        base = f"http://127.0.0.1:{env['PORT']}"
        proc = serving_bot(env, tmp_path)
        try:
            body = slash_command("/sms", "+14155550100 deploy finished", response_url=slack.response_url("cmd"))
            ack = httpx.post(
                f"{base}/slack/events",
                content=body,
                headers={"Content-Type": "application/x-www-form-urlencoded", **sign(body)},
                timeout=5,
            )
            assert ack.status_code == 200
            while not d7.requests:  # the send is in flight: D7 holds it for 1.5 s
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()

    assert proc.returncode == 0, output
    assert len(d7.sends) == 1
    (request_id,) = d7.sends
    _, reply = slack.of("chat.postMessage")
    assert reply["thread_ts"] == slack.posted_ts(0)
    assert f"request_id `{request_id}`" in reply["text"]
    assert "waiting up to 25s for 1 send(s) in flight" in output
    assert "stopped" in output


def test_what_check_warns_about_the_policy_is_logged_at_start(slack: FakeSlack, tmp_path: Path) -> None:
    env = bot_env(slack, tmp_path)
    policy = Path(env["BOT_POLICY"])
    policy.write_text(POLICY.replace("contacts:\n", 'contacts:\n  team: ["+14155550100", "+33142685300"]\n', 1))
    proc = serving_bot(env, tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()

    (line,) = [line for line in output.splitlines() if "policy: contacts.team[1]" in line]
    assert "is a number in FR" in line
    assert "so texts to it are refused" in line


def serving_bot(env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """``python -m bot`` started and answering /healthz (its output in ``stdout``, stderr with it)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot"], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 30
    while not _answers(f"http://127.0.0.1:{env['PORT']}/healthz"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            output = proc.communicate(timeout=10)[0]
            raise AssertionError(f"the bot did not come up:\n{output}")
        time.sleep(0.1)
    return proc


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def socket_mode_settings(slack: FakeSlack, tmp_path: Path) -> Settings:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    return settings_for(slack, None, policy, tmp_path, SLACK_APP_TOKEN="xapp-1-test", SLACK_SIGNING_SECRET=None)


async def test_socket_mode_handler_is_built_and_http_events_route_is_off(slack: FakeSlack, tmp_path: Path) -> None:
    async with open_relay(socket_mode_settings(slack, tmp_path)) as relay:
        handler = make_socket_handler(relay)
        try:
            transport = httpx.ASGITransport(app=relay.web)
            async with httpx.AsyncClient(transport=transport, base_url="http://bot") as http:
                events = await http.post("/slack/events", content=b"{}")
                health = await http.get("/healthz")
        finally:
            if handler is not None:
                await handler.client.close()  # type: ignore[no-untyped-call]

    assert isinstance(handler, AsyncSocketModeHandler)
    assert handler.app is relay.bolt
    assert handler.app_token == "xapp-1-test"
    assert handler.client.web_client is relay.slack
    assert events.status_code == 404
    assert health.json()["mode"] == "socket"


async def test_http_mode_builds_no_socket_handler(slack: FakeSlack, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    async with open_relay(settings_for(slack, None, policy, tmp_path)) as relay:
        assert make_socket_handler(relay) is None


async def test_socket_mode_envelopes_hold_background_work_until_acked(slack: FakeSlack, tmp_path: Path) -> None:
    async with open_relay(socket_mode_settings(slack, tmp_path)) as relay:
        handler = make_socket_handler(relay)
        assert handler is not None
        seen: list[int] = []

        @relay.bolt.command("/wait")
        async def wait(ack: AsyncAck) -> None:
            seen.append(relay.right_of_way.requests)  # counted while the envelope waits for its ack
            await ack()

        payload = dict(parse_qsl(slash_command("/wait", "").decode()))
        envelope = SocketModeRequest(type="slash_commands", envelope_id="e-1", payload=payload)
        try:
            # Not connected: the ack cannot go out, and the envelope stops holding the way all the same.
            with contextlib.suppress(Exception):
                await handler.client.socket_mode_request_listeners[0](handler.client, envelope)
        finally:
            await handler.client.close()  # type: ignore[no-untyped-call]

    assert seen == [1]
    assert relay.right_of_way.requests == 0
