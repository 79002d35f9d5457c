"""Delivery reports and status, end to end: sends carry report_url, D7's reports (posted here as D7 posts them)
update the result message in place, failures get their own thread reply, /sms status asks D7, and stale sends are
reconciled. The real app over loopback HTTP, fake Slack, fake D7, SQLite."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa

from bot.storage.schema import delivery_reports, recipient_statuses
from tests.fakes.d7 import FakeD7, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import App, running_app

SMS = "/messages/v1/send"
WHATSAPP = "/whatsapp/v2/send"
SECRET = "report-path-secret-0123456789abcdef"
PUBLIC = "https://relay.example.com"
REPORTS = f"/d7/reports/{SECRET}"


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    slack.add_user("U0ALICE", "alice", "+1 415 555 0100")
    slack.add_channel("C0SUPPORT")
    slack.state.usergroups["S0SUPPORT"] = ["U0ALICE"]
    return slack


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(
        slack, fake_d7, tmp_path, PUBLIC_URL=PUBLIC, D7_REPORT_SECRET=SECRET, D7_RECONCILE_AFTER="1s"
    ) as running:
        yield running


async def send_sms(app: App, text: str = "+14155550100 +14155550101 db down") -> tuple[str, str]:
    """Send through /sms; return (request_id, ts of the result message)."""
    assert (await app.command("/sms", text)).status_code == 200
    await app.settle()
    (record,) = [r for r in await app.relay.storage.sends.audit() if r.request.text in text]
    assert record.request_id is not None
    assert record.result_ts is not None
    return record.request_id, record.result_ts


async def post_form(app: App, fields: dict[str, str], path: str = REPORTS) -> httpx.Response:
    return await app.http.post(
        app.url + path, content=urlencode(fields), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )


async def post_json(app: App, body: Any, path: str = REPORTS) -> httpx.Response:
    return await app.http.post(app.url + path, content=json.dumps(body), headers={"Content-Type": "application/json"})


def sms_report(request_id: str, recipient: str, status: str, msg_id: str = "m-1") -> dict[str, str]:
    return {
        "request_id": request_id,
        "msg_id": msg_id,
        "recipient": recipient,
        "originator": "OpsAlert",
        "status": status,
    }


def delivery_section(update: dict[str, Any]) -> str:
    blocks = update["blocks"] if isinstance(update["blocks"], list) else json.loads(update["blocks"])
    (section,) = [b["text"]["text"] for b in blocks if b.get("text", {}).get("text", "").startswith("*Delivery*")]
    return str(section)


async def test_sends_carry_report_url(app: App, fake_d7: FakeD7) -> None:
    await send_sms(app)

    (body,) = fake_d7.bodies(SMS)
    assert body["message_globals"]["report_url"] == f"{PUBLIC}/d7/reports/{SECRET}"


async def test_without_public_url_no_report_url_and_the_secret_is_generated_once(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path) as app:
        await send_sms(app)
        first = await app.relay.storage.settings.get("d7_report_secret")
    async with running_app(slack, fake_d7, tmp_path) as app:
        again = await app.relay.storage.settings.get("d7_report_secret")

    assert "report_url" not in (fake_d7.bodies(SMS)[0].get("message_globals") or {})
    assert first is not None
    assert len(first) >= 32
    assert again == first


async def test_sms_report_as_form_data_updates_the_card_in_place(app: App, slack: FakeSlack) -> None:
    request_id, result_ts = await send_sms(app)

    response = await post_form(app, sms_report(request_id, "+14155550100", "delivered"))
    await app.settle()

    assert response.status_code == 200
    (update,) = slack.of("chat.update")
    assert update["channel"] == "C0OPS"
    assert update["ts"] == result_ts
    assert delivery_section(update) == (
        "*Delivery*\n+1 415 ••• 0100: :white_check_mark: delivered\n+1 415 ••• 0101: :hourglass: no report yet"
    )


async def test_whatsapp_report_as_json_and_read_after_delivered(app: App, slack: FakeSlack) -> None:
    assert (
        await app.command("/whatsapp", "+14155550100 your ticket is solved", channel="C0SUPPORT")
    ).status_code == 200
    await app.settle()
    (record,) = await app.relay.storage.sends.audit()
    assert record.request_id is not None
    event = {
        "event_type": "DELIVERY_EVENTS",
        "request_id": record.request_id,
        "msg_id": "wamid-1",
        "recipient": "14155550100",  # D7 may leave out the +
        "status": "delivered",
        "cust_ref": record.id,
        "originator": "+971501234567",
        "timestamp": 1763800000000,
    }

    assert (await post_json(app, event)).status_code == 200
    await app.settle()
    assert (await post_json(app, event | {"status": "read"})).status_code == 200
    await app.settle()

    first, second = slack.of("chat.update")
    assert delivery_section(first) == "*Delivery*\n+1 415 ••• 0100: :white_check_mark: delivered"
    assert delivery_section(second) == "*Delivery*\n+1 415 ••• 0100: :eyes: read"


async def test_duplicate_and_out_of_order_reports_change_nothing(app: App, slack: FakeSlack) -> None:
    request_id, _ = await send_sms(app, "+14155550100 hello")
    delivered = sms_report(request_id, "+14155550100", "delivered")

    await post_form(app, delivered)
    await app.settle()
    again = await post_form(app, delivered)  # D7 posts a report more than once
    late = await post_form(app, sms_report(request_id, "+14155550100", "sent"))  # after delivered: ignored
    await app.settle()

    assert (again.status_code, late.status_code) == (200, 200)
    (update,) = slack.of("chat.update")
    assert "delivered" in delivery_section(update)
    statuses = await app.relay.storage.deliveries.statuses((await app.relay.storage.sends.audit())[0].id)
    assert [(s.recipient, s.status) for s in statuses] == [("+14155550100", "delivered")]


@pytest.mark.parametrize("word", ["un_delivered", "undelivered"])
async def test_undelivered_updates_the_card_and_tells_the_sender(app: App, slack: FakeSlack, word: str) -> None:
    request_id, result_ts = await send_sms(app, "+14155550100 hello")

    await post_form(app, sms_report(request_id, "+14155550100", word) | {"reason": "absent subscriber"})
    await app.settle()

    (update,) = slack.of("chat.update")
    assert delivery_section(update) == "*Delivery*\n+1 415 ••• 0100: :x: undelivered (absent subscriber)"
    failure = slack.of("chat.postMessage")[-1]
    assert failure["thread_ts"] != result_ts  # a reply in the send's thread, not an edit
    assert failure["text"] == (
        ":rotating_light: <@U0ALICE> your SMS was not delivered to +1 415 ••• 0100: "
        ":x: undelivered (absent subscriber)."
    )
    # Said once: the same failure reported again adds no second reply.
    await post_form(app, sms_report(request_id, "+14155550100", word, msg_id="m-2") | {"reason": "absent"})
    await app.settle()
    assert sum("not delivered" in c["text"] for c in slack.of("chat.postMessage")) == 1


async def test_an_unknown_status_is_logged_and_kept_as_not_final(
    app: App, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    request_id, _ = await send_sms(app, "+14155550100 hello")

    with caplog.at_level(logging.WARNING, logger="bot.deliveries"):
        assert (await post_form(app, sms_report(request_id, "+14155550100", "queued_at_carrier"))).status_code == 200
        await app.settle()
    await post_form(app, sms_report(request_id, "+14155550100", "delivered", msg_id="m-1"))
    await app.settle()

    assert "status the bot does not know: 'queued_at_carrier'" in caplog.text
    first, second = slack.of("chat.update")
    assert "“queued_at_carrier” (as D7 reported it)" in delivery_section(first)
    assert "delivered" in delivery_section(second)  # not final: a known status replaces it


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status"),
    [
        ("/d7/reports/wrong-secret-0123456789", "request_id=r&recipient=%2B14155550100&status=delivered", "form", 404),
        (REPORTS, "request_id=r&status=delivered", "form", 400),  # no recipient
        (REPORTS, '{"request_id": "r", "recipient": "+14155550100"', "json", 400),  # not JSON
        (REPORTS, '{"request_id": "r", "recipient": "not a phone", "status": "sent"}', "json", 400),
        (REPORTS, "[1, 2]", "json", 400),
    ],
)
async def test_wrong_secret_or_malformed_body_stores_nothing(
    app: App, path: str, body: str, content_type: str, status: int
) -> None:
    kind = "application/json" if content_type == "json" else "application/x-www-form-urlencoded"

    response = await app.http.post(app.url + path, content=body, headers={"Content-Type": kind})

    assert response.status_code == status
    assert "+1415" not in response.text
    async with app.relay.storage.database.engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(delivery_reports))).scalar_one() == 0


async def test_an_unknown_request_id_is_answered_like_a_known_one(app: App) -> None:
    request_id, _ = await send_sms(app, "+14155550100 hello")

    known = await post_form(app, sms_report(request_id, "+14155550100", "delivered"))
    unknown = await post_form(app, sms_report("no-such-request", "+14155550100", "delivered"))

    assert (known.status_code, known.text) == (unknown.status_code, unknown.text) == (200, "ok")


async def test_a_report_before_the_sends_answer_is_applied_once_the_send_is_known(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    fake_d7.enqueue(
        Reply(
            body={"request_id": "req-early", "status": "accepted", "created_at": "2026-11-22T05:00:00Z"},
            delay=1.0,
            path=SMS,
        )
    )
    assert (await app.command("/sms", "+14155550100 hello")).status_code == 200
    await fake_d7_received(fake_d7)

    report = await post_form(app, sms_report("req-early", "+14155550100", "delivered"))  # D7 is still answering
    await app.settle()

    assert report.status_code == 200
    (update,) = slack.of("chat.update")
    assert "delivered" in delivery_section(update)


async def fake_d7_received(fake_d7: FakeD7) -> None:
    import asyncio

    for _ in range(200):
        if fake_d7.bodies(SMS):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("D7 was not called")


async def test_status_command_asks_d7_and_answers_privately(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    request_id, _ = await send_sms(app, "+14155550100 +14155550101 hello")
    fake_d7.set_status(request_id, "+14155550100", "delivered")

    assert (await app.command("/sms", f"status {request_id}")).status_code == 200
    await app.settle()

    assert any(r.path == f"/report/v1/message-log/{request_id}" for r in fake_d7.requests)
    answer = slack.responses["cmd"][-1]
    assert answer["response_type"] == "ephemeral"
    shown = json.dumps(answer["blocks"], ensure_ascii=False)
    assert "+1 415 ••• 0100: :white_check_mark: delivered · 1 part · cost 0.0042 · US" in shown
    assert "+1 415 ••• 0101: :outbox_tray: sent, not yet delivered · 1 part · cost 0.0042 · US" in shown


@pytest.mark.parametrize("request_id", ["not-ours-1234", "`not-ours-1234`"])
async def test_status_of_an_unknown_request_is_not_found(app: App, slack: FakeSlack, request_id: str) -> None:
    assert (await app.command("/sms", f"status {request_id}")).status_code == 200
    await app.settle()

    answer = slack.responses["cmd"][-1]
    assert answer["text"].startswith(":mag: No send with request_id `not-ours-1234` was made from this workspace.")


async def test_reconciliation_looks_up_a_stale_send_and_updates_its_card(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    import asyncio

    request_id, result_ts = await send_sms(app, "+14155550100 hello")
    fake_d7.set_status(request_id, "+14155550100", "delivered")
    await asyncio.sleep(1.1)  # D7_RECONCILE_AFTER is 1s here

    assert app.relay.deliveries is not None
    assert await app.relay.deliveries.reconcile() == 1
    await app.settle()

    (update,) = slack.of("chat.update")
    assert update["ts"] == result_ts
    assert "delivered" in delivery_section(update)
    assert await app.relay.deliveries.reconcile() == 0  # final now: not looked up again


async def test_reconciliation_says_an_unknown_outcome_cannot_be_looked_up(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    import asyncio

    fake_d7.enqueue(Reply(action="close", path=SMS))  # the answer is lost: outcome unknown
    assert (await app.command("/sms", "+14155550100 hello")).status_code == 200
    await app.settle()
    await asyncio.sleep(1.1)

    assert app.relay.deliveries is not None
    assert await app.relay.deliveries.reconcile() == 1
    assert await app.relay.deliveries.reconcile() == 0  # said once
    notes = [c["text"] for c in slack.of("chat.postMessage") if "Still unknown" in c["text"]]
    assert len(notes) == 1
    assert "D7 cannot look a send up by the bot's own reference" in notes[0]
    assert not any(r.path.startswith("/report/") for r in fake_d7.requests)


async def test_statuses_are_per_send_and_recipient(app: App) -> None:
    request_id, _ = await send_sms(app, "+14155550100 +14155550101 hi")
    await post_form(app, sms_report(request_id, "+14155550100", "delivered", msg_id="a"))
    await post_form(app, sms_report(request_id, "+14155550101", "sent", msg_id="b"))
    await app.settle()

    async with app.relay.storage.database.engine.connect() as conn:
        rows = (await conn.execute(sa.select(recipient_statuses.c.recipient, recipient_statuses.c.status))).all()
    assert sorted(tuple(r) for r in rows) == [("+14155550100", "delivered"), ("+14155550101", "sent")]


async def test_either_body_under_either_content_type(app: App, slack: FakeSlack) -> None:
    request_id, _ = await send_sms(app, "+14155550100 +14155550101 hi")
    as_json = json.dumps(sms_report(request_id, "+14155550100", "delivered"))
    as_form = urlencode(sms_report(request_id, "+14155550101", "delivered", msg_id="m-2"))

    first = await app.http.post(
        app.url + REPORTS, content=as_json, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    second = await app.http.post(app.url + REPORTS, content=as_form, headers={"Content-Type": "application/json"})
    await app.settle()

    assert (first.status_code, second.status_code) == (200, 200)
    statuses = await app.relay.storage.deliveries.statuses((await app.relay.storage.sends.audit())[0].id)
    assert sorted((s.recipient, s.status) for s in statuses) == [
        ("+14155550100", "delivered"),
        ("+14155550101", "delivered"),
    ]


async def test_prune_removes_old_reports_and_statuses_with_their_sends(app: App) -> None:
    from datetime import timedelta

    from bot.domain.clock import utc_now as now

    request_id, _ = await send_sms(app, "+14155550100 hi")
    await post_form(app, sms_report(request_id, "+14155550100", "delivered"))
    await app.settle()

    assert await app.relay.storage.prune(now() + timedelta(seconds=1)) == 1

    async with app.relay.storage.database.engine.connect() as conn:
        for table in (delivery_reports, recipient_statuses):
            assert (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one() == 0


async def test_a_report_for_a_number_that_was_never_a_recipient_is_ignored(
    app: App, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    request_id, _ = await send_sms(app, "+14155550100 hello")

    with caplog.at_level(logging.WARNING, logger="bot.deliveries"):
        await post_form(app, sms_report(request_id, "+14155550199", "undelivered") | {"reason": "absent"})
        await app.settle()

    assert slack.of("chat.update") == []  # not shown on the card
    assert not [p for p in slack.of("chat.postMessage") if "not delivered" in str(p.get("text"))]  # nobody pinged
    (record,) = await app.relay.storage.sends.audit()
    assert await app.relay.storage.deliveries.statuses(record.id) == []
    assert "the number is not one of its recipients" in caplog.text
    assert "+14155550199" not in caplog.text
    # A report for the real recipient still counts.
    await post_form(app, sms_report(request_id, "+14155550100", "delivered", msg_id="m-2"))
    await app.settle()
    assert delivery_section(slack.of("chat.update")[-1]) == "*Delivery*\n+1 415 ••• 0100: :white_check_mark: delivered"


# ------------------------------------------------------------ who may see a send's status


def status_calls(fake_d7: FakeD7, request_id: str) -> int:
    return sum(r.path == f"/report/v1/message-log/{request_id}" for r in fake_d7.requests)


async def test_a_stranger_asking_for_a_status_is_told_not_found_and_d7_is_not_asked(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    request_id, _ = await send_sms(app, "+14155550100 hello")
    slack.add_channel("C0OPS", users=["U0ALICE"])  # the stranger is not in #ops

    await app.command("/sms", f"status {request_id}", user="U0STRANGER", channel="C0RANDOM")
    await app.settle()

    assert slack.responses["cmd"][-1]["text"].startswith(f":mag: No send with request_id `{request_id}`")
    assert status_calls(fake_d7, request_id) == 0


async def test_the_channels_members_may_see_a_status_and_it_is_asked_once_for_all_of_them(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    request_id, _ = await send_sms(app, "+14155550100 hello")
    slack.add_channel("C0OPS", users=["U0ALICE", "U0BOB", "U0CAROL"])

    for user in ("U0BOB", "U0CAROL", "U0ALICE"):
        await app.command("/sms", f"status {request_id}", user=user)
        await app.settle()
        assert "+1 415 ••• 0100" in json.dumps(slack.responses["cmd"][-1]["blocks"], ensure_ascii=False)
    assert status_calls(fake_d7, request_id) == 1  # D7 asked once; the same answer for 30 s


async def test_status_look_ups_are_limited_per_person(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    from bot.slack.listeners.commands import STATUS_PER_MINUTE

    for i in range(STATUS_PER_MINUTE + 1):
        await app.command("/sms", f"status not-ours-{i}", user="U0EAGER")
    await app.settle()

    answers = [r["text"] for r in slack.responses["cmd"]]
    assert sum(a.startswith(":mag:") for a in answers) == STATUS_PER_MINUTE
    assert answers[-1].startswith(f":hourglass: You asked for {STATUS_PER_MINUTE} statuses in the last minute.")


async def test_an_admin_by_user_group_sees_any_status_and_a_group_slack_no_longer_has_is_skipped(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    from tests.harness import POLICY

    slack.state.usergroups["S0ADMINS"] = ["U0ADMIN"]  # S0GONE was deleted in Slack since the policy was written
    policy = POLICY.replace("rules:", "admins: [S0GONE, S0ADMINS]\nrules:", 1)
    async with running_app(slack, fake_d7, tmp_path, policy=policy, PUBLIC_URL=PUBLIC, D7_REPORT_SECRET=SECRET) as app:
        request_id, _ = await send_sms(app, "+14155550100 hello")
        slack.add_channel("C0OPS", users=["U0ALICE"])
        for user in ("U0ADMIN", "U0STRANGER"):
            await app.command("/sms", f"status {request_id}", user=user, channel="C0RANDOM")
            await app.settle()

    admin, stranger = slack.responses["cmd"][-2:]
    assert "+1 415 ••• 0100" in json.dumps(admin["blocks"], ensure_ascii=False)
    assert stranger["text"].startswith(f":mag: No send with request_id `{request_id}`")
    assert status_calls(fake_d7, request_id) == 1
