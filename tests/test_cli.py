"""The command line, run as people run it: ``python -m bot check`` and ``python -m bot explain``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "policy.example.yml")


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    return subprocess.run(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "bot", *args],
        env={**base, **(env or {})},
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_prints_summary(tmp_path: Path) -> None:
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "BOT_POLICY": EXAMPLE}

    result = run("check", env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "settings: OK"
    assert "D7: DRY RUN: D7_API_TOKEN is not set, nothing will be sent" in lines
    assert "D7 answers journal: bot.db.d7-journal (kept there while the database does not take them)" in lines
    assert "  ops-sms: SMS as OpsAlert" in lines
    assert "  support-wa: WhatsApp as +971501234567; templates ticket_update, page" in lines
    assert "rules (2):" in lines
    assert "alert rules (2):" in lines
    assert lines[-1].endswith("; sender support-wa; to group:oncall-db; dedupe 10m; WhatsApp template page")
    assert "; templates ticket_update; budgets 100 messages per 1d per user" in lines[lines.index("rules (2):") + 2]
    assert lines[-2] == (
        r"  1. prod critical: channels C0ALERTS; from bots; match (?i)\b(critical|firing)\b; sender ops-sms; "
        "to group:oncall-db; dedupe 10m; at most 5 per phone per 1h; budget 100 messages per 1h; "
        r"resolved by (?i)\bresolved\b"
    )
    assert "workspace budgets: 200 messages per 1d per user, 5000 messages per 1d for the workspace" in lines
    assert lines[lines.index("rules (2):") + 1].endswith(
        "; budgets 50 messages per 1h per user, 500 messages per 1d per channel"
    )


ALERTS = Path(__file__).parent / "payloads" / "alerts"


def test_explain_alert_prints_the_rule_and_the_exact_text(tmp_path: Path) -> None:
    result = run(
        "explain-alert",
        "--channel",
        "C0ALERTS",
        "--channel-name",
        "alerts",
        "--file",
        str(ALERTS / "grafana.json"),
        env={"BOT_POLICY": EXAMPLE},
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "message in C0ALERTS from B0GRAFANA (a bot)",
        "  rule 'prod critical': matches",
        "FORWARDED by rule 'prod critical': SMS as OpsAlert (ops-sms)",
        "to: group:oncall-db (user groups: each member's profile phone, read at send time)",
    ]
    assert lines[4] == "text (GSM-7, 1 of at most 1 part(s), 116 chars):"
    assert lines[5:9] == [
        "  | [FIRING:1] HighCPU (db-1)",
        "  | CPU at 97% on db-1 (https://grafana.example.com/d/abc) for 5m",
        "  | severity: critical",
        "  | env: prod",
    ]
    assert "note: repeats within 10m are not texted again; at most 5 texts per phone per 1h, " in result.stdout


def test_explain_alert_says_why_nothing_matches(tmp_path: Path) -> None:
    event = json.loads((ALERTS / "resolved.json").read_text().replace("[RESOLVED]", "[OK]"))
    body = {"type": "event_callback", "event": event}
    file = tmp_path / "event.json"
    file.write_text(json.dumps(body))

    result = run("explain-alert", "--channel", "C0ALERTS", "--file", str(file), env={"BOT_POLICY": EXAMPLE})

    assert result.returncode == 1
    assert "rule 'prod critical': its match /(?i)\\b(critical|firing)\\b/ does not match" in result.stdout
    assert "NOT FORWARDED: no alert rule takes this message" in result.stdout
    assert "  | [OK] InstanceDown (prod node-exporter)" in result.stdout


def test_explain_alert_recognises_a_resolving_post(tmp_path: Path) -> None:
    file = tmp_path / "event.json"
    file.write_text((ALERTS / "resolved.json").read_text())

    result = run("explain-alert", "--channel", "C0ALERTS", "--file", str(file), env={"BOT_POLICY": EXAMPLE})

    assert result.returncode == 0
    assert (
        "RESOLUTION for rule 'prod critical': texts \"RESOLVED: InstanceDown (prod node-exporter)\" to the phones"
        in result.stdout
    )


def test_explain_alert_reads_a_webhook_body_pasted_on_standard_input(tmp_path: Path) -> None:
    # What a tool sends to an incoming webhook: no event around it, no author (Slack posts it as a bot).
    event = json.loads((ALERTS / "grafana.json").read_text())
    webhook = {k: event[k] for k in ("text", "attachments", "username")}

    result = run(
        "explain-alert", "--channel", "C0ALERTS", env={"BOT_POLICY": EXAMPLE}, cwd=tmp_path, stdin=json.dumps(webhook)
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (
        lines[0]
        == "message in C0ALERTS from B0WEBHOOK (a bot: the message does not say who posts it, --from B… or U… to say)"
    )
    assert lines[2] == "FORWARDED by rule 'prod critical': SMS as OpsAlert (ops-sms)"
    assert "  | [FIRING:1] HighCPU (db-1)" in lines


def test_explain_alert_takes_the_author_it_is_told_and_a_conversations_history_answer(tmp_path: Path) -> None:
    history = {"ok": True, "messages": [json.loads((ALERTS / "grafana.json").read_text())], "has_more": False}

    result = run(
        "explain-alert",
        "--channel",
        "C0ALERTS",
        "--from",
        "U0ANA",
        env={"BOT_POLICY": EXAMPLE},
        cwd=tmp_path,
        stdin=json.dumps(history),
    )

    assert result.returncode == 1  # the rule takes bots' posts only
    assert result.stdout.splitlines()[:2] == [
        "message in C0ALERTS from U0ANA (a person)",
        "  rule 'prod critical': it takes posts from bots only (from: bots) and a person posted this",
    ]


def test_explain_alert_rejects_a_file_that_is_not_a_message(tmp_path: Path) -> None:
    file = tmp_path / "x.json"
    file.write_text("[1, 2]")

    result = run("explain-alert", "--channel", "C0ALERTS", "--file", str(file), env={"BOT_POLICY": EXAMPLE})

    assert result.returncode == 2
    assert "error: --file: not a Slack message" in result.stderr


def test_check_lists_every_settings_problem_without_traceback(tmp_path: Path) -> None:
    result = run("check", env={"PORT": "x"}, cwd=tmp_path)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "error: configuration error (3 problem(s)):\n"
        "  - SLACK_BOT_TOKEN: is required\n"
        "  - SLACK_SIGNING_SECRET: is required in HTTP mode (or set SLACK_APP_TOKEN for Socket Mode)\n"
        "  - PORT: Input should be a valid integer, unable to parse string as an integer\n"
    )


def test_check_warns_about_a_prefix_spanning_countries_and_shows_admins(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yml"
    text = Path(EXAMPLE).read_text().replace('"region:US"', '"+1*"').replace("admins: []", "admins: [U0BOSS, S0ADMINS]")
    policy.write_text(text.replace("  # admin_channel: C0OPSADMIN", "  admin_channel: C0OPSADMIN"))
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "BOT_POLICY": str(policy)}

    result = run("check", env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "admins: U0BOSS, S0ADMINS" in lines
    assert "admin channel: C0OPSADMIN; D7 balance: no low-balance warning" in lines
    assert lines[-1] == (
        "warning: rules[0].recipients[0]: '+1*' spans 25 countries and territories (AG, AI, AS, BB, BM, BS, CA, DM, "
        "DO, GD, GU, JM, KN, KY, LC, MP, MS, PR, SX, TC, TT, US, VC, VG, VI); name the ones you mean, like region:US"
    )


def test_check_names_the_policy_file_and_path(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yml"
    bad.write_text(Path(EXAMPLE).read_text().replace("senders: [ops-sms]", "senders: [ops-sm]"))

    result = run("check", env={"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}, cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr == "error: policy.yml: rules[0].senders[0]: unknown sender 'ops-sm'\n"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "out"),
    [
        (
            ["--user", "U1", "--channel", "C0OPS", "--via", "sms", "--to", "+14155550100,group:oncall-db"],
            0,
            "SMS from U1 in C0OPS to +1 415 ••• 0100, +1 415 ••• 0101\n"
            "ALLOWED by rule 'ops may page on-call', sender 'ops-sms'\n"
            "budgets (billed messages: recipients x SMS segments):\n"
            "  the user's budget in rule 'ops may page on-call': 50 messages per 1h; nothing used\n"
            "  the budget of C0OPS in rule 'ops may page on-call': 500 messages per 1d; nothing used\n"
            "  the user's workspace-wide budget: 200 messages per 1d; nothing used\n"
            "  the workspace's budget: 5000 messages per 1d; nothing used\n",
        ),
        (
            ["--user", "U1", "--channel", "C0OPS", "--via", "sms", "--to", "+442079460000"],
            1,
            "SMS from U1 in C0OPS to +44 20 ••• 0000\n"
            "DENIED: +44 20 ••• 0000 is outside the numbers rule 'ops may page on-call' allows\n"
            "(closest rule: 'ops may page on-call', failed on recipient)\n",
        ),
        (
            ["--user", "U1", "--channel", "C0OPS", "--via", "sms", "--to", "+19005550123"],
            1,
            "SMS from U1 in C0OPS to +1 900 ••• 0123\n"
            "DENIED: +1 900 ••• 0123 is a premium-rate number; rule 'ops may page on-call' does not allow "
            "premium-rate numbers (allow_number_types: [premium_rate])\n"
            "(closest rule: 'ops may page on-call', failed on recipient)\n",
        ),
        (
            ["--user", "U1", "--channel", "C0OPS", "--via", "sms", "--to", "+18765550123"],
            1,
            "SMS from U1 in C0OPS to +1 876 ••• 0123\n"
            "DENIED: +1 876 ••• 0123 is outside the numbers rule 'ops may page on-call' allows\n"
            "(closest rule: 'ops may page on-call', failed on recipient)\n",
        ),
        (
            ["--user", "U7", "--channel", "C0SUPPORT", "--via", "whatsapp", "--to", "+971501234568"],
            1,
            "WhatsApp from U7 in C0SUPPORT to +971 50 ••• 4568\n"
            "DENIED: U7 is not allowed to send via WhatsApp from C0SUPPORT\n"
            "(closest rule: 'support agents on WhatsApp', failed on user)\n",
        ),
        (
            [
                "--user",
                "U7",
                "--channel",
                "C0SUPPORT",
                "--via",
                "whatsapp",
                "--to",
                "+971501234568",
                "--groups",
                "S0SUPPORT",
            ],
            0,
            "WhatsApp from U7 in C0SUPPORT to +971 50 ••• 4568\n"
            "ALLOWED by rule 'support agents on WhatsApp', sender 'support-wa'\n"
            "budgets (billed messages: one per recipient):\n"
            "  the user's budget in rule 'support agents on WhatsApp': 100 messages per 1d; nothing used\n"
            "  the user's workspace-wide budget: 200 messages per 1d; nothing used\n"
            "  the workspace's budget: 5000 messages per 1d; nothing used\n",
        ),
    ],
)
def test_explain(tmp_path: Path, args: list[str], code: int, out: str) -> None:
    result = run("explain", *args, env={"BOT_POLICY": EXAMPLE}, cwd=tmp_path)

    assert (result.returncode, result.stdout, result.stderr) == (code, out, "")


def test_explain_invalid_number_is_named(tmp_path: Path) -> None:
    result = run("explain", "--user", "U1", "--channel", "C1", "--via", "sms", "--to", "+1 555", "--policy", EXAMPLE)

    assert result.returncode == 2
    assert result.stderr == "error: --to: '+1 555' is not a valid phone number: too short\n"
