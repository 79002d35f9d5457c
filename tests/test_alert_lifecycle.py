"""Alerts with a lifecycle, part one: resolved follow-ups. A post matching a rule's ``resolve`` that is about a
forwarded alert (its title without the firing/resolved words, a reply in its thread, or the alert's own post edited)
texts "RESOLVED: …" to exactly the phones that got the alert, once, in one segment. Grafana's and Alertmanager's
Slack formats, end to end."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from bot.domain.clock import utc_now
from bot.domain.errors import PolicyFileError
from bot.domain.models import Organisation, Person
from bot.domain.policy import parse_policy
from bot.domain.sends import SendRecord
from bot.storage.schema import alert_dedupe, sends
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import App, event_callback, running_app
from tests.test_cli import run

SMS = "/messages/v1/send"
PAYLOADS = Path(__file__).parent / "payloads" / "alerts"
ONCALL_DB = ["+14155550100", "+14155550101"]

POLICY = """
version: 1
defaults: {region: US}
senders:
  ops-sms: {via: sms, originator: OpsAlert}
contacts:
  oncall-db: ["+14155550100", "+14155550101"]
alerts:
  - name: prod critical
    slack_channels: [C0ALERTS]
    match: "(?i)\\\\b(critical|firing)\\\\b"
    from: bots
    sender: ops-sms
    to: ["group:oncall-db"]
    resolve: "(?i)\\\\bresolved\\\\b"
    ack_by: [reactions, replies]
  - name: on-call group
    slack_channels: [C0STORM]
    match: "(?i)firing"
    sender: ops-sms
    to: [S0ONCALL]
    max_per_phone: {count: 1, per: 1h}
    resolve: "(?i)resolved"
