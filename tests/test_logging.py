"""What the bot writes to its log with ``LOG_LEVEL=DEBUG``: no message text, no phone number in any format, no
response_url, whatever the libraries underneath would log. The real app over loopback, logging configured as
``python -m bot`` configures it, its output read from stderr."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import logs
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import running_app, sign, slash_command

SMS = "/messages/v1/send"
TEXT = "zebracorn overheating"  # one word no log line would have for another reason
TYPED = "+14155550100"
PROFILE = "+1 (415) 555-0101"  # Bob's phone, as his Slack profile writes it
WRONG_SECRET = "not-the-signing-secret"


def phone_forms(e164: str) -> list[str]:
    """The ways a US number can show up in a log: E.164, national, url-encoded, spaced, dashed."""
    area, exchange, line = e164[2:5], e164[5:8], e164[8:]
    seps = ["", " ", "-", ".", "+", "%20", ") "]
    return [exchange + sep + line for sep in seps] + [area + exchange + line, f"{area}) {exchange}-{line}"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``logs.configure`` changes process-wide state; put it back for the tests that follow."""
    root = logging.getLogger()
    names = ["bot", *logs.THIRD_PARTY, *logs.QUIET]
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in names})
    yield
    handlers, level, levels = saved
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def test_phone_forms_cover_what_slack_and_urls_write() -> None:
    forms = phone_forms("+14155550100")

    for written in ("+14155550100", "4155550100", "%2B14155550100", "+1 415 555 0100", "(415) 555-0100"):
        assert any(form in written for form in forms), written
    assert not any(form in "+1 415 ••• 0100" for form in forms)  # the masked form the bot does write


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.usefixtures("restore_logging")
async def test_debug_logs_carry_no_message_text_phone_number_or_response_url(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    logs.configure("DEBUG", fmt)
    slack.add_user("U0BOB", "bob", PROFILE)
    async with running_app(slack, fake_d7, tmp_path) as app:
        response_url = slack.response_url("cmd")
        sent = await app.command("/sms", f"{TYPED} <@U0BOB|bob> {TEXT}", response_url=response_url)
        await app.settle()
        forged = slash_command("/sms", f"{TYPED} {TEXT}", response_url=response_url)
        refused = await app.post(forged, headers=sign(forged, secret=WRONG_SECRET))

    output = capsys.readouterr().err

    assert sent.status_code == 200
    assert refused.status_code == 401
    (body,) = fake_d7.bodies(SMS)
    assert body["messages"][0]["recipients"] == [TYPED, "+14155550101"]  # both numbers were really used
    assert body["messages"][0]["content"] == TEXT
    # The log is not empty: the bot's own DEBUG level is on, and Bolt's refusal is there, cut short.
    assert "d7 send via=sms" in output
    assert "Invalid request signature detected (signature: v0=" in output
    assert ", body: [redacted])" in output
    assert "sqlalchemy.engine" not in output  # SQLAlchemy echoes statements at INFO: held at WARNING
    leaks = [TEXT.split()[0], "/response/cmd", *phone_forms(TYPED), *phone_forms("+14155550101")]
    assert [leak for leak in leaks if leak in output] == []
    if fmt == "json":
        assert all(json.loads(line)["level"] for line in output.splitlines())


@pytest.mark.usefixtures("restore_logging")
def test_log_level_debug_holds_libraries_at_info_and_lets_the_bot_log_debug() -> None:
    logs.configure("DEBUG", "text")

    assert logging.getLogger("bot.sending").isEnabledFor(logging.DEBUG)
    held = [*logs.THIRD_PARTY, *logs.QUIET, "slack_sdk.web.async_base_client", "some.other.library"]
    assert [name for name in held if logging.getLogger(name).isEnabledFor(logging.DEBUG)] == []
    assert logging.getLogger("slack_sdk.web.async_base_client").isEnabledFor(logging.INFO)
    assert [name for name in logs.QUIET if logging.getLogger(name).isEnabledFor(logging.INFO)] == []
    assert logging.getLogger("sqlalchemy.engine.Engine").isEnabledFor(logging.WARNING)


@pytest.mark.usefixtures("restore_logging")
def test_log_level_warning_applies_to_libraries_too() -> None:
    logs.configure("WARNING", "text")

    assert not logging.getLogger("bot.sending").isEnabledFor(logging.INFO)
    assert not logging.getLogger("slack_bolt").isEnabledFor(logging.INFO)
    assert logging.getLogger("slack_bolt").isEnabledFor(logging.WARNING)


def test_bolts_invalid_signature_line_is_cut_before_the_body() -> None:
    record = logging.LogRecord(
        "slack_bolt.AsyncRequestVerification",
        logging.INFO,
        __file__,
        1,
        "Invalid request signature detected (signature: v0=abc, timestamp: 1700000000, body: text=%2B14155550100+hi)",
        None,
        None,
    )

    assert logs.RedactRequestBodies().filter(record) is True
    assert record.getMessage() == (
        "Invalid request signature detected (signature: v0=abc, timestamp: 1700000000, body: [redacted])"
    )
