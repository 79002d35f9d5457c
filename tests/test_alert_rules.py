"""The pure part of alert forwarding: matching, fingerprints, GSM-7-safe text and fitting into a budget."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.domain.alerts import AlertFacts, Author, explain_match, fingerprint, fit, gsm_safe, match_alert, normalise
from bot.domain.encoding import Encoding, analyze
from bot.domain.errors import PolicyFileError
from bot.domain.models import Via
from bot.domain.policy import parse_policy
from bot.slack.markup import strip_mrkdwn

POLICY = {
    "version": 1,
    "senders": {"ops-sms": {"via": "sms", "originator": "OpsAlert"}},
    "alerts": [
        {
            "name": "bots",
            "slack_channels": ["C0A"],
            "match": "(?i)critical",
            "sender": "ops-sms",
            "to": ["+14155550100"],
        },
        {
            "name": "grafana only",
            "slack_channels": ["C0B"],
            "match": "FIRING",
            "from": ["B0GRAFANA"],
            "sender": "ops-sms",
            "to": ["+14155550100"],
        },
        {
            "name": "anyone",
            "slack_channels": ["C0A", "C0B"],
            "match": "(?i)page me",
            "from": "any",
            "sender": "ops-sms",
            "to": ["+14155550100"],
        },
    ],
}
BOT = Author(user_id=None, bot_id="B0CRON")
GRAFANA = Author(user_id=None, bot_id="B0GRAFANA")
PERSON = Author(user_id="U0ANA", bot_id=None)


@pytest.mark.parametrize(
    ("channel", "author", "text", "reply", "expected"),
    [
        ("C0A", BOT, "CRITICAL disk", False, "bots"),
        ("C0A", PERSON, "CRITICAL disk", False, None),  # from: bots
        ("C0A", PERSON, "please page me", False, "anyone"),
        ("C0A", BOT, "CRITICAL disk", True, None),  # thread replies are not forwarded by default
        ("C0B", BOT, "FIRING", False, None),  # not Grafana
        ("C0B", GRAFANA, "FIRING", False, "grafana only"),
        ("C0B", GRAFANA, "resolved, page me", False, "anyone"),  # first matching rule wins, in order
        ("C0C", BOT, "CRITICAL", False, None),  # no rule watches the channel
    ],
)
def test_first_matching_rule_wins(channel: str, author: Author, text: str, reply: bool, expected: str | None) -> None:
    rule = match_alert(parse_policy(POLICY), AlertFacts(channel, author, text, thread_reply=reply))
    assert (rule.name if rule else None) == expected


def test_explain_says_why_each_rule_before_the_match_did_not_take_it() -> None:
    lines = explain_match(parse_policy(POLICY), AlertFacts("C0B", PERSON, "FIRING, page me"))
    assert [(r.name, why) for r, why in lines] == [
        ("bots", "the channel C0B is not one of its slack_channels"),
        ("grafana only", "the author (U0ANA) is not in its from: list"),
        ("anyone", None),
    ]


def test_alert_rule_names_must_be_unique() -> None:
    data = {**POLICY, "alerts": [POLICY["alerts"][0], POLICY["alerts"][0]]}  # type: ignore[index]
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(data)
    assert "alerts[1].name: 'bots' is also the name of alerts[0]" in str(caught.value)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("[FIRING:1] HighCPU (db-1) 97% for 5m", "[FIRING:3] HighCPU (db-1) 99% for 6m", True),
        ("Disk full at 2026-11-22T03:12:00Z", "Disk full at 2026-11-22T04:40:13Z", True),
        ("Job failed at 03:12", "job  FAILED at 4:40 pm", True),
        ("HighCPU (db-1)", "HighCPU (db-2)", False),  # a number inside a name says which thing
        ("host10 down", "host11 down", False),
        ("eu-west-1 degraded", "eu-west-2 degraded", False),
        ("Disk full", "CPU high", False),
    ],
)
def test_fingerprint_ignores_numbers_and_times_but_not_names(a: str, b: str, same: bool) -> None:
    assert (fingerprint("r", a) == fingerprint("r", b)) is same


def test_fingerprint_depends_on_the_rule() -> None:
    assert fingerprint("a", "Disk full") != fingerprint("b", "Disk full")
    assert normalise("  Disk   FULL 98% ") == "disk full"


@pytest.mark.parametrize(
    ("fancy", "plain"),
    [
        ("it’s “down” — again…", 'it\'s "down" - again...'),
        ("a\u00a0b\u200bc", "a bc"),
        ("• one · two → three", "* one - two -> three"),
    ],
)
def test_gsm_safe_replacements(fancy: str, plain: str) -> None:
    assert gsm_safe(fancy) == plain
    assert analyze(plain).encoding is Encoding.GSM7


def test_one_curly_quote_does_not_double_the_cost() -> None:
    text = "Backup of “orders” failed on db-1, please check the job log and rerun it before the morning batch starts."
    assert analyze(text).encoding is Encoding.UCS2
    fitted = fit("{text}", {"text": text}, Via.SMS, 1)
    assert fitted.text == text.replace("“", '"').replace("”", '"')
    assert fitted.cut is False


@pytest.mark.parametrize("max_segments", [1, 2, 3])
def test_a_long_body_is_cut_at_a_word_with_an_ellipsis_to_fit(max_segments: int) -> None:
    body = " ".join(f"word{i}" for i in range(400))
    fitted = fit("ALERT {title}: {text}", {"text": body, "title": "db-1"}, Via.SMS, max_segments)
    info = analyze(fitted.text)
    assert fitted.cut
    assert info.segments == max_segments
    assert info.encoding is Encoding.GSM7
    assert fitted.text.startswith("ALERT db-1: word0 word1 ")
    assert fitted.text.endswith("...")
    assert fitted.text[:-3].split()[-1].startswith("word")  # a whole word before the ellipsis
    assert fitted.text[:-3] in f"ALERT db-1: {body}"


def test_a_cut_never_splits_an_emoji_sequence() -> None:
    family = "👨\u200d👩\u200d👧"
    body = (family + " ") * 40
    for budget in (1, 2):
        text = fit("{text}", {"text": body}, Via.SMS, budget).text
        assert text.endswith("…")  # UCS-2 already: the one-character ellipsis
        assert not text[:-1].rstrip().endswith("\u200d")
        assert text[:-1].rstrip().endswith("👧")
        assert analyze(text).segments <= budget


def test_whatsapp_is_limited_to_4096_characters() -> None:
    fitted = fit("{text}", {"text": "x" * 5000}, Via.WHATSAPP, 1)
    assert len(fitted.text) == 4096
    assert fitted.text.endswith("…")
    assert fit("{text}", {"text": "“hi”"}, Via.WHATSAPP, 1).text == "“hi”"  # no SMS replacements on WhatsApp


def test_a_template_longer_than_the_budget_is_cut_as_a_whole() -> None:
    fitted = fit("x" * 200 + " {text}", {"text": "body"}, Via.SMS, 1)
    assert len(fitted.text) == 160
    assert fitted.text.endswith("...")


def test_summary_template() -> None:
    from bot.domain.alerts import summary_template

    template = summary_template(14, ["#alerts"], datetime(2026, 11, 22, 3, 12, tzinfo=UTC))
    assert fit(template, {"text": "[FIRING:1] HighCPU"}, Via.SMS, 1).text == (
        "+14 more alerts in #alerts since 03:12 UTC - latest: [FIRING:1] HighCPU"
    )


@pytest.mark.parametrize(
    ("marked", "plain"),
    [
        ("*Alert:* Instance `api-3` down - `critical`", "Alert: Instance api-3 down - critical"),
        ("_italic_ and ~gone~ and *_both_*", "italic and gone and both"),
        ("node_exporter on a*b*c, 2*3*4", "node_exporter on a*b*c, 2*3*4"),
        ("  • *alertname:* `X`  \n```\nblock\n```", "• alertname: X\nblock"),
    ],
)
def test_strip_mrkdwn(marked: str, plain: str) -> None:
    assert strip_mrkdwn(marked) == plain
