"""Alert forwarding end to end: message events signed as Slack signs them, the real app, fake Slack and fake D7.

Each test asserts on what D7 received (the exact SMS text and numbers) and on what the alert's thread shows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.audit import render
from bot.domain.sends import SendState
from bot.storage.schema import sends
from tests.fakes.d7 import FakeD7, Reply
from tests.fakes.slack import BOT_USER_ID, FakeSlack
from tests.harness import App, event_callback, running_app

SMS = "/messages/v1/send"
PAYLOADS = Path(__file__).parent / "payloads" / "alerts"

ALERT_POLICY = """
version: 1
defaults: {region: US, max_segments: 3, show_numbers: masked}
senders:
  ops-sms: {via: sms, originator: OpsAlert}
contacts:
  oncall-db: ["+14155550100", "+14155550101"]
alerts:
  - name: prod critical
    slack_channels: [C0ALERTS]
    match: "(?i)\\\\b(critical|firing|triggered)\\\\b"
    from: bots
    sender: ops-sms
    to: ["group:oncall-db"]
    dedupe_window: 10m
  - name: people may page
    slack_channels: [C0PAGE]
    match: "(?i)page"
    from: any
    sender: ops-sms
    to: ["+14155550199"]
    template: "{channel}: {title} {link}"
  - name: storm
    slack_channels: [C0STORM]
    match: "(?i)firing"
    from: [B0GRAFANA]
    sender: ops-sms
    to: [S0ONCALL]
    max_per_phone: {count: 5, per: 1h}
  - name: threads too
    slack_channels: [C0THREADS]
    match: "(?i)critical"
    sender: ops-sms
    to: ["+14155550199"]
    thread_replies: true