"""


def payload(name: str, **changes: Any) -> dict[str, Any]:
    message: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text())
    return message | changes


def grafana_resolved(ts: str = "1763800300.000100") -> dict[str, Any]:
    firing = payload("grafana")
    attachment = firing["attachments"][0] | {
        "fallback": "[RESOLVED] HighCPU db-1",
        "color": "#36A64F",
        "title": "[RESOLVED] HighCPU (db-1)",
        "text": "CPU at 21% on <https://grafana.example.com/d/abc|db-1>",
    }
    return firing | {"ts": ts, "attachments": [attachment]}


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    slack.add_channel("C0ALERTS", name="alerts")
    slack.add_channel("C0STORM", name="storm")
    slack.add_user("U0ANA", "ana", "+1 415 555 0110")
    slack.add_user("U0BEN", "ben", "+1 415 555 0111")
    slack.state.usergroups["S0ONCALL"] = ["U0ANA"]
    return slack


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path, policy=POLICY) as running:
        yield running


def texts(fake_d7: FakeD7) -> list[tuple[str, list[str]]]:
    return [(b["messages"][0]["content"], b["messages"][0]["recipients"]) for b in fake_d7.bodies(SMS)]


def replies(slack: FakeSlack, thread_ts: str) -> list[str]:
    return [c["text"] for c in slack.of("chat.postMessage") if c.get("thread_ts") == thread_ts]


async def post(app: App, message: dict[str, Any], channel: str = "C0ALERTS") -> None:
    assert (await app.event(event_callback(message, channel=channel))).status_code == 200
    await app.settle()


async def test_grafanas_resolved_post_texts_resolved_to_the_phones_that_got_the_alert(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await post(app, payload("grafana"))
    await post(app, grafana_resolved())

    (fired, resolved) = texts(fake_d7)
    assert fired[1] == ONCALL_DB
    assert resolved == ("RESOLVED: HighCPU (db-1)", ONCALL_DB)
    # The alert's own thread tells its whole life: texted, then resolved (with the exact text, request_id)…
    alert_thread = [p for p in slack.of("chat.postMessage") if p.get("thread_ts") == payload("grafana")["ts"]]
    assert [p["text"].split(" to ")[0] for p in alert_thread] == [
        ":white_check_mark: *Alert texted*",
        ":white_check_mark: *RESOLVED texted*",
    ]
    assert "RESOLVED: HighCPU (db-1)" in json.dumps(alert_thread[1]["blocks"])
    # …and the resolving post's thread says which alert it ended and where the outcome is.
    (pointer,) = [p for p in slack.of("chat.postMessage") if p.get("thread_ts") == "1763800300.000100"]
    assert pointer["text"] == (
        ":white_check_mark: *Resolves an alert* posted "
        "<!date^1763800000^{date_short_pretty} {time}|2025-11-22 08:26 UTC> in <#C0ALERTS>: RESOLVED goes to the "
        "phones it reached (+1 415 ••• 0100, +1 415 ••• 0101). The outcome is told in that alert's thread."
    )


async def test_alertmanagers_resolved_notice_ends_its_firing_alert_in_one_segment(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await post(app, payload("alertmanager"))
    await post(app, payload("resolved"))  # "[RESOLVED] InstanceDown (prod node-exporter)", still says `warning`

    resolved = texts(fake_d7)[-1]
    assert resolved == ("RESOLVED: InstanceDown (prod node-exporter)", ONCALL_DB)
    assert len(resolved[0]) <= 160


async def test_only_phones_that_got_the_alert_are_told_it_is_resolved(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    slack.add_user("U0CARL", "carl")  # no phone in his profile: not reached
    slack.state.usergroups["S0ONCALL"] = ["U0ANA", "U0BEN", "U0CARL"]
    firing = {"type": "message", "bot_id": "B0GRAFANA", "subtype": "bot_message"}
    await post(app, firing | {"text": "[FIRING:1] Disk full db-1", "ts": "1763800001.000100"}, "C0STORM")
    await post(app, firing | {"text": "[FIRING:1] Disk full db-2", "ts": "1763800002.000100"}, "C0STORM")
    await post(app, firing | {"text": "[RESOLVED] Disk full db-1", "ts": "1763800003.000100"}, "C0STORM")
    await post(app, firing | {"text": "[RESOLVED] Disk full db-2", "ts": "1763800004.000100"}, "C0STORM")

    assert texts(fake_d7) == [
        ("[FIRING:1] Disk full db-1", ["+14155550110", "+14155550111"]),  # db-2: both held (1 per hour)
        ("RESOLVED: Disk full db-1", ["+14155550110", "+14155550111"]),  # not carl, who was not reached
    ]
    (said,) = replies(slack, "1763800004.000100")
    assert "nobody was told" in said  # db-2 reached no phone: its resolution texts nobody


async def test_a_resolution_in_the_alerts_thread_and_an_edit_to_resolved_each_end_their_alert(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    first = payload("grafana")
    await post(app, first)
    reply = payload("resolved") | {"bot_id": "B0GRAFANA", "ts": "1763800010.000100", "thread_ts": first["ts"]}
    await post(app, reply)  # the tool answers in the alert's thread (a different title: the thread decides)
    second = payload("alertmanager", ts="1763800020.000100")
    await post(app, second)
    edited = {
        "type": "message",
        "subtype": "message_changed",
        "hidden": True,
        "ts": "1763800030.000100",
        "message": payload("resolved") | {"ts": second["ts"]},  # the firing post itself, now resolved
    }
    await post(app, edited)

    assert [t for t, _ in texts(fake_d7)] == [
        texts(fake_d7)[0][0],
        "RESOLVED: HighCPU (db-1)",
        texts(fake_d7)[2][0],
        "RESOLVED: InstanceDown (prod node-exporter)",
    ]


async def test_a_resolution_nothing_was_texted_for_says_so_and_a_second_one_texts_nothing(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await post(app, grafana_resolved("1763800100.000100"))  # nothing fired before
    (said,) = replies(slack, "1763800100.000100")
    assert "no alert texted by rule 'prod critical' matches this resolution, so nobody was told" in said

    await post(app, payload("grafana"))
    await post(app, grafana_resolved("1763800200.000100"))
    await post(app, grafana_resolved("1763800201.000100"))  # the tool says it again
    assert [t for t, _ in texts(fake_d7)].count("RESOLVED: HighCPU (db-1)") == 1
    (again,) = replies(slack, "1763800201.000100")
    assert "Not texted again" in again


# ---------------------------------------------------------------- acknowledgement


def reaction(user: str, emoji: str, ts: str, channel: str = "C0ALERTS") -> dict[str, Any]:
    return {
        "type": "reaction_added",
        "user": user,
        "reaction": emoji,
        "item": {"type": "message", "channel": channel, "ts": ts},
        "item_user": "U0GRAFANA",
        "event_ts": "1763800999.000100",
    }


async def expire_dedupe(app: App) -> None:
    """The dedupe window has passed (as time would have it)."""
    async with app.relay.storage.database.begin() as conn:
        await conn.execute(alert_dedupe.delete())


async def test_a_reaction_acknowledges_an_alert_and_its_repeats_are_not_texted_until_it_is_resolved(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    first = payload("grafana")
    await post(app, first)
    await post(app, reaction("U0ANA", "heart", first["ts"]))  # not an acknowledging reaction
    await post(app, reaction("U0ANA", "white_check_mark", first["ts"]))
    await post(app, reaction("U0BEN", "eyes", first["ts"]))  # acknowledged before: said once

    acks = [t for t in replies(slack, first["ts"]) if "Acknowledged" in t]
    assert acks == [":white_check_mark: *Acknowledged* by <@U0ANA>: no more texts for this alert until it is resolved."]

    await expire_dedupe(app)  # later than the dedupe window: a repeat would be texted, but ana has it
    repeat = payload("grafana", ts="1763801000.000100")
    await post(app, repeat)
    assert len(texts(fake_d7)) == 1
    (held,) = replies(slack, repeat["ts"])
    assert "<@U0ANA> acknowledged this alert" in held

    await post(app, grafana_resolved("1763801100.000100"))
    await expire_dedupe(app)
    await post(app, payload("grafana", ts="1763801200.000100"))  # resolved, then firing again: texted
    assert [t for t, _ in texts(fake_d7)][1:] == ["RESOLVED: HighCPU (db-1)", texts(fake_d7)[0][0]]


async def test_a_reaction_while_the_database_stalls_is_answered_in_time_and_its_note_posted_once(
    app: App, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write stalls 4 s (PostgreSQL dropping packets): the event is answered an error within Slack's 3 s, so
    Slack delivers it again; the write goes on and lands, the note follows it, and the redelivery finds the alert
    acknowledged (one note)."""
    first = payload("grafana")
    await post(app, first)
    log = app.relay.storage.sends
    acknowledge = log.acknowledge

    async def stalled(record: Any, user_id: str) -> Any:
        await asyncio.sleep(4)
        return await acknowledge(record, user_id)

    monkeypatch.setattr(log, "acknowledge", stalled)
    started = time.monotonic()
    first_try = await app.event(event_callback(reaction("U0ANA", "white_check_mark", first["ts"]), channel="C0ALERTS"))
    answered_in = time.monotonic() - started
    monkeypatch.setattr(log, "acknowledge", acknowledge)
    await app.settle()  # the write under way lands, and its note is posted
    await post(app, reaction("U0ANA", "white_check_mark", first["ts"]))  # Slack's redelivery

    assert answered_in < 3
    assert first_try.status_code >= 500  # Slack delivers it again
    acks = [t for t in replies(slack, first["ts"]) if "Acknowledged" in t]
    assert acks == [":white_check_mark: *Acknowledged* by <@U0ANA>: no more texts for this alert until it is resolved."]
    (record,) = [r for r in await log.audit() if r.request.idempotency_key.endswith(first["ts"])]
    assert record.acked_by == "U0ANA"


