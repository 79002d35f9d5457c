"""Flattening Slack messages (as monitoring tools post them) to plain text, and the senders a form may offer."""

from __future__ import annotations

import json
from pathlib import Path

from bot.domain.alerts import Fitted, fit, without_links
from bot.domain.models import Via
from bot.domain.policy import allowed_senders, parse_policy, why_nothing_allowed
from bot.slack.flatten import flatten, mentioned_users
from bot.slack.markup import to_plain_text
from bot.slack.reading import for_phone

PAYLOADS = Path(__file__).parent / "payloads"


def load(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((PAYLOADS / name).read_text())  # type: ignore[no-any-return]


def test_attachment_only_alert() -> None:
    message = load("grafana_attachment.json")

    assert mentioned_users(message) == {"U0BOB"}
    assert flatten(message, {"U0BOB": "bob"}) == (
        "[FIRING:1] HighCPU (db-1)\n"
        "CPU at 97% on db-1 (https://grafana.example.com/d/abc) for 5m. cc @bob\n"
        "severity: critical\n"
        "env: prod"
    )


def test_blocks_message_uses_blocks_not_the_fallback_text() -> None:
    message = load("datadog_blocks.json")

    assert mentioned_users(message) == {"U0ALICE"}
    assert flatten(message, {"U0ALICE": "alice"}) == (
        "Triggered: Disk full on db-2\n"
        "Disk usage is *98%* @here\n"
        "*Host:* db-2\n"
        "*Monitor:* #42 (https://app.datadoghq.com/monitors/42)\n"
        "Datadog · prod\n"
        "On call: @alice"
    )


def test_plain_text_and_fallback_only_attachment() -> None:
    assert flatten({"text": "deploy &lt;done&gt; by <@U1|carol>"}) == "deploy <done> by @carol"
    assert flatten({"text": "", "attachments": [{"fallback": "only fallback"}]}) == "only fallback"
    assert flatten({"text": "x <@U9>"}) == "x @U9"  # unknown names stay visible as IDs


POLICY = parse_policy(
    {
        "version": 1,
        "senders": {
            "ops-sms": {"via": "sms", "originator": "Ops"},
            "backup": {"via": "sms", "originator": "Backup"},
            "wa": {"via": "whatsapp", "originator": "+971501234567"},
        },
        "rules": [
            {"name": "ops", "slack_channels": ["C0OPS"], "users": ["*"], "senders": ["ops-sms"], "recipients": ["*"]},
            {
                "name": "leads",
                "slack_channels": ["*"],
                "users": ["S0LEADS"],
                "senders": ["backup", "wa"],
                "recipients": ["*"],
            },
        ],
    }
)


def test_allowed_senders() -> None:
    assert allowed_senders(POLICY, "U1", "C0OPS") == ["ops-sms"]
    assert allowed_senders(POLICY, "U1", "C0OPS", frozenset({"S0LEADS"})) == ["ops-sms", "backup", "wa"]
    assert allowed_senders(POLICY, "U1", "C0RANDOM") == []
    assert allowed_senders(POLICY, "U1", None, frozenset({"S0LEADS"})) == ["ops-sms", "backup", "wa"]
    assert allowed_senders(POLICY, "U1", None) == ["ops-sms"]


def test_why_nothing_allowed() -> None:
    only_ops = parse_policy({**POLICY.model_dump(by_alias=True), "rules": [POLICY.rules[0].model_dump()]})
    assert why_nothing_allowed(only_ops, "C0RANDOM", "<#C0RANDOM>") == "<#C0RANDOM> is not allowed to send texts"
    assert (
        why_nothing_allowed(POLICY, "C0RANDOM", "<#C0RANDOM>")
        == "no rule of the policy lets you send texts from <#C0RANDOM>"
    )


def test_shortcodes_go_only_where_they_are_emoji() -> None:
    from bot.slack.markup import without_shortcodes

    assert without_shortcodes(":rotating_light: [FIRING] disk :fire:").strip() == "[FIRING] disk"
    assert without_shortcodes("x :fire: y") == "x y"
    assert without_shortcodes(":fire::fire: hot").strip() == "hot"
    assert without_shortcodes(":warning:[FIRING] x") == "[FIRING] x"
    for kept in ("db-1:5432 up", "error:timeout:retry", "at 10:30:00", "ratio 3:1"):
        assert without_shortcodes(kept) == kept


def test_slacks_placeholder_is_not_content() -> None:
    message = {"text": "", "attachments": [{"fallback": "[no preview available]"}, {"text": "5000 events"}]}
    assert flatten(message) == "5000 events"


def test_an_attachments_blocks_are_read_and_its_fallback_only_when_they_say_nothing() -> None:
    # Sentry's metric alerts (src/sentry/integrations/slack/message_builder/incidents.py): the details in the
    # attachment's blocks, the mention in a rich text block of the attachment.
    message = {
        "text": "<https://sentry.example/alerts/1|*Critical: Too many errors*>",
        "attachments": [
            {
                "fallback": "[no preview available]",
                "color": "#FA4747",
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": "5000 events in the last 10 minutes"}},
                    {
                        "type": "rich_text",
                        "elements": [{"type": "rich_text_section", "elements": [{"type": "user", "user_id": "U0ANA"}]}],
                    },
                ],
            },
            {"fallback": "only a fallback", "blocks": [{"type": "divider"}]},
        ],
    }

    assert mentioned_users(message) == {"U0ANA"}
    assert flatten(message, {"U0ANA": "ana"}) == (
        "*Critical: Too many errors* (https://sentry.example/alerts/1)\n5000 events in the last 10 minutes\n@ana\n"
        "only a fallback"
    )


