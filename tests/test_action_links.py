"""Action links (issue 28): with PUBLIC_URL set, each phone's alert text ends with its own link; opening it changes
nothing; the page's form acknowledges the alert as that phone, like a ✅ reaction. End to end: the real app over
HTTP, the fake Slack and D7, and the page opened and clicked in Debian's Chromium (Playwright)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.domain.clock import utc_now
from bot.domain.encoding import analyze
from bot.pages import RateLimit
from bot.storage.schema import action_links, sends
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import App, event_callback, running_app

SMS = "/messages/v1/send"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

POLICY = """
version: 1
defaults: {region: US, show_numbers: masked}
senders:
  ops-sms: {via: sms, originator: OpsAlert}
contacts:
  oncall: ["+14155550100", "+14155550101"]
alerts:
  - name: paging
    slack_channels: [C0PAGE]
    match: "(?i)critical"
    from: any
    sender: ops-sms
    to: ["group:oncall", S0ONCALL]
    resolve: "(?i)resolved"
    escalate:
      - {after: 5m, to: ["+14155550120"]}
"""

ALERT = {
    "type": "message",
    "user": "U0MON",
    "ts": "1765100000.000100",
    "text": "CRITICAL: payments-api is down in eu-west-1 - every request since 03:12 UTC answers 503, the load balancer "
    "sees no healthy target and the on-call runbook says to check the last deploy first",
}


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    slack.add_channel("C0PAGE", name="paging")
    slack.add_user("U0ANA", "ana", "+1 415 555 0102")
    slack.add_user("U0MON", "monitor")
    slack.state.usergroups["S0ONCALL"] = ["U0ANA"]
    return slack


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path, policy=POLICY, PUBLIC_URL="https://relay.example.com/") as running:
        yield running


async def post(app: App, message: dict[str, Any]) -> None:
    assert (await app.event(event_callback(message, channel="C0PAGE"))).status_code == 200
    await app.settle()


def texts(fake_d7: FakeD7) -> list[dict[str, Any]]:
    return [m for body in fake_d7.bodies(SMS) for m in body["messages"]]


def link_of(content: str) -> str:
    (found,) = re.findall(r"https://relay\.example\.com/a/([A-Za-z0-9_-]{16})$", content)
    return str(found)


async def stored_links(app: App) -> list[Any]:
    async with app.relay.storage.database.connect() as conn:
        return list((await conn.execute(sa.select(action_links).order_by(action_links.c.phone))).all())


async def make_due(app: App, key: str) -> None:
    async with app.relay.storage.database.begin() as conn:
        await conn.execute(sends.update().where(sends.c.idempotency_key == key).values(next_attempt_at=utc_now()))
    app.relay.outbox.wakeup.set()
    await app.settle()


async def test_each_phone_gets_its_own_link_in_one_request_and_the_words_make_room_for_it(
    app: App, fake_d7: FakeD7
) -> None:
    await post(app, ALERT)

    (body,) = fake_d7.bodies(SMS)  # one request
    messages = body["messages"]
    assert [m["recipients"] for m in messages] == [["+14155550100"], ["+14155550101"], ["+14155550102"]]
    tokens = [link_of(m["content"]) for m in messages]
    assert len(set(tokens)) == 3  # one link per phone
    words = {m["content"].rsplit("\n", 1)[0] for m in messages}
    assert words == {
        "CRITICAL: payments-api is down in eu-west-1 - every request since 03:12 UTC answers 503, the load balancer..."
    }  # shortened for the link, never the link
    for m in messages:
        assert analyze(m["content"]).segments == 1  # the rule's budget: one part
        assert m["data_coding"] == "text"
    rows = await stored_links(app)
    assert [(r.phone, r.token) for r in rows] == list(
        zip(["+14155550100", "+14155550101", "+14155550102"], tokens, strict=True)
    )
    assert all(r.alert_key == "alert:C0PAGE:1765100000.000100" for r in rows)
    assert all(round((r.expires_at - r.created_at).total_seconds()) == 24 * 3600 for r in rows)


async def test_opening_a_link_changes_nothing_and_a_forged_or_unknown_one_is_a_bare_404(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await post(app, ALERT)
    token = link_of(texts(fake_d7)[0]["content"])
    before = len(slack.of("chat.postMessage"))

    preview = await app.http.get(f"{app.url}/a/{token}", headers={"User-Agent": "Slackbot-LinkExpanding 1.0"})
    head = await app.http.head(f"{app.url}/a/{token}")

    assert preview.status_code == 200
    assert head.status_code == 200
    assert "<h1>CRITICAL: payments-api is down in eu-west-1" in preview.text
    assert "Firing: nobody has acknowledged it yet" in preview.text
    assert preview.headers["cache-control"] == "no-store"
    assert preview.headers["referrer-policy"] == "no-referrer"
    assert len(slack.of("chat.postMessage")) == before  # nothing said
    (alert,) = [r for r in await app.relay.storage.sends.audit() if r.request.origin.surface == "alert"]
    assert alert.acked_by is None
    for wrong in ("A" * 16, token[:-1] + ("A" if token[-1] != "A" else "B"), "x", "%00" * 16):
        answer = await app.http.get(f"{app.url}/a/{wrong}")
        assert answer.status_code == 404
        assert answer.text == "Not found"
    forged = await app.http.post(f"{app.url}/a/{token}", data={"form_token": "not-the-pages", "action": "acknowledge"})
    assert forged.status_code == 403
    assert (await app.relay.storage.sends.get(alert.id)).acked_by is None  # type: ignore[union-attr]


async def test_a_link_of_a_resolved_alert_is_gone(app: App, fake_d7: FakeD7) -> None:
    await post(app, ALERT)
    token = link_of(texts(fake_d7)[0]["content"])
    await post(
        app,
        {"type": "message", "bot_id": "B0MON", "ts": "1765100100.000100", "thread_ts": ALERT["ts"], "text": "Resolved"},
    )

    assert (await app.http.get(f"{app.url}/a/{token}")).status_code == 404
    resolved = texts(fake_d7)[3:]
    assert [m["content"] for m in resolved] == [
        "RESOLVED: payments-api is down in eu-west-1 - every request since "
        "03:12 UTC answers 503, the load balancer sees no healthy target and the on-call runbook..."
    ]  # no link
    assert resolved[0]["recipients"] == ["+14155550100", "+14155550101", "+14155550102"]


async def test_too_many_asks_for_a_link_are_refused_for_a_minute(app: App, fake_d7: FakeD7) -> None:
    await post(app, ALERT)
    token = link_of(texts(fake_d7)[0]["content"])
    now = [0.0]
    limit = RateLimit(limit=3, clock=lambda: now[0])
    assert [limit.allows(f"t:{token}", "a:1") for _ in range(4)] == [True, True, True, False]
    assert limit.allows("t:other", "a:2")  # another token from another address
    now[0] = 61.0
    assert limit.allows(f"t:{token}", "a:1")  # a minute on
    answers = [(await app.http.get(f"{app.url}/a/{token}")).status_code for _ in range(31)]
    assert answers[:30] == [200] * 30
    assert answers[30] == 429


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("REQUIRE_BROWSER"),
    reason="Debian's chromium is not installed (.ci/run installs it; apt-get install chromium)",
)
async def test_chromium_opens_the_page_clicks_acknowledge_the_thread_names_the_phone_and_escalation_stops(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    from playwright.async_api import async_playwright

    assert CHROMIUM is not None, "REQUIRE_BROWSER is set but chromium is not installed"
    await post(app, ALERT)
    ana = next(m for m in texts(fake_d7) if m["recipients"] == ["+14155550102"])
    token = link_of(ana["content"])

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            await page.goto(f"{app.url}/a/{token}")
            assert await page.title() == "Alert: " + ana["content"].splitlines()[0]
            button = page.get_by_role("button", name="Acknowledge")
            box = await button.bounding_box()
            assert box is not None
            assert box["height"] >= 48  # a large target
            assert box["width"] >= 300  # the phone's width, less the margins
            await page.keyboard.press("Tab")  # reachable from the keyboard, and labelled
            focused = await page.evaluate("document.activeElement.textContent")
            assert focused == "Acknowledge"
            assert await page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
            await page.keyboard.press("Enter")
            await page.wait_for_load_state()
            status = await page.get_by_role("status").inner_text()
            assert status.startswith("Acknowledged.")
            assert await page.get_by_role("button", name="Acknowledge").count() == 0
            await page.goto(f"{app.url}/a/{token}")  # again: acknowledged, by whom
            assert "Acknowledged by" in await page.content()
            assert "ana" in await page.locator("dd").all_inner_texts()
        finally:
            await browser.close()
    await app.settle()

    notes = [c["text"] for c in slack.of("chat.postMessage") if c.get("thread_ts") == ALERT["ts"]]
    assert notes[-1] == (
        ":white_check_mark: *Acknowledged* from +1 415 ••• 0102 (ana's phone): no more texts for this alert until it "
        "is resolved."
    )
    (alert,) = [r for r in await app.relay.storage.sends.audit() if r.request.origin.surface == "alert"]
    assert alert.acked_by == "+14155550102"
    sent = len(fake_d7.bodies(SMS))
    await make_due(app, f"escalate:{alert.id}:0")
    assert len(fake_d7.bodies(SMS)) == sent  # the escalation step did not go out
    step = [c["text"] for c in slack.of("chat.postMessage") if c.get("thread_ts") == ALERT["ts"]][-1]
    assert step == (
        ":white_check_mark: *Escalation step 1 not sent:* +1 415 ••• 0102 (ana's phone) acknowledged the alert."
    )


async def test_the_page_resolves_an_alert_whose_rule_resolves_once_like_a_resolving_post(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await post(app, ALERT)
    token = link_of(texts(fake_d7)[0]["content"])
    page = (await app.http.get(f"{app.url}/a/{token}")).text
    (form_token,) = re.findall(r'name="form_token" value="([^"]+)"', page)
    assert '<button type="submit" name="action" value="resolve" class="second">Resolve</button>' in page

    first = await app.http.post(f"{app.url}/a/{token}", data={"form_token": form_token, "action": "resolve"})
    again = await app.http.post(f"{app.url}/a/{token}", data={"form_token": form_token, "action": "resolve"})
    await app.settle()
    late = await app.http.post(f"{app.url}/a/{token}", data={"form_token": form_token, "action": "resolve"})

    assert first.status_code == 200
    assert "Resolved. RESOLVED goes to the phones it reached" in first.text
    # At once again: 200 (the same intent, nothing new) or 404 (the outbox resolved it in between); either way the
    # thread below has one note and one RESOLVED.
    assert again.status_code in (200, 404)
    assert late.status_code == 404  # once the outbox resolved it, the link is gone
    resolved = [m for m in texts(fake_d7) if m["content"].startswith("RESOLVED")]
    assert sorted(r for m in resolved for r in m["recipients"]) == ["+14155550100", "+14155550101", "+14155550102"]
    assert {m["content"] for m in resolved} == {  # in one segment, with no link: the alert is over
        "RESOLVED: payments-api is down in eu-west-1 - every request since 03:12 UTC answers 503, the load balancer "
        "sees no healthy target and the on-call runbook..."
    }
    thread = [c["text"] for c in slack.of("chat.postMessage") if c.get("thread_ts") == ALERT["ts"]]
    assert thread[1] == ":white_check_mark: *Resolved* from +1 415 ••• 0100, by the link in its text."
    assert thread[2].startswith(":white_check_mark: *RESOLVED texted* to ")
    assert len(thread) == 3  # once, however often it is clicked
    assert (await app.http.get(f"{app.url}/a/{token}")).status_code == 404  # a resolved alert's links are gone


PG_URL = os.environ.get("TEST_DATABASE_URL")


@pytest.mark.parametrize(
    "backend",
    ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set"))],
)
async def test_links_are_made_once_per_send_and_phone_on_each_database(backend: str, tmp_path: Path) -> None:
    from bot.storage.database import Database
    from bot.storage.engine import create_engine, migrate
    from bot.storage.links import SqlActionLinks
    from tests.harness import reset_postgres

    url = f"sqlite:///{tmp_path / 'bot.db'}" if backend == "sqlite" else str(PG_URL)
    if backend == "postgresql":
        await reset_postgres(url)
    engine = create_engine(url)
    await migrate(engine)
    async with Database(engine) as db:
        store = SqlActionLinks(db)
        at = utc_now().replace(microsecond=0)
        first = await store.ensure("s1", "alert:C1:1.1", ["+14155550100", "+14155550101"], at, at + timedelta(hours=24))
        again = await store.ensure("s1", "alert:C1:1.1", ["+14155550100", "+14155550101"], at, at + timedelta(hours=24))
        other = await store.ensure("s2", "alert:C1:1.1", ["+14155550100"], at, at)

        assert again == first  # a send tried again carries the same links
        assert first["+14155550100"].token != first["+14155550101"].token != other["+14155550100"].token
        assert await store.of_send("s1") == first
        assert await store.find(first["+14155550101"].token) == first["+14155550101"]
        assert await store.find("A" * 16) is None
        link = first["+14155550100"]
        assert (link.send_id, link.alert_key, link.expires_at - link.created_at) == (
            "s1",
            "alert:C1:1.1",
            timedelta(hours=24),
        )
        assert link.form_accepts(link.form_token)
        assert not link.form_accepts(first["+14155550101"].form_token)
    await engine.dispose()


async def test_a_rule_with_links_false_texts_no_link_and_keeps_its_words(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    policy = POLICY.replace("    resolve:", "    links: false\n    resolve:", 1)
    assert "links: false" in policy
    async with running_app(slack, fake_d7, tmp_path, policy=policy, PUBLIC_URL="https://relay.example.com") as app:
        await post(app, ALERT)
        assert await stored_links(app) == []

    (body,) = fake_d7.bodies(SMS)
    (message,) = body["messages"]  # one message object: the same text for every phone
    assert "/a/" not in message["content"]
    assert message["content"].startswith(ALERT["text"][:100])  # the room a link would take is the alert's


async def test_an_address_guessing_tokens_is_stopped_for_a_minute_and_a_flood_costs_no_memory(
    app: App, fake_d7: FakeD7
) -> None:
    await post(app, ALERT)
    token = link_of(texts(fake_d7)[0]["content"])
    guesses = [(await app.http.get(f"{app.url}/a/{'G' * 15}{i % 10}")).status_code for i in range(30)]
    assert guesses == [404] * 30
    assert (await app.http.get(f"{app.url}/a/{token}")).status_code == 429  # this address, a minute
    limit = RateLimit(limit=1, clock=lambda: 0.0)
    assert limit.allows("k")
    for i in range(1000):
        assert not limit.allows("k", f"other-{i}")  # refused: nothing kept for the other keys
    assert not limit.over("other-1")


def test_a_texts_segments_and_its_cost_count_its_link() -> None:
    from dataclasses import replace

    from bot.domain.budgets import billed_messages
    from bot.domain.models import Origin, SendRequest, Surface, Via
    from bot.domain.phone import NumberDisplay, PhoneNumber
    from bot.domain.sends import Checked, prepared

    phones = (PhoneNumber("+14155550100"), PhoneNumber("+14155550101"))
    words = "x" * 150  # one segment alone; two with a link after it
    request = SendRequest(Via.SMS, Origin(Surface.ALERT, "T0", "B0", "C0"), (), words, "alert:C0:1.1")
    send = prepared("s1", request, Checked("r", "ops-sms", "OpsAlert", phones, words), NumberDisplay.MASKED)
    linked = replace(send, endings={p.e164: "\nhttps://relay.example.com/a/" + "A" * 16 for p in phones})

    assert (send.sms.segments, billed_messages(send)) == (1, 2)  # type: ignore[union-attr]
    assert (linked.sms.segments, billed_messages(linked)) == (2, 4)  # type: ignore[union-attr]