"""


def payload(name: str, **changes: Any) -> dict[str, Any]:
    message: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text())
    return message | changes


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    for channel, name in (("C0ALERTS", "alerts"), ("C0PAGE", "paging"), ("C0STORM", "storm"), ("C0THREADS", "t")):
        slack.add_channel(channel, name=name)
    slack.add_user("U0ANA", "ana", "+1 415 555 0110")
    slack.add_user("U0BEN", "ben", "+1 415 555 0111")
    slack.add_user("U0NOPHONE", "carl")
    slack.add_user("U0BOB", "bob", "+1 415 555 0112")
    slack.state.usergroups["S0ONCALL"] = ["U0ANA", "U0BEN"]
    return slack


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path, policy=ALERT_POLICY) as running:
        yield running


def texts(fake_d7: FakeD7) -> list[tuple[str, list[str]]]:
    """(content, recipients) of every SMS D7 received, in order."""
    out = []
    for body in fake_d7.bodies(SMS):
        (message,) = body["messages"]
        out.append((message["content"], message["recipients"]))
    return out


def replies(slack: FakeSlack, thread_ts: str) -> list[str]:
    """Texts the bot posted in one thread."""
    return [c["text"] for c in slack.of("chat.postMessage") if c.get("thread_ts") == thread_ts]


ONCALL_DB = ["+14155550100", "+14155550101"]


@pytest.mark.parametrize(
    ("fixture", "sms"),
    [
        (
            "grafana",
            "[FIRING:1] HighCPU (db-1)\nCPU at 97% on db-1 (https://grafana.example.com/d/abc) for 5m\n"
            "severity: critical\nenv: prod",
        ),
        (
            "alertmanager",  # longer than one part: cut at a word, with a GSM-7 ellipsis
            "[FIRING:2] InstanceDown (prod node-exporter)\nAlert: Instance api-3:9100 down - critical\n"
            "Description: api-3:9100 has been down for more than 5 minutes...",
        ),
        (
            "datadog",  # blocks; the header is not repeated by the `text` fallback; "·" made GSM-7
            "Triggered: Disk full on db-2\nDisk usage is 98% @here\nHost: db-2\n"
            "Monitor: #42 (https://app.datadoghq.com/monitors/42)\nDatadog - prod",
        ),
        (
            "plain",  # the em dash would have made it UCS-2
            "CRITICAL: nightly backup of orders-db failed (exit 2) - see job 881 (https://ci.example.com/jobs/881)",
        ),
    ],
)
async def test_each_tools_alert_is_texted_exactly(
    app: App, slack: FakeSlack, fake_d7: FakeD7, fixture: str, sms: str
) -> None:
    message = payload(fixture)

    response = await app.event(event_callback(message))
    await app.settle()

    assert response.status_code == 200
    assert texts(fake_d7) == [(sms, ONCALL_DB)]
    body = fake_d7.bodies(SMS)[0]
    assert body["message_globals"] == {"originator": "OpsAlert"}
    assert body["messages"][0]["data_coding"] == "text"  # GSM-7: one part, not UCS-2's 70 characters
    assert len(sms) <= 160  # the rule's default budget: one part
    (reply,) = slack.of("chat.postMessage")
    assert reply["thread_ts"] == message["ts"]
    assert reply["channel"] == "C0ALERTS"
    assert "Alert texted" in reply["text"]
    assert "+1 415 ••• 0100" in reply["text"]
    blocks = json.loads(reply["blocks"]) if isinstance(reply["blocks"], str) else reply["blocks"]
    assert blocks[1]["elements"][0]["elements"][0]["text"] == sms  # the exact text, shown literally
    (record,) = await app.relay.storage.sends.audit()
    assert record.state is SendState.ACCEPTED
    assert record.request_id is not None
    assert record.request_id in reply["text"]


async def test_a_resolved_notice_does_not_match_and_is_acked_quietly(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    response = await app.event(event_callback(payload("resolved")))
    await app.settle()

    assert response.status_code == 200
    assert texts(fake_d7) == []
    assert slack.of("chat.postMessage") == []
    assert await app.relay.storage.sends.audit() == []


async def test_the_same_alert_twice_in_the_window_is_texted_once(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    first = payload("grafana")
    # Repeats differ in counts, values and times; what they are about (HighCPU on db-1) is the same.
    again = payload("grafana", ts="1763800060.000100")
    again["attachments"] = [
        {
            **first["attachments"][0],
            "title": "[FIRING:2] HighCPU (db-1)",
            "text": "CPU at 99% on <https://grafana.example.com/d/abc|db-1> for 6m",
        }
    ]
    other_host = payload("grafana", ts="1763800070.000100")
    other_host["attachments"] = [{**first["attachments"][0], "title": "[FIRING:1] HighCPU (db-2)"}]

    await app.event(event_callback(first))
    await app.settle()
    await app.event(event_callback(again))
    await app.settle()
    await app.event(event_callback(other_host))
    await app.settle()

    assert [t for t, _ in texts(fake_d7)] == [
        "[FIRING:1] HighCPU (db-1)\nCPU at 97% on db-1 (https://grafana.example.com/d/abc) for 5m\n"
        "severity: critical\nenv: prod",
        "[FIRING:1] HighCPU (db-2)\nCPU at 97% on db-1 (https://grafana.example.com/d/abc) for 5m\n"
        "severity: critical\nenv: prod",
    ]
    (said,) = replies(slack, again["ts"])
    assert "Not texted again" in said
    assert "10m" in said
    states = {r.request.origin.thread_ts: r.state for r in await app.relay.storage.sends.audit()}
    assert states == {
        first["ts"]: SendState.ACCEPTED,
        again["ts"]: SendState.DEDUPLICATED,
        other_host["ts"]: SendState.ACCEPTED,
    }


async def test_an_event_retried_by_slack_three_times_texts_once(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    body = event_callback(payload("plain"), event_id="Ev0RETRIED")

    statuses = [(await app.event(body, retry=n)).status_code for n in range(4)]
    # The same message delivered again under another event id (a second subscription) is the same alert too.
    statuses.append((await app.event(event_callback(payload("plain"), event_id="Ev0OTHER"))).status_code)
    await app.settle()

    assert statuses == [200] * 5
    assert len(texts(fake_d7)) == 1
    assert len(slack.of("chat.postMessage")) == 1
    assert len(await app.relay.storage.sends.audit()) == 1


async def test_the_bots_own_post_edits_deletions_and_thread_replies_are_ignored(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    critical = "CRITICAL: disk full"
    ignored = [
        {"type": "message", "user": BOT_USER_ID, "bot_id": "B0BOT", "text": critical, "ts": "1763800100.000001"},
        {"type": "message", "bot_id": "B0BOT", "subtype": "bot_message", "text": critical, "ts": "1763800100.000002"},
        {
            "type": "message",
            "subtype": "message_changed",
            "ts": "1763800100.000003",
            "message": {"type": "message", "bot_id": "B0CRON", "text": critical, "ts": "1763800000.000001"},
        },
        {"type": "message", "subtype": "message_deleted", "ts": "1763800100.000004", "deleted_ts": "1763800000.1"},
        {
            "type": "message",
            "bot_id": "B0CRON",
            "text": critical,
            "ts": "1763800100.000005",
            "thread_ts": "1763800000.000001",
        },
        {"type": "message", "user": "U0ANA", "text": critical, "ts": "1763800100.000006"},  # from: bots only
    ]
    for event in ignored:
        assert (await app.event(event_callback(event))).status_code == 200
    await app.settle()

    assert texts(fake_d7) == []
    assert slack.of("chat.postMessage") == []
    assert await app.relay.storage.sends.audit() == []


async def test_a_rule_may_opt_in_to_thread_replies_and_answers_in_that_thread(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    reply = {"type": "message", "bot_id": "B0CRON", "text": "still CRITICAL", "ts": "1763800200.2", "thread_ts": "1.1"}

    await app.event(event_callback(reply, channel="C0THREADS"))
    await app.settle()

    assert texts(fake_d7) == [("still CRITICAL", ["+14155550199"])]
    assert len(replies(slack, "1.1")) == 1


async def test_template_fields_title_channel_and_link(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    post = {
        "type": "message",
        "user": "U0BOB",
        "text": "please page someone: the “orders” queue is stuck",
        "ts": "1763800300.000100",
    }

    await app.event(event_callback(post, channel="C0PAGE"))
    await app.settle()

    # {channel} is the name from conversations.info, {link} the permalink; the curly quotes became GSM-7.
    link = "https://test.slack.com/archives/C0PAGE/p1763800300000100"
    assert texts(fake_d7) == [(f'#paging: please page someone: the "orders" queue is stuck {link}', ["+14155550199"])]
    assert slack.of("chat.getPermalink")[0]["message_ts"] == "1763800300.000100"


@pytest.mark.usefixtures("unpaced")
async def test_storm_is_capped_per_phone_and_every_alert_accounted_for(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    # About the per-phone cap, not Slack's pace: at about a post a second, 200 thread replies would take 200 s
    # (that pace has its own test in test_slack_faults.py).
    slack.relax_rates()
    words = [f"{a}{b}" for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghij"]
    for i in range(200):
        alert = payload("grafana", ts=f"1763801000.{i:06d}")
        alert["attachments"] = [{**alert["attachments"][0], "title": f"[FIRING:1] Check{words[i]} failed"}]
        assert (await app.event(event_callback(alert, channel="C0STORM"))).status_code == 200
    await app.settle()

    per_phone: dict[str, int] = {}
    for _, recipients in texts(fake_d7):
        for number in recipients:
            per_phone[number] = per_phone.get(number, 0) + 1
    assert per_phone == {"+14155550110": 5, "+14155550111": 5}

    records = await app.relay.storage.sends.audit()
    alerts = [r for r in records if r.request.origin.surface == "alert"]
    summaries = [r for r in records if r.request.origin.surface == "summary"]
    assert len(alerts) == 200
    assert sorted(r.state.value for r in alerts) == ["accepted"] * 5 + ["bundled"] * 195
    assert all(r.posted_at is not None for r in alerts)  # every alert's thread was told
    assert sorted(r.request.recipients[0].value for r in summaries) == ["+14155550110", "+14155550111"]
    assert all(r.state is SendState.PENDING for r in summaries)  # due at the end of the hour
    for summary in summaries:
        wait = (await _due_at(app, summary.id)) - summary.created_at
        assert 3590 < wait.total_seconds() <= 3600
    bundled = [r for r in alerts if r.state is SendState.BUNDLED]
    said = replies(slack, bundled[0].request.origin.thread_ts or "")
    assert len(said) == 1
    assert "Not texted now" in said[0]
    assert "5 alert texts" in said[0]
    assert len(slack.of("chat.postMessage")) == 200

    # The hour is over: each phone gets one summary of what it missed.
    await _make_due(app)
    await app.settle()
    summary_texts = texts(fake_d7)[5:]
    assert sorted(r for _, r in summary_texts) == [["+14155550110"], ["+14155550111"]]
    for text, _ in summary_texts:
        assert text.startswith("+195 more alerts in #storm since ")
        assert " UTC - latest: [FIRING:1] Check" in text
        assert len(text) <= 160
    done = [r for r in await app.relay.storage.sends.audit() if r.request.origin.surface == "summary"]
    assert [r.state for r in done] == [SendState.ACCEPTED, SendState.ACCEPTED]
    # Told in the thread of a held alert (the phone's first): what was texted instead of the held alerts.
    for summary in done:
        thread = summary.request.origin.thread_ts or ""
        assert thread in {r.request.origin.thread_ts for r in bundled}
        assert sum("Summary texted" in t for t in replies(slack, thread)) >= 1
    assert sum("Summary texted" in c["text"] for c in slack.of("chat.postMessage")) == 2

    exported = render(await app.relay.storage.sends.audit(), "json", full_numbers=False)
    details = [json.loads(line)["detail"] for line in exported.splitlines()]
    assert sum(d.startswith("alert of rule 'storm' · held for the summary: +1 415 ••• 0110") for d in details) == 195
    assert sum(d == "summary of rule 'storm'" for d in details) == 2


async def test_a_summary_reply_names_its_phone_sender_and_the_exact_text(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    # It used to be built from the unchecked record: "Summary texted to  as ** (``)".
    slack.state.usergroups["S0ONCALL"] = ["U0ANA"]
    for i in range(6):  # 5 texted, the 6th held for the summary
        alert = payload("grafana", ts=f"1763802000.{i:06d}")
        alert["attachments"] = [{**alert["attachments"][0], "title": f"[FIRING:1] Disk full on db-{i}"}]
        await app.event(event_callback(alert, channel="C0STORM"))
    await app.settle()
    await _make_due(app)
    await app.settle()

    summary_text, recipients = texts(fake_d7)[-1]
    assert recipients == ["+14155550110"]
    assert summary_text.startswith("+1 more alert in #storm since ")
    (summary,) = [r for r in await app.relay.storage.sends.audit() if r.request.origin.surface == "summary"]
    (reply,) = [c for c in slack.of("chat.postMessage") if "Summary texted" in c["text"]]
    assert reply["thread_ts"] == summary.request.origin.thread_ts
    assert reply["text"] == (
        f":white_check_mark: *Summary texted* to +1 415 ••• 0110 (@ana) as *OpsAlert* (`ops-sms`) · "
        f"request_id `{summary.request_id}`"
    )
    assert reply["blocks"][1]["elements"][0]["elements"][0]["text"] == summary_text  # the text as it went to D7


async def _due_at(app: App, send_id: str) -> Any:
    engine = app.relay.storage.database.engine
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(sends.c.next_attempt_at).where(sends.c.id == send_id))).scalar_one()


async def _make_due(app: App) -> None:
    """Move pending summaries to now, as if their hour had passed."""
    from bot.domain.clock import utc_now as now

    async with app.relay.storage.database.engine.begin() as conn:
        await conn.execute(
            sends.update().where(sends.c.surface == "summary").values(next_attempt_at=now(), deadline_at=now())
        )


async def test_a_recipient_without_a_phone_is_named_and_the_others_are_texted(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    slack.state.usergroups["S0ONCALL"] = ["U0ANA", "U0NOPHONE"]
    alert = payload("grafana")

    await app.event(event_callback(alert, channel="C0STORM"))
    await app.settle()

    assert [r for _, r in texts(fake_d7)] == [["+14155550110"]]
    (said,) = replies(slack, alert["ts"])
    assert "Alert texted" in said
    blocks = slack.of("chat.postMessage")[0]["blocks"]
    shown = json.dumps(blocks)
    assert "Not reached" in shown
    assert "@carl has no phone number in their Slack profile" in shown


async def test_a_d7_failure_is_told_in_the_thread_and_the_next_repeat_is_texted(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    fake_d7.enqueue(Reply(status=402, body={"detail": {"code": "INSUFFICIENT_CREDIT", "message": "no credit"}}))
    first, again = payload("plain"), payload("plain", ts="1763800009.000100")

    await app.event(event_callback(first))
    await app.settle()
    await app.event(event_callback(again))
    await app.settle()

    (failed,) = replies(slack, first["ts"])
    assert "Not sent" in failed
    assert "out of credit" in failed
    assert "Nobody was texted" in failed
    (sent,) = replies(slack, again["ts"])
    assert "Alert texted" in sent  # not "deduplicated": the first one never reached a phone
    assert len(fake_d7.bodies(SMS)) == 2


async def test_an_alert_text_not_delivered_says_who_was_not_reached(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    alert = payload("plain")
    await app.event(event_callback(alert))
    await app.settle()
    (record,) = await app.relay.storage.sends.audit()
    secret = await app.relay.storage.settings.get("d7_report_secret")
    report = {"request_id": record.request_id, "msg_id": "m1", "recipient": "+14155550101", "status": "undelivered"}

    response = await app.http.post(f"{app.url}/d7/reports/{secret}", data=report)
    await app.settle()

    assert response.status_code == 200
    said = replies(slack, alert["ts"])
    assert said[-1] == (
        ":rotating_light: *Not reached:* +1 415 ••• 0101: :x: undelivered. "
        "This alert did not get to them: page them another way."
    )
    (update,) = slack.of("chat.update")  # the alert's result message, with the status
    assert update["ts"] == (await app.relay.storage.sends.get(record.id)).result_ts  # type: ignore[union-attr]
    assert ":x: undelivered" in json.dumps(update["blocks"], ensure_ascii=False)


async def test_a_thread_broadcast_is_an_alert_post_like_any_and_its_result_goes_in_its_thread(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    """ "Also send to #channel": Slack posts a thread reply with subtype thread_broadcast; the channel sees it as a
    post, so the rule takes it (it skips only replies seen in their thread alone)."""
    parent = "1763800000.000001"
    broadcast = {
        "type": "message",
        "subtype": "thread_broadcast",
        "bot_id": "B0CRON",
        "text": "CRITICAL: replica lag on db-2",
        "ts": "1763800100.000007",
        "thread_ts": parent,
    }
    assert (await app.event(event_callback(broadcast))).status_code == 200
    await app.settle()

    assert texts(fake_d7) == [("CRITICAL: replica lag on db-2", ONCALL_DB)]
    assert [c["thread_ts"] for c in slack.of("chat.postMessage")] == [parent]


async def test_emoji_shortcodes_and_slacks_placeholder_never_reach_a_phone(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    """Sentry's attachment-only alert carries Slack's "[no preview available]" as its fallback; tools put
    :red_circle: before a title. Neither is the alert's words, and an emoji would make the SMS UCS-2."""
    alert = {
        "type": "message",
        "subtype": "bot_message",
        "bot_id": "B0SENTRY",
        "text": "",
        "ts": "1763800100.000008",
        "attachments": [
            {"fallback": "[no preview available]", "title": ":red_circle: CRITICAL: checkout errors :fire:"},
            {"fallback": "[no preview available]"},
        ],
    }
    assert (await app.event(event_callback(alert))).status_code == 200
    await app.settle()

    ((text, to),) = texts(fake_d7)
    assert (text, to) == ("CRITICAL: checkout errors", ONCALL_DB)
    (body,) = fake_d7.bodies(SMS)
    assert body["messages"][0]["data_coding"] == "text"  # GSM-7: nothing forced it to unicode