async def test_a_persons_reply_in_the_alerts_thread_acknowledges_it_and_a_bots_does_not(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    first = payload("grafana")
    await post(app, first)
    bot_reply = {
        "type": "message",
        "subtype": "bot_message",
        "bot_id": "B0OTHER",
        "text": "note",
        "thread_ts": first["ts"],
    }
    await post(app, bot_reply | {"ts": "1763800001.000200"})
    assert not [t for t in replies(slack, first["ts"]) if "Acknowledged" in t]
    await post(
        app, {"type": "message", "user": "U0BEN", "text": "on it", "ts": "1763800002.000200", "thread_ts": first["ts"]}
    )
    assert [t for t in replies(slack, first["ts"]) if "Acknowledged" in t] == [
        ":white_check_mark: *Acknowledged* by <@U0BEN>: no more texts for this alert until it is resolved."
    ]
    (record,) = [r for r in await app.relay.storage.sends.audit() if r.request.idempotency_key.endswith(first["ts"])]
    assert record.acked_by == "U0BEN"


# ---------------------------------------------------------------- escalation

ESCALATING = (
    POLICY
    + """  - name: escalating
    slack_channels: [C0PAGE]
    match: "(?i)critical"
    from: any
    sender: ops-sms
    to: ["+14155550100"]
    escalate:
      - {after: 5m, to: ["+14155550120"]}
      - {after: 15m, to: [S0LEADS]}
"""
)


async def make_due(app: App, key: str) -> None:
    """The escalation step under ``key`` is due now (as if its minutes had passed)."""
    async with app.relay.storage.database.begin() as conn:
        await conn.execute(sends.update().where(sends.c.idempotency_key == key).values(next_attempt_at=utc_now()))
    app.relay.outbox.wakeup.set()


async def escalations(app: App) -> list[Any]:
    return [r for r in await app.relay.storage.sends.audit() if r.request.origin.surface == "escalation"]


async def test_nobody_acknowledges_escalation_texts_each_step_and_an_acknowledgement_stops_the_rest(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.add_channel("C0PAGE", name="paging")
    slack.add_user("U0LEAD", "lead", "+1 415 555 0130")
    slack.state.usergroups["S0LEADS"] = ["U0LEAD"]
    alert = {"type": "message", "user": "U0BEN", "text": "CRITICAL: payments down", "ts": "1763800500.000100"}
    async with running_app(slack, fake_d7, tmp_path, policy=ESCALATING) as app:
        await post(app, alert, "C0PAGE")
        (fired,) = [r for r in await app.relay.storage.sends.audit() if r.request.origin.surface == "alert"]
        steps = await escalations(app)
        assert [r.state.value for r in steps] == ["pending", "pending"]
        async with app.relay.storage.database.connect() as conn:
            due = dict((await conn.execute(sa.select(sends.c.idempotency_key, sends.c.next_attempt_at))).all())
        assert [round((due[f"escalate:{fired.id}:{i}"] - fired.created_at).total_seconds()) for i in (0, 1)] == [
            300,
            900,
        ]

        await make_due(app, f"escalate:{fired.id}:0")
        await app.settle()
        await post(app, reaction("U0ANA", "eyes", alert["ts"], "C0PAGE"))
        await make_due(app, f"escalate:{fired.id}:1")
        await app.settle()

    assert texts(fake_d7) == [
        ("CRITICAL: payments down", ["+14155550100"]),
        ("ESCALATED, nobody acknowledged in 5m: CRITICAL: payments down", ["+14155550120"]),
    ]  # the leads (step 2) were not paged: ana had it by then
    thread = replies(slack, alert["ts"])
    assert any(t.startswith(":white_check_mark: *Escalation step 1 texted* to +1 415 ••• 0120") for t in thread)
    assert ":white_check_mark: *Escalation step 2 not sent:* <@U0ANA> acknowledged the alert." in thread


async def test_a_restart_in_the_middle_of_an_escalation_neither_repeats_nor_skips_a_step(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.add_channel("C0PAGE", name="paging")
    slack.add_user("U0LEAD", "lead", "+1 415 555 0130")
    slack.state.usergroups["S0LEADS"] = ["U0LEAD"]
    alert = {"type": "message", "user": "U0BEN", "text": "CRITICAL: payments down", "ts": "1763800600.000100"}
    async with running_app(slack, fake_d7, tmp_path, policy=ESCALATING) as app:
        await post(app, alert, "C0PAGE")
        (fired,) = [r for r in await app.relay.storage.sends.audit() if r.request.origin.surface == "alert"]
        await make_due(app, f"escalate:{fired.id}:0")
        await app.settle()
    async with running_app(slack, fake_d7, tmp_path, policy=ESCALATING) as app:  # the bot restarted
        await post(app, alert, "C0PAGE")  # Slack delivers the alert again: recorded before, nothing new
        await make_due(app, f"escalate:{fired.id}:1")
        await app.settle()
        steps = await escalations(app)

    assert [r.state.value for r in steps] == ["accepted", "accepted"]
    assert [r for _, r in texts(fake_d7)] == [["+14155550100"], ["+14155550120"], ["+14155550130"]]


# ---------------------------------------------------------------- quiet hours


def quiet_policy() -> str:
    """A rule whose quiet hours are now (an hour either side, whatever the time of the test)."""
    now = utc_now()
    start, end = (now - timedelta(hours=1)).strftime("%H:%M"), (now + timedelta(hours=1)).strftime("%H:%M")
    return (
        POLICY
        + f"""  - name: quiet
    slack_channels: [C0QUIET]
    match: "(?i)(warning|critical)"
    from: any
    sender: ops-sms
    to: ["group:oncall-db"]
    quiet_hours: {{from: "{start}", to: "{end}", tz: UTC, except: "(?i)critical"}}
"""
    )


async def test_quiet_hours_hold_a_warning_pass_a_critical_then_one_summary_per_phone(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.add_channel("C0QUIET", name="quiet")
    warning = {"type": "message", "user": "U0BEN", "text": "WARNING: disk 85% on db-3", "ts": "1763800700.000100"}
    critical = {"type": "message", "user": "U0BEN", "text": "CRITICAL: db-3 down", "ts": "1763800701.000100"}
    async with running_app(slack, fake_d7, tmp_path, policy=quiet_policy()) as app:
        await post(app, warning, "C0QUIET")
        await post(app, critical, "C0QUIET")
        assert texts(fake_d7) == [("CRITICAL: db-3 down", ONCALL_DB)]  # the critical one at once
        (held,) = replies(slack, warning["ts"])
        assert held.startswith(":crescent_moon: *Not texted now:* quiet hours of rule *quiet* until <!date^")
        summaries = [r for r in await app.relay.storage.sends.audit() if r.request.origin.surface == "summary"]
        assert sorted(r.request.recipients[0].value for r in summaries) == ONCALL_DB
        async with app.relay.storage.database.connect() as conn:
            due = (await conn.execute(sa.select(sends.c.next_attempt_at).where(sends.c.surface == "summary"))).scalars()
            assert {round((d - utc_now()).total_seconds() / 60) for d in due} <= {
                59,
                60,
            }  # at the quiet end (to the minute)
        async with app.relay.storage.database.begin() as conn:
            await conn.execute(sends.update().where(sends.c.surface == "summary").values(next_attempt_at=utc_now()))
        app.relay.outbox.wakeup.set()
        await app.settle()

    summary_texts = texts(fake_d7)[1:]
    assert sorted(r for _, r in summary_texts) == [[ONCALL_DB[0]], [ONCALL_DB[1]]]  # one text per phone
    for text, _ in summary_texts:
        assert text.startswith("+1 more alert in #quiet since ")
        assert text.endswith("WARNING: disk 85% on db-3")


@pytest.mark.parametrize(
    ("at", "quiet"),
    [
        (
            "2026-12-01T23:30",
            "at 2026-12-01 23:30 UTC it is HELD, in one summary text per phone at 2026-12-02 07:00 UTC",
        ),
        ("2026-12-01T12:00", "at 2026-12-01 12:00 UTC it is not quiet, texted at once"),
    ],
)
def test_explain_alert_says_what_of_the_lifecycle_applies_at_a_given_time(tmp_path: Path, at: str, quiet: str) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(
        POLICY
        + """    escalate: [{after: 5m, to: ["+14155550102"]}]
    quiet_hours: {from: "22:00", to: "07:00", tz: Europe/London, except: "(?i)\\\\bcritical\\\\b"}
"""
    )
    message = tmp_path / "m.json"
    message.write_text(
        json.dumps(
            payload("alertmanager")
            | {
                "attachments": [
                    payload("alertmanager")["attachments"][0]
                    | {"text": "disk 85%", "title": "[FIRING:1] Disk (db-3) firing"}
                ]
            }
        )
    )
    result = run("explain-alert", "--channel", "C0STORM", "--file", str(message), "--policy", str(policy), "--at", at)
    assert result.returncode == 0, result.stderr
    notes = [line.removeprefix("note: ") for line in result.stdout.splitlines() if line.startswith("note: ")]
    assert "a post matching /(?i)resolved/ about it texts RESOLVED to the phones that got it" in notes
    assert (
        "a reaction (:white_check_mark:, :eyes:) by a person of this workspace or a reply in its thread by one of its "
        "own people (in its or its escalation steps' user groups) acknowledges it"
    ) in notes
    assert f"quiet hours 22:00-07:00 Europe/London: {quiet}" in notes


async def test_a_firing_post_with_a_resolved_section_and_a_persons_resolved_reply_do_not_resolve(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    grouped = payload("grafana")
    grouped["attachments"] = [
        grouped["attachments"][0] | {"text": "**Firing**\nCPU 97% on db-1\n**Resolved**\nCPU on db-2"}
    ]
    await post(app, grouped)  # Grafana's group message: firing, with the recovered part listed
    person = {"type": "message", "user": "U0BEN", "text": "not resolved yet", "ts": "1763800040.000100"}
    await post(app, person | {"thread_ts": grouped["ts"]})

    assert [t for t, _ in texts(fake_d7)] == [texts(fake_d7)[0][0]]  # forwarded; nothing RESOLVED
    assert texts(fake_d7)[0][0].startswith("[FIRING:1] HighCPU (db-1)")
    assert any("Acknowledged* by <@U0BEN>" in t for t in replies(slack, grouped["ts"]))  # a person's reply: an ack


async def test_resolved_reaches_those_paged_by_the_escalation_and_an_ack_on_a_repeat_acks_the_alert(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.add_channel("C0PAGE", name="paging")
    slack.add_user("U0LEAD", "lead", "+1 415 555 0130")
    slack.state.usergroups["S0LEADS"] = ["U0LEAD"]
    policy = ESCALATING + '    resolve: "(?i)resolved"\n'
    alert = {"type": "message", "user": "U0BEN", "text": "CRITICAL: payments down", "ts": "1763800800.000100"}
    async with running_app(slack, fake_d7, tmp_path, policy=policy) as app:
        await post(app, alert, "C0PAGE")
        (fired,) = [r for r in await app.relay.storage.sends.audit() if r.request.origin.surface == "alert"]
        await make_due(app, f"escalate:{fired.id}:0")
        await app.settle()
        repeat = alert | {"ts": "1763800801.000100"}
        await post(app, repeat, "C0PAGE")  # the same alert again: not texted (a repeat)
        await post(app, reaction("U0ANA", "eyes", repeat["ts"], "C0PAGE"))  # acknowledged on the repeat
        await make_due(app, f"escalate:{fired.id}:1")
        await app.settle()
        resolved = {"type": "message", "subtype": "bot_message", "bot_id": "B0MONITOR", "text": "Resolved"}
        await post(app, resolved | {"ts": "1763800900.000100", "thread_ts": alert["ts"]}, "C0PAGE")  # in its thread
        records = {r.id: r for r in await app.relay.storage.sends.audit()}
        print(
            "DBG",
            replies(slack, "1763800900.000100"),
            [(r.request.origin.surface, r.state.value, r.refusal) for r in records.values()],
        )

    assert records[fired.id].acked_by == "U0ANA"
    assert texts(fake_d7) == [
        ("CRITICAL: payments down", ["+14155550100"]),
        ("ESCALATED, nobody acknowledged in 5m: CRITICAL: payments down", ["+14155550120"]),
        ("RESOLVED: payments down", ["+14155550100", "+14155550120"]),  # the step-1 lead too, not step 2
    ]


# ---------------------------------------------------------------- alerts answer to their own rule


async def reread(app: App, send_id: str) -> SendRecord:
    record = await app.relay.storage.sends.get(send_id)
    assert record is not None
    return record


SHARED = """
version: 1
defaults: {region: US}
senders:
  ops-sms: {via: sms, originator: OpsAlert}
alerts:
  - name: grafana only
    slack_channels: [C0SHARED]
    match: "(?i)firing"
    from: [B0GRAFANA]
    sender: ops-sms
    to: ["+14155550100"]
    resolve: "(?i)resolved"
    escalate: [{after: 5m, to: ["+14155550120"]}]
  - name: any bot
    slack_channels: [C0SHARED]
    match: "(?i)firing"
    sender: ops-sms
    to: ["+14155550101"]
    resolve: "(?i)resolved"
"""


async def test_another_integrations_resolution_texts_nobody_and_the_escalation_still_goes_out(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.add_channel("C0SHARED", name="shared")
    grafana = {"type": "message", "subtype": "bot_message", "bot_id": "B0GRAFANA"}
    spoof = {"type": "message", "subtype": "bot_message", "bot_id": "B0SPOOF"}  # any bot: rule "any bot" takes it
    firing = grafana | {"text": "[FIRING:1] HighCPU db-1", "ts": "1763801500.000100"}
    async with running_app(slack, fake_d7, tmp_path, policy=SHARED) as app:
        await post(app, firing, "C0SHARED")
        (fired,) = [r for r in await app.relay.storage.sends.audit() if r.request.origin.surface == "alert"]
        await post(app, spoof | {"text": "[RESOLVED] HighCPU db-1", "ts": "1763801501.000100"}, "C0SHARED")
        thread_spoof = {"text": "[RESOLVED] HighCPU db-1", "ts": "1763801502.000100", "thread_ts": firing["ts"]}
        await post(app, spoof | thread_spoof, "C0SHARED")  # in the alert's own thread
        assert len(fake_d7.bodies(SMS)) == 1  # the alert alone: no RESOLVED to grafana's on-call
        assert (await reread(app, fired.id)).resolved_at is None
        await make_due(app, f"escalate:{fired.id}:0")
        await app.settle()
        await post(app, grafana | {"text": "[RESOLVED] HighCPU db-1", "ts": "1763801600.000100"}, "C0SHARED")

    assert texts(fake_d7) == [
        ("[FIRING:1] HighCPU db-1", ["+14155550100"]),
        ("ESCALATED, nobody acknowledged in 5m: [FIRING:1] HighCPU db-1", ["+14155550120"]),
        ("RESOLVED: HighCPU db-1", ["+14155550100", "+14155550120"]),  # Grafana's own resolution still ends it
    ]
    nobody = "no alert texted by rule 'any bot' matches this resolution, so nobody was told"
    (top,) = replies(slack, "1763801501.000100")
    assert nobody in top
    thread = replies(slack, firing["ts"])
    assert any(nobody in t for t in thread)  # the spoof in the alert's thread is answered there
    assert any(t.startswith(":white_check_mark: *Escalation step 1 texted* to +1 415 ••• 0120") for t in thread)


def thread_reply(user: str, ts: str, thread_ts: str, text: str = "is anyone looking at this?") -> dict[str, Any]:
    return {"type": "message", "user": user, "text": text, "ts": ts, "thread_ts": thread_ts}


@pytest.mark.parametrize("replies_acknowledge", [False, True])
async def test_a_bystanders_reply_acknowledges_only_when_the_rule_lets_replies_acknowledge(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path, replies_acknowledge: bool
) -> None:
    slack.add_channel("C0PAGE", name="paging")
    slack.add_user("U0LEAD", "lead", "+1 415 555 0130")
    slack.state.usergroups["S0LEADS"] = ["U0LEAD"]
    policy = ESCALATING + ("    ack_by: [reactions, replies]\n" if replies_acknowledge else "")
    alert = {"type": "message", "user": "U0BEN", "text": "CRITICAL: payments down", "ts": "1763801700.000100"}
    async with running_app(slack, fake_d7, tmp_path, policy=policy) as app:
        await post(app, alert, "C0PAGE")
        (fired,) = [r for r in await app.relay.storage.sends.audit() if r.request.origin.surface == "alert"]
        await post(app, thread_reply("U0ANA", "1763801701.000100", alert["ts"]), "C0PAGE")  # in no group of it
        await make_due(app, f"escalate:{fired.id}:0")
        await app.settle()
        acked_by = (await reread(app, fired.id)).acked_by

    thread = replies(slack, alert["ts"])
    acks = [t for t in thread if "Acknowledged" in t]
    if replies_acknowledge:
        assert acked_by == "U0ANA"
        assert acks == [
            ":white_check_mark: *Acknowledged* by <@U0ANA>: no more texts for this alert until it is resolved."
        ]
        assert ":white_check_mark: *Escalation step 1 not sent:* <@U0ANA> acknowledged the alert." in thread
        assert texts(fake_d7) == [("CRITICAL: payments down", ["+14155550100"])]
    else:
        assert acked_by is None
        assert acks == []
        assert any(t.startswith(":white_check_mark: *Escalation step 1 texted* to +1 415 ••• 0120") for t in thread)
        assert texts(fake_d7) == [
            ("CRITICAL: payments down", ["+14155550100"]),
            ("ESCALATED, nobody acknowledged in 5m: CRITICAL: payments down", ["+14155550120"]),
        ]


async def test_a_reply_from_the_alerts_own_people_acknowledges_without_replies_in_ack_by(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    firing = {"type": "message", "bot_id": "B0GRAFANA", "subtype": "bot_message"}
    alert = firing | {"text": "[FIRING:1] Disk full db-9", "ts": "1763801800.000100"}
    await post(app, alert, "C0STORM")  # rule "on-call group": to S0ONCALL (ana), ack_by left as it is
    await post(app, thread_reply("U0BEN", "1763801801.000100", alert["ts"]), "C0STORM")
    assert not [t for t in replies(slack, alert["ts"]) if "Acknowledged" in t]  # ben is in no group of the alert
    await post(app, thread_reply("U0ANA", "1763801802.000100", alert["ts"], "mine"), "C0STORM")

    assert texts(fake_d7) == [("[FIRING:1] Disk full db-9", ["+14155550110"])]  # ana was texted
    assert [t for t in replies(slack, alert["ts"]) if "Acknowledged" in t] == [
        ":white_check_mark: *Acknowledged* by <@U0ANA>: no more texts for this alert until it is resolved."
    ]


async def test_a_reply_from_a_later_escalation_steps_people_acknowledges_and_stops_the_escalation(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.add_channel("C0PAGE", name="paging")
    slack.add_user("U0LEAD", "lead", "+1 415 555 0130")
    slack.state.usergroups["S0LEADS"] = ["U0LEAD"]  # escalation step 2 of rule "escalating"
    alert = {"type": "message", "user": "U0BEN", "text": "CRITICAL: payments down", "ts": "1763801900.000100"}
    async with running_app(slack, fake_d7, tmp_path, policy=ESCALATING) as app:
        await post(app, alert, "C0PAGE")
        (fired,) = [r for r in await app.relay.storage.sends.audit() if r.request.origin.surface == "alert"]
        await post(app, thread_reply("U0LEAD", "1763801901.000100", alert["ts"], "on it"), "C0PAGE")
        await make_due(app, f"escalate:{fired.id}:0")
        await app.settle()

    assert texts(fake_d7) == [("CRITICAL: payments down", ["+14155550100"])]
    thread = replies(slack, alert["ts"])
    assert ":white_check_mark: *Escalation step 1 not sent:* <@U0LEAD> acknowledged the alert." in thread


async def test_without_reactions_in_ack_by_a_reaction_does_not_acknowledge(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.add_channel("C0PAGE", name="paging")
    policy = ESCALATING + "    ack_by: [replies]\n"
    alert = {"type": "message", "user": "U0BEN", "text": "CRITICAL: payments down", "ts": "1763802000.000100"}
    async with running_app(slack, fake_d7, tmp_path, policy=policy) as app:
        await post(app, alert, "C0PAGE")
        await post(app, reaction("U0ANA", "white_check_mark", alert["ts"], "C0PAGE"))
        assert not [t for t in replies(slack, alert["ts"]) if "Acknowledged" in t]
        await post(app, thread_reply("U0ANA", "1763802001.000100", alert["ts"], "mine"), "C0PAGE")

    assert [t for t in replies(slack, alert["ts"]) if "Acknowledged" in t] == [
        ":white_check_mark: *Acknowledged* by <@U0ANA>: no more texts for this alert until it is resolved."
    ]


@pytest.mark.parametrize(
    "who",
    [
        {"team_id": "T0OTHER"},  # a person of another organisation, in a Slack Connect channel
        {"team_id": "T0OTHER", "enterprise_id": "E0OTHER"},  # ... of another Enterprise Grid org
        {"deleted": True},  # a deactivated account
        {"is_bot": True},  # a bot user (a bot's reply carries bot_id; its reaction does not)
    ],
    ids=["other-organisation", "other-grid-org", "deactivated", "bot-user"],
)
async def test_a_reaction_or_reply_from_someone_slack_does_not_vouch_for_does_not_acknowledge(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path, who: dict[str, Any]
) -> None:
    slack.add_channel("C0PAGE", name="paging")
    slack.add_user("U0EVE", "eve", "+1 415 555 0140", **who)
    policy = ESCALATING + "    ack_by: [reactions, replies]\n"  # even where any person's reply acknowledges
    alert = {"type": "message", "user": "U0BEN", "text": "CRITICAL: payments down", "ts": "1763802100.000100"}
    async with running_app(slack, fake_d7, tmp_path, policy=policy) as app:
        await post(app, alert, "C0PAGE")
        (fired,) = [r for r in await app.relay.storage.sends.audit() if r.request.origin.surface == "alert"]
        await post(app, reaction("U0EVE", "white_check_mark", alert["ts"], "C0PAGE"))
        reply = thread_reply("U0EVE", "1763802101.000100", alert["ts"], "got it")
        if "team_id" in who:  # as Slack sends a Slack Connect channel's messages
            reply |= {"user_team": who["team_id"], "source_team": who["team_id"]}
        await post(app, reply, "C0PAGE")
        await post(app, thread_reply("U0EVE", "1763802102.000100", alert["ts"], "mine"), "C0PAGE")
        await make_due(app, f"escalate:{fired.id}:0")
        await app.settle()
        acked_by = (await reread(app, fired.id)).acked_by

    assert acked_by is None
    thread = replies(slack, alert["ts"])
    assert not [t for t in thread if "Acknowledged" in t]
    assert any(t.startswith(":white_check_mark: *Escalation step 1 texted* to +1 415 ••• 0120") for t in thread)
    assert [r for _, r in texts(fake_d7)] == [["+14155550100"], ["+14155550120"]]


@pytest.mark.parametrize(
    ("person", "organisation", "ours"),
    [
        (Person("U1", "a", team_id="T0A"), Organisation("T0A"), True),
        (Person("U1", "a", team_id="T0B"), Organisation("T0A"), False),  # Slack Connect
        (Person("U1", "a"), Organisation("T0A"), False),  # Slack named no team: not vouched for
        (Person("U1", "a", team_id="T0B", enterprise_id="E0A"), Organisation("T0A", "E0A"), True),  # same Grid org
        (Person("U1", "a", team_id="T0B", enterprise_id="E0B"), Organisation("T0A", "E0A"), False),
        (Person("U1", "a", team_id="E0A", enterprise_id="E0A"), Organisation(None, "E0A"), True),  # org-wide install
        (Person("U1", "a", team_id="T0A", is_bot=True), Organisation("T0A"), False),
        (Person("U1", "a", team_id="T0A", deleted=True), Organisation("T0A"), False),
    ],
)
def test_who_is_a_person_of_this_organisation(person: Person, organisation: Organisation, ours: bool) -> None:
    assert organisation.includes(person) is ours


def test_check_refuses_an_unknown_way_to_acknowledge_naming_its_path(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError) as refused:
        parse_policy(yaml.safe_load(POLICY.replace("ack_by: [reactions, replies]", "ack_by: [reactions, replys]")))
    assert [str(p) for p in refused.value.problems] == [
        "alerts[0].ack_by[1]: unknown way to acknowledge 'replys': use reactions or replies"
    ]
