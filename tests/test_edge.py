"""Hostile or broken clients at the HTTP edge: bodies past the cap, report posts to a wrong secret, and Slack
timestamps Bolt cannot read. The real app over loopback; the raw-socket tests send only part of a body and show
the answer arrives anyway, i.e. the server did not wait for (or read) the rest."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bot.web import MAX_BODY_BYTES
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import SIGNING_SECRET, FakeSlack
from tests.harness import App, running_app, sign, slash_command

SMS = "/messages/v1/send"
REPORT_SECRET = "report-secret-0123456789abcdef"
FIVE_MIB = 5 * 1024 * 1024


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path, D7_REPORT_SECRET=REPORT_SECRET) as running:
        yield running


async def partial_post(app: App, path: str, headers: dict[str, str], body_sent: bytes) -> tuple[int, bytes]:
    """POST over a raw socket, sending only ``body_sent`` of the body the headers announce, and read the answer
    without sending more. An answer that needed the whole body never comes (the read times out)."""
    url = urlsplit(app.url)
    assert url.hostname is not None
    assert url.port is not None
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        head = f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        writer.write(head.encode() + body_sent)
        await writer.drain()
        async with asyncio.timeout(5):
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            return status, await reader.readexactly(length)
    finally:
        writer.close()


def chunked(data: bytes, size: int = 64 * 1024) -> bytes:
    """``data`` in HTTP/1.1 chunks, without the final zero-length chunk: the body never ends."""
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size]) for i in range(0, len(data), size))


async def assert_sms_still_acked(app: App, fake_d7: FakeD7) -> None:
    response = await app.command("/sms", "+14155550100 still here")
    await app.settle()
    assert response.status_code == 200
    assert [body["messages"][0]["content"] for body in fake_d7.bodies(SMS)] == ["still here"]


# ------------------------------------------------------------ the body cap


async def test_a_5_mib_signed_body_is_refused_with_413_and_the_next_command_is_acked(app: App, fake_d7: FakeD7) -> None:
    body = b"text=" + b"x" * FIVE_MIB

    response = await app.post(body)

    assert response.status_code == 413
    assert response.text == "request body too large"
    await assert_sms_still_acked(app, fake_d7)


async def test_a_chunked_body_past_the_cap_is_refused_with_413_and_the_next_command_is_acked(
    app: App, fake_d7: FakeD7
) -> None:
    async def stream() -> AsyncIterator[bytes]:
        for _ in range(FIVE_MIB // (64 * 1024)):
            yield b"x" * 64 * 1024

    response = await app.http.post(
        f"{app.url}/slack/events",
        content=stream(),
        headers={"Content-Type": "application/x-www-form-urlencoded", **sign(b"")},
    )

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    await assert_sms_still_acked(app, fake_d7)


async def test_a_declared_length_past_the_cap_is_answered_413_before_any_of_the_body_is_sent(
    app: App, fake_d7: FakeD7
) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(FIVE_MIB), **sign(b"")}

    assert await partial_post(app, "/slack/events", headers, b"") == (413, b"request body too large")
    await assert_sms_still_acked(app, fake_d7)


async def test_a_chunked_body_is_answered_413_once_past_the_cap_without_waiting_for_its_end(
    app: App, fake_d7: FakeD7
) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Transfer-Encoding": "chunked", **sign(b"")}
    sent = chunked(b"x" * (MAX_BODY_BYTES + 64 * 1024))  # past the cap by one chunk, and never finished

    assert await partial_post(app, "/slack/events", headers, sent) == (413, b"request body too large")
    await assert_sms_still_acked(app, fake_d7)


async def test_a_chunked_body_at_the_cap_is_not_refused(app: App) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Transfer-Encoding": "chunked", **sign(b"")}
    body = chunked(b"x" * MAX_BODY_BYTES) + b"0\r\n\r\n"

    status, answer = await partial_post(app, "/slack/events", headers, body)

    # Read in full and handed to Bolt, which refuses the signature (signed for an empty body), not the size.
    assert (status, answer) == (401, b'{"error": "invalid request"}')


async def test_a_signed_command_sent_chunked_is_acked_and_sent(app: App, fake_d7: FakeD7) -> None:
    body = slash_command("/sms", "+14155550100 sent in chunks", response_url=app.slack.response_url("cmd"))
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Transfer-Encoding": "chunked", **sign(body)}

    status, _ = await partial_post(app, "/slack/events", headers, chunked(body, size=100) + b"0\r\n\r\n")
    await app.settle()

    assert status == 200
    assert [b["messages"][0]["content"] for b in fake_d7.bodies(SMS)] == ["sent in chunks"]


# ------------------------------------------------------------ delivery reports


async def test_a_report_to_a_wrong_secret_is_answered_404_before_any_of_its_large_body_is_sent(
    app: App, fake_d7: FakeD7
) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": str(FIVE_MIB)}

    assert await partial_post(app, "/d7/reports/wrong-secret", headers, b'{"request_id": "') == (404, b"not found")
    assert await partial_post(app, f"/d7/reports/{REPORT_SECRET}x", headers, b"") == (404, b"not found")
    await assert_sms_still_acked(app, fake_d7)


async def test_a_report_to_the_right_secret_past_the_cap_is_answered_413(app: App) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": str(FIVE_MIB)}

    assert await partial_post(app, f"/d7/reports/{REPORT_SECRET}", headers, b"") == (413, b"request body too large")


async def test_a_report_to_the_right_secret_is_still_read(app: App) -> None:
    response = await app.http.post(
        f"{app.url}/d7/reports/{REPORT_SECRET}",
        data={"request_id": "r-1", "msg_id": "m-1", "recipient": "+14155550100", "status": "delivered"},
    )

    assert (response.status_code, response.text) == (200, "ok")


# ------------------------------------------------------------ Slack timestamps


def signed_with_timestamp(body: bytes, timestamp: str) -> dict[str, str]:
    """Slack's signature computed over whatever ``timestamp`` says, so only the timestamp is wrong."""
    base = b"v0:" + timestamp.encode() + b":" + body
    digest = hmac.new(SIGNING_SECRET.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={digest}"}


@pytest.mark.parametrize("timestamp", ["abc", "", "1e3", "12.5", "9" * 5000])
async def test_a_slack_timestamp_that_is_not_unix_seconds_is_refused_with_401_and_no_traceback(
    app: App, fake_d7: FakeD7, caplog: pytest.LogCaptureFixture, timestamp: str
) -> None:
    caplog.set_level(logging.DEBUG)
    body = slash_command("/sms", "+14155550100 hello", response_url=app.slack.response_url("cmd"))

    response = await app.post(body, headers=signed_with_timestamp(body, timestamp))
    await app.settle()

    assert (response.status_code, response.text) == (401, '{"error": "invalid request"}')
    assert response.headers["content-type"] == "application/json;charset=utf-8"
    assert fake_d7.bodies(SMS) == []
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []
    assert "Traceback" not in caplog.text
    await assert_sms_still_acked(app, fake_d7)


async def test_a_slack_request_without_a_timestamp_is_refused_with_401(app: App, fake_d7: FakeD7) -> None:
    body = slash_command("/sms", "+14155550100 hello", response_url=app.slack.response_url("cmd"))
    headers = sign(body)
    del headers["X-Slack-Request-Timestamp"]

    response = await app.post(body, headers=headers)
    await app.settle()

    assert (response.status_code, response.text) == (401, '{"error": "invalid request"}')
    assert fake_d7.bodies(SMS) == []


async def test_a_slack_request_with_a_stale_timestamp_is_still_refused_by_bolt(app: App, fake_d7: FakeD7) -> None:
    body = slash_command("/sms", "+14155550100 hello", response_url=app.slack.response_url("cmd"))

    response = await app.post(body, headers=sign(body, timestamp=1_000_000_000))

    assert (response.status_code, response.text) == (401, '{"error": "invalid request"}')
    assert fake_d7.bodies(SMS) == []


# ------------------------------------------------------------ another installation of the same app


async def test_a_signed_command_from_another_workspace_is_refused_with_401_and_logged_once(
    app: App, slack: FakeSlack, fake_d7: FakeD7, caplog: pytest.LogCaptureFixture
) -> None:
    """Every install of one app shares its signing secret: the signature alone does not make a request ours."""
    body = slash_command("/sms", "+14155550100 hi", user="U0STRANGER").replace(b"team_id=T0TEAM", b"team_id=T0OTHER")
    with caplog.at_level(logging.WARNING, logger="bot.slack"):
        answers = [(await app.post(body, sign(body))).status_code for _ in range(3)]
        await app.settle()

    assert answers == [401, 401, 401]
    assert fake_d7.requests == []
    assert await app.relay.storage.sends.audit() == []
    assert slack.calls == [c for c in slack.calls if c.method == "auth.test"]  # nothing looked up or posted
    assert caplog.text.count("refused a request from another installation (team T0OTHER") == 1


async def test_an_event_from_another_workspace_is_refused_and_ours_still_go_through(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    from tests.harness import event_callback

    slack.add_channel("C0ALERTS")
    alert = {"type": "message", "user": "U0ANY", "text": "CRITICAL: disk", "ts": "1763800100.000100"}
    ours = event_callback(alert)
    foreign = ours.replace(b'"team_id": "T0TEAM"', b'"team_id": "T0OTHER"').replace(
        b'{"team_id": "T0TEAM", "user_id": "U0BOT"', b'{"team_id": "T0OTHER", "user_id": "U0BOT"'
    )
    assert b"T0TEAM" not in foreign

    assert (await app.event(foreign)).status_code == 401
    assert (await app.event(ours)).status_code == 200


async def test_an_event_from_another_orgs_org_wide_install_is_refused(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    """The same app installed org-wide in another Enterprise Grid org: its events are signed with the app's secret
    and name that org and no workspace (the authorization is the org's)."""
    import json

    from tests.harness import event_callback

    slack.add_channel("C0ALERTS")
    alert = {"type": "message", "bot_id": "B0GRAFANA", "text": "CRITICAL: disk", "ts": "1763800100.000200"}
    body = json.loads(event_callback(alert))
    body |= {"team_id": "T0THEIRS", "enterprise_id": "E0OTHER", "is_ext_shared_channel": False}
    body["authorizations"] = [
        {"enterprise_id": "E0OTHER", "team_id": None, "user_id": "U0BOT", "is_bot": True, "is_enterprise_install": True}
    ]

    assert (await app.event(json.dumps(body).encode())).status_code == 401
    await app.settle()
    assert fake_d7.requests == []
    assert await app.relay.storage.sends.audit() == []


def test_an_org_wide_install_is_matched_by_its_enterprise() -> None:
    from bot.slack.installation import ThisInstallationOnly

    org = ThisInstallationOnly("T0ONE", "E0ORG", enterprise_install=True)
    assert not org.foreign("T0TWO", "E0ORG")  # another workspace of the same org
    assert org.foreign("T0ONE", "E0OTHER")
    assert org.foreign("T0NOTGRID", None)  # a workspace outside any Grid org that installed the same app
    assert not org.foreign(None, None)
    workspace = ThisInstallationOnly("T0ONE", None, enterprise_install=False)
    assert not workspace.foreign("T0ONE", None)
    assert workspace.foreign("T0TWO", None)
    assert not workspace.foreign("T0ONE", "E0ORG")  # this workspace, since joined to an org
    assert not workspace.foreign(None, None)  # Slack's own requests name no team
    # Another Enterprise Grid org's org-wide install of the same app: its requests name its enterprise and no team.
    assert workspace.foreign(None, "E0OTHER")
    assert ThisInstallationOnly("T0ONE", "E0ORG", enterprise_install=False).foreign(None, "E0ORG")
