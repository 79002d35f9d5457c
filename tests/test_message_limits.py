"""Every message the bot builds fits Slack's Block Kit limits, for 1 recipient or 1,000, 1 problem or 1,000.

Checked by ``tests.blockkit`` (Slack's documented limits, and slack_sdk's own models), the same checks the strict
fake Slack applies to every post; the long lists are summarised, never cut in the middle of a name or an escape.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.delivery import RecipientDelivery
from bot.domain.errors import D7ValidationError
from bot.domain.models import (
    FiringAlert,
    Origin,
    RecipientStatus,
    SendRequest,
    SendResult,
    SendStatus,
    StatusReport,
    Surface,
    Via,
)
from bot.domain.phone import NumberDisplay, PhoneNumber
from bot.domain.sends import (
    Checked,
    NotSent,
    Outcome,
    PreparedSend,
    Refusal,
    RefusalKind,
    SendRecord,
    SendState,
    prepared,
)
from bot.slack import messages
from tests.blockkit import assert_valid_blocks

SIZES = [1, 50, 200, 1000]
WHEN = datetime(2026, 12, 1, 3, 12, tzinfo=UTC)


def numbers(n: int) -> tuple[PhoneNumber, ...]:
    return tuple(PhoneNumber(f"+1415555{i:04d}") for i in range(n))


def a_send(n: int, *, alert: bool = False, names: bool = True, text: str = "Disk full on db-1") -> PreparedSend:
    recipients = numbers(n)
    surface = Surface.ALERT if alert else Surface.COMMAND
    origin = Origin(surface, "T0TEAM", "U0ALICE", "C0OPS", thread_ts="1.2" if alert else None)
    request = SendRequest(
        via=Via.SMS,
        origin=origin,
        recipients=(),
        text=text,
        idempotency_key="k",
        alert=FiringAlert(rule="db alerts") if alert else None,
    )
    checked = Checked(
        rule="ops may page on-call",
        sender="ops-sms",
        originator="OpsAlert",
        recipients=recipients,
        text=text,
        names={p.e164: f"person-with-a-long-display-name-{i}" for i, p in enumerate(recipients)} if names else {},
        held=recipients[: n // 2] if alert else (),
        unreached=tuple(f"<@U{i:08d}> has no phone number in their Slack profile" for i in range(n)) if alert else (),
    )
    return prepared("send-1", request, checked, NumberDisplay.FULL)


def accepted() -> Outcome:
    return Outcome(result=SendResult("7f1c4f4e-1", SendStatus.ACCEPTED, WHEN))


def undelivered(send: PreparedSend) -> list[RecipientDelivery]:
    reason = "Absent subscriber: the handset was off for the whole validity period"
    return [RecipientDelivery(p.e164, "undelivered", reason) for p in send.recipients]


@pytest.mark.parametrize("n", SIZES)
def test_the_announcement_fits_and_summarises_the_recipients(n: int) -> None:
    send = a_send(n)
    text, blocks = messages.announcement(send)
    assert_valid_blocks(blocks)
    head = blocks[0]["text"]["text"]
    assert "+1 415-555-0000 (@person-with-a-long-display-name-0)" in head
    if n > 20:
        # "… and 190 more": every recipient is counted, whether or not they are named.
        shown = head.count("+1 415-555-")
        assert head.endswith(f" and {n - shown} more"), head[-80:]
    assert len(text) <= messages.TEXT_LIMIT


@pytest.mark.parametrize("n", SIZES)
def test_the_result_card_with_every_recipient_undelivered_fits_and_names_those_not_reached(n: int) -> None:
    send = a_send(n)
    statuses = undelivered(send)
    _, blocks = messages.outcome(send, accepted(), statuses)
    assert_valid_blocks(blocks)
    delivery = blocks[-1]["text"]["text"]
    if n == 1:
        assert delivery == (
            "*Delivery*\n+1 415-555-0000 (@person-with-a-long-display-name-0): :x: undelivered "
            "(Absent subscriber: the handset was off for the whole validity period)"
        )
    else:
        assert delivery.startswith(f"*Delivery* · {n} undelivered\n*Not reached:*\n")
        assert delivery.endswith(" more not reached")


def test_the_card_counts_by_status_when_the_detail_does_not_fit() -> None:
    send = a_send(200)
    statuses = [RecipientDelivery(p.e164, "delivered") for p in send.recipients[:150]]
    statuses.append(RecipientDelivery(send.recipients[150].e164, "failed", "Unknown subscriber"))
    _, blocks = messages.outcome(send, accepted(), statuses)
    assert_valid_blocks(blocks)
    delivery = blocks[-1]["text"]["text"]
    assert delivery == (
        "*Delivery* · 150 delivered · 1 failed · 49 no report yet\n*Not reached:*\n"
        "+1 415-555-0150 (@person-with-a-long-display-name-150): :x: failed (Unknown subscriber)"
    )


@pytest.mark.parametrize("n", SIZES)
def test_the_not_delivered_reply_fits(n: int) -> None:
    send = a_send(n)
    text = messages.undelivered(send, undelivered(send))
    assert_valid_blocks([messages.section(text)])
    assert text.startswith(":rotating_light: <@U0ALICE> your SMS was not delivered to +1 415-555-0000")
    assert n == 1 or text.endswith(" more.")


@pytest.mark.parametrize("n", SIZES)
def test_the_alert_reply_fits_with_its_held_and_unreached_phones(n: int) -> None:
    send = a_send(n, alert=True)
    _, blocks = messages.alert_outcome(send, accepted(), undelivered(send))
    assert_valid_blocks(blocks)
    _, blocks = messages.alert_outcome(send, Outcome(error=D7ValidationError("bad", http_status=422, errors=())))
    assert_valid_blocks(blocks)
    why = NotSent(SendState.BUNDLED, window=timedelta(hours=1), limit=5)
    _, blocks = messages.alert_not_sent(send, why)
    assert_valid_blocks(blocks)


def test_unreached_people_in_an_alert_thread_show_as_names_and_groups_do_not_notify() -> None:
    send = a_send(2, alert=True)
    _, blocks = messages.alert_outcome(send, accepted())
    notes = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert any("<@U00000000> has no phone number" in note for note in notes)
    refusal = Refusal(RefusalKind.INVALID, ("<!subteam^S0ONCALL> is empty", "<!channel> ping"))
    _, blocks = messages.refusal(refusal, alert=True)
    assert blocks[1]["text"]["text"] == "• the user group `S0ONCALL` is empty\n• &lt;!channel&gt; ping"


def test_what_people_typed_or_put_in_their_profile_never_becomes_a_live_mention() -> None:
    from bot.domain.errors import InvalidPhoneNumber

    typed = InvalidPhoneNumber("<@U0CEO> <!channel> <#C0SECRET>", "not a phone number")
    refusal = Refusal(RefusalKind.INVALID, (str(typed), "<@U0BOB> has no phone number in their Slack profile"))
    for alert in (False, True):
        text, blocks = messages.refusal(refusal, alert=alert)
        assert blocks[1]["text"]["text"] == (
            "• '‹@U0CEO› ‹!channel› ‹#C0SECRET›' is not a valid phone number: not a phone number\n"
            "• <@U0BOB> has no phone number in their Slack profile"
        )
        # The fallback text (notifications, and what is posted if Slack refuses the blocks) is as inert.
        assert "<!channel>" not in text
        assert "<@U0CEO>" not in text
        assert "<@U0BOB>" in text


@pytest.mark.parametrize("n", SIZES)
def test_a_refusal_with_many_problems_fits_and_counts_the_rest(n: int) -> None:
    problems = tuple(f"<@U{i:08d}> has no phone number in their Slack profile" for i in range(n))
    text, blocks = messages.refusal(Refusal(RefusalKind.INVALID, problems))
    assert_valid_blocks(blocks)
    lines = blocks[1]["text"]["text"].split("\n")
    assert lines[0] == "• <@U00000000> has no phone number in their Slack profile"
    if len(lines) < n:
        assert lines[-1] == f"• … and {n - len(lines) + 1} more problems"
    assert n < 60 or len(lines) < n  # 60 problems do not fit in one section: the rest are counted
    assert len(text) <= messages.TEXT_LIMIT


def test_a_denial_names_people_and_channels_as_slack_shows_them_and_escapes_the_rest() -> None:
    refusal = Refusal(
        RefusalKind.DENIED,
        ("<@U0BOB> is not allowed to send via SMS from <#C0RANDOM>", "'<!channel> & <https://x.io>' is not a number"),
    )
    _, blocks = messages.refusal(refusal)
    assert blocks[1]["text"]["text"] == (
        "• <@U0BOB> is not allowed to send via SMS from <#C0RANDOM>\n"
        "• '&lt;!channel&gt; &amp; &lt;https://x.io&gt;' is not a number"
    )


def test_an_overlong_pasted_problem_is_cut_without_breaking_an_escape() -> None:
    problems = ("'" + "<" * 5000 + "' is not a valid phone number",)
    _, blocks = messages.refusal(Refusal(RefusalKind.INVALID, problems))
    assert_valid_blocks(blocks)
    line = blocks[1]["text"]["text"]
    assert line.endswith("&lt;…")
    assert len(line) <= messages.PROBLEM_LIMIT + 2


@pytest.mark.parametrize("n", SIZES)
def test_a_status_report_for_many_recipients_fits(n: int) -> None:
    send = a_send(n)
    record = SendRecord(id="send-1", request=send.request, state=SendState.ACCEPTED, created_at=WHEN, deadline_at=WHEN)
    report = StatusReport(
        request_id="7f1c4f4e-1",
        via=Via.SMS,
        stage=None,
        recipients=[RecipientStatus(p.e164, "delivered", parts=1, country="US") for p in send.recipients],
    )
    _, blocks = messages.status_report(record, report, NumberDisplay.MASKED)
    assert_valid_blocks(blocks)


def test_fit_cuts_before_an_entity_or_an_escape() -> None:
    assert messages.fit("abc", 3) == "abc"
    assert messages.fit("ab <@U123> tail", 8) == "ab…"
    assert messages.fit("ab &amp; tail", 5) == "ab…"
    assert messages.listing(["a", "b", "c"], 100) == "a, b, c"
    assert messages.listing(["aaaa", "bbbb", "cccc"], 12) == "aaaa and 2 more"