def test_slacks_date_tokens_become_a_date_and_a_utc_time() -> None:
    assert to_plain_text("<!date^1765000080^Started: {date_pretty} at {time} | Sentry Incident>") == (
        "Started: 2025-12-06 at 05:48 UTC"
    )
    assert to_plain_text("<!date^1765000080^{date_num} {time_secs}^https://x.example|x>") == "2025-12-06 05:48:00 UTC"
    assert to_plain_text("<!date^1765000080^{ago}|an hour ago>") == "an hour ago"  # a token it cannot fill
    assert to_plain_text("<!date^soon^{date}|some day>") == "some day"


def test_a_phone_reads_the_summary_first_each_line_once_and_labels_with_their_values() -> None:
    grafana = (
        "[FIRING:1] HighCPU (db-1)\nFiring\n\nValue: A=97\nLabels:\n- alertname = HighCPU\nAnnotations:\n"
        "- description = above 90% for 5m\n- runbook = https://r\n- summary = CPU on db-1 above 90%\nSource:"
    )
    assert for_phone(grafana) == (
        "[FIRING:1] HighCPU (db-1)\nCPU on db-1 above 90%\nabove 90% for 5m\nValue: A=97\nLabels:\n"
        "- alertname = HighCPU\nAnnotations:\n- runbook = https://r"
    )
    blocks = "T1 (https://x.example/1)\nT1\nStatus:\nTriggered\nMentions:"
    assert for_phone(blocks) == "T1 (https://x.example/1)\nStatus: Triggered"
    assert for_phone("Resolved\nFiring") == "Resolved"  # the title stays, whatever it says


def test_a_text_too_long_loses_its_links_addresses_before_its_words() -> None:
    body = (
        "Too many errors (https://sentry.example/"
        + "x" * 120
        + ")\n5000 events in the last 10 minutes\nhttps://a.example/b"
    )
    assert fit("{text}", {"text": body}, Via.SMS, 1) == Fitted(
        "Too many errors\n5000 events in the last 10 minutes", cut=True
    )
    short = "Disk full (https://d.example/1)"
    assert fit("{text}", {"text": short}, Via.SMS, 1) == Fitted(short, cut=False)  # kept when it fits
    assert (
        without_links("Source: https://g.example/a\nSilence:\n- ann = x (https://y.example)") == "Silence:\n- ann = x"
    )
