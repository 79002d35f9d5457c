"""Reaching the sender where the bot cannot post, against the strict fake Slack.

Slack takes 5 posts per response_url, within 30 minutes; chat.postEphemeral needs a channel the bot is in. Past
those, the sender is told in the app's DM with them (App Home's Messages tab). Every notice reaches the sender.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa

from bot.storage.schema import sends
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import App, running_app

SECRET = "report-path-secret-0123456789abcdef"
REPORTS = f"/d7/reports/{SECRET}"
FIVE = ["+14155550100", "+14155550101", "+14155550102", "+14155550103", "+14155550104"]


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    slack.add_user("U0ALICE", "alice", "+1 415 555 0100")
    slack.add_channel("C0PRIVATE", member=False, public=False)  # private, and the bot is not in it
    return slack


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(
        slack, fake_d7, tmp_path, PUBLIC_URL="https://relay.example.com", D7_REPORT_SECRET=SECRET
    ) as running:
        yield running


async def report(app: App, request_id: str, recipient: str, status: str = "undelivered") -> None:
    fields = {"request_id": request_id, "msg_id": f"m-{recipient}", "recipient": recipient, "status": status}
    response = await app.http.post(
        app.url + REPORTS,
        content=urlencode(fields | {"reason": "absent subscriber"}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    await app.settle()


def told(slack: FakeSlack, url: str) -> list[str]:
    """Everything the sender was told about the send, in order: the response_url's posts, then the DM's."""
    return [p["text"] for p in slack.posts_to(url)] + [m["text"] for m in slack.dms("U0ALICE")]


async def private_send(app: App, slack: FakeSlack, text: str) -> tuple[str, str]:
    assert (await app.command("/sms", text, channel="C0PRIVATE")).status_code == 200
    await app.settle()
    (record,) = await app.relay.storage.sends.audit()
    assert record.request_id is not None
    return record.request_id, slack.response_urls("cmd")[-1]


async def test_five_numbers_failing_at_different_times_in_a_private_channel_all_reach_the_sender(
    app: App, slack: FakeSlack
) -> None:
    request_id, url = await private_send(app, slack, " ".join(FIVE) + " db down")

    for number in FIVE:
        await report(app, request_id, number)

    notices = [t for t in told(slack, url) if "was not delivered" in t]
    assert [n.split("not delivered to ")[1].split(":")[0] for n in notices] == [
        "+1 415 ••• 0100",
        "+1 415 ••• 0101",
        "+1 415 ••• 0102",
        "+1 415 ••• 0103",
        "+1 415 ••• 0104",
    ]
    # The response_url took its 5 posts (announcement, result, 3 notices); the last 2 notices went to the DM.
    assert len(slack.posts_to(url)) == 5
    dms = slack.dms("U0ALICE")
    assert len(dms) == 2
    assert dms[0]["blocks"][0]["elements"][0]["text"].startswith(
        ":speech_balloon: About a text you sent from <#C0PRIVATE>"
    )
    # Nothing was refused on the way: the bot counted the uses instead of finding out.
    assert [r for r in slack.refused if r.where.startswith("response_url")] == []


async def test_a_report_31_minutes_after_a_private_send_reaches_the_sender_in_their_dm(
    app: App, slack: FakeSlack
) -> None:
    request_id, url = await private_send(app, slack, "+14155550100 db down")
    assert len(slack.posts_to(url)) == 2  # the announcement and D7's verdict

    # 31 minutes pass, for Slack and for the bot (the send was received 31 minutes ago).
    slack.advance(31 * 60)
    (record,) = await app.relay.storage.sends.audit()
    async with app.relay.storage.database.engine.begin() as conn:
        await conn.execute(sa.update(sends).values(created_at=record.created_at - timedelta(minutes=31)))
    await report(app, request_id, "+14155550100")

    (dm,) = slack.dms("U0ALICE")
    assert dm["channel"] == "U0ALICE"  # the app's DM with the sender
    assert dm["text"] == (
        ":rotating_light: <@U0ALICE> your SMS was not delivered to +1 415 ••• 0100: :x: undelivered "
        "(absent subscriber)."
    )
    assert len(slack.posts_to(url)) == 2  # the expired response_url was not even tried
    assert [r for r in slack.refused if r.where.startswith("response_url")] == []


async def test_a_form_sent_to_a_private_channel_the_bot_is_not_in_without_a_response_url_tells_the_sender(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    from tests.harness import global_shortcut
    from tests.test_compose import interact, opened_view, state, submission

    shortcut = global_shortcut("1337.9.private")
    await interact(app, shortcut)
    view = (await opened_view(app, slack))["view"]
    # Slack sent no response_url for the pick (none is promised for every conversation): the DM is the way left.
    await interact(app, submission(view, state(message="hi", numbers="+14155550100", conversation="C0PRIVATE")))
    await app.settle()

    assert len(fake_d7.sends) == 1
    (request_id,) = fake_d7.sends
    announcement, result = slack.dms("U0ALICE")
    assert "I can't post in <#C0PRIVATE>" in announcement["blocks"][1]["text"]["text"]
    assert f"request_id `{request_id}`" in result["text"]
    # Nothing was posted where the bot may not post, and nothing retried for a day.
    assert [c.params["channel"] for c in slack.attempts("chat.postMessage") if not c.ok] == ["C0PRIVATE"]


async def test_a_send_from_a_dm_between_two_people_tells_the_sender_there_then_in_the_apps_dm(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    from tests.harness import POLICY

    policy = POLICY.replace("[C0OPS, C0PRIVATE, C0NOTJOINED]", "[C0OPS, C0PRIVATE, C0NOTJOINED, D0PEOPLE]")
    async with running_app(
        slack, fake_d7, tmp_path, policy=policy, PUBLIC_URL="https://relay.example.com", D7_REPORT_SECRET=SECRET
    ) as app:
        assert (await app.command("/sms", " ".join(FIVE[:4]) + " hi", channel="D0PEOPLE")).status_code == 200
        await app.settle()
        (record,) = await app.relay.storage.sends.audit()
        assert record.request_id is not None
        for number in FIVE[:4]:
            await report(app, record.request_id, number)

    url = slack.response_urls("cmd")[-1]
    # The bot cannot post in a DM between two people: announcement, result and 3 failures through the
    # response_url (5 posts), the 4th failure in the app's DM; nothing posted in the DM itself.
    assert len(slack.posts_to(url)) == 5
    assert "I can't post in" in slack.posts_to(url)[0]["blocks"][0]["text"]["text"]
    (dm,) = slack.dms("U0ALICE")
    assert dm["blocks"][0]["elements"][0]["text"].startswith(":speech_balloon: About a text you sent from a direct")
    assert "not delivered to +1 415 ••• 0103" in dm["text"]
    assert [c.params["channel"] for c in slack.attempts("chat.postMessage") if not c.ok] == ["D0PEOPLE"]


async def test_a_refusal_in_a_dm_names_it_in_words(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    await app.command("/sms", "+14155550100 hi", channel="D0PEOPLE")
    await app.settle()

    assert fake_d7.sends == {}
    (refusal,) = slack.responses["cmd"]
    assert refusal["blocks"][1]["text"]["text"] == "• this direct message is not allowed to send via SMS"


def test_a_forms_own_response_url_is_kept_only_while_fresh_and_counted_as_older() -> None:
    from datetime import UTC, datetime

    from bot.domain.models import Surface
    from bot.slack.compose import FORM_RESPONSE_URL_FRESH, ComposeContext
    from bot.slack.conversation import RESPONSE_URL_LIFE, ResponseUrls

    opened = ComposeContext(Surface.COMMAND, "T0TEAM", "U0ALICE", "C0PRIVATE", response_url="https://own", opened_at=0)
    assert opened.submitted_in("C0PRIVATE", now=FORM_RESPONSE_URL_FRESH).response_url == "https://own"
    late = opened.submitted_in("C0PRIVATE", "https://picked", now=FORM_RESPONSE_URL_FRESH + 1)
    assert late.response_url == "https://picked"  # the command's URL may be near its end: the pick's is new
    assert opened.submitted_in("C0PRIVATE", now=FORM_RESPONSE_URL_FRESH + 1).response_url is None

    # Counted from the submission, a form's own URL stops FORM_RESPONSE_URL_FRESH earlier than a command's.
    received = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    at = [received + RESPONSE_URL_LIFE - timedelta(minutes=4)]  # 26 minutes on
    urls = ResponseUrls(clock=lambda: at[0])
    assert urls.take("https://cmd", received)
    assert not urls.take("https://form", received, older_by=timedelta(seconds=FORM_RESPONSE_URL_FRESH))
    at[0] = received + timedelta(minutes=23)
    assert urls.take("https://form-2", received, older_by=timedelta(seconds=FORM_RESPONSE_URL_FRESH))
