"""Verified phones (issue 29, ``defaults.verified_phones``), end to end against the strict fakes: a profile phone is
texted only once its owner verified it with a D7 Verify code from App Home; unverified ones are left out of alerts
(their thread says so, their owner is told privately) and refuse a ``/sms`` that names the person; three wrong codes
block trying for 15 minutes; a changed profile phone needs verifying again. Also the D7 client's two Verify calls
against the fake D7, and the fake's own strictness."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.d7 import D7Client
from bot.domain.clock import utc_now
from bot.domain.errors import D7AuthError, D7NotFoundError, D7ValidationError, FieldError, PolicyFileError
from bot.domain.policy import parse_policy
from bot.domain.verification import BLOCK_FOR, CODE_LIFETIME, REMIND_EVERY
from bot.storage.database import Database
from bot.storage.engine import create_engine, migrate
from bot.storage.schema import metadata, phone_verifications
from bot.storage.verifications import SqlPhoneVerifications
from tests.blockkit import assert_valid_view
from tests.fakes.d7 import OTP_SEND, OTP_VERIFY, TOKEN, FakeD7, Reply
from tests.fakes.slack import TEAM_ID, FakeSlack
from tests.harness import App, event_callback, issue_triggers, running_app, sign
from tests.test_home import shown, wait_for_publish
from tests.test_oncall import start_for

PG_URL = os.environ.get("TEST_DATABASE_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set")
SMS = "/messages/v1/send"
ANA, BEN, CAL, DAN = "+14155550110", "+14155550111", "+14155550112", "+14155550113"
DESK = "+14155550150"
TABLE = "phone_verifications"
CODE_TEXT = "Your code to verify this phone for alerts from Slack: {}. It expires in 10 minutes."


def policy(extra_defaults: str = "") -> str:
    return f"""
version: 1
defaults: {{region: US, verified_phones: true{extra_defaults}}}
senders:
  wa: {{via: whatsapp, originator: "+971501234567"}}
  ops-sms: {{via: sms, originator: OpsAlert}}
contacts:
  desk: ["{DESK}"]
schedules:
  primary: {{people: [U0ANA, U0BEN], every: 1w, start: "{start_for(0, timedelta(weeks=1))}"}}
rules:
  - name: page
    slack_channels: [C0OPS]
    users: ["*"]
    senders: [ops-sms]
    recipients: ["+1*"]
alerts:
  - name: db
    slack_channels: [C0ALERTS]
    match: "(?i)critical"
    from: any
    sender: ops-sms
    to: ["schedule:primary", S0DBA, "group:desk"]
"""


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    slack.add_channel("C0ALERTS", name="alerts")
    for user_id, phone in (("U0ANA", ANA), ("U0BEN", BEN), ("U0CAL", CAL), ("U0DAN", DAN)):
        slack.add_user(user_id, user_id.removeprefix("U0").lower(), phone)
    slack.state.usergroups["S0DBA"] = ["U0CAL"]
    return slack


_ts = iter(range(1, 10_000))


async def alert(app: App, text: str = "CRITICAL: db-1 is down") -> str:
    ts = f"1765200000.{next(_ts):06d}"
    message = {"type": "message", "user": "U0MONITOR", "text": text, "ts": ts}
    assert (await post(app, event_callback(message, channel="C0ALERTS"), "application/json")).status_code == 200
    await app.settle()
    return ts


def texted(fake_d7: FakeD7) -> list[list[str]]:
    """The recipients of each SMS request, in order."""
    return [[r for m in body["messages"] for r in m["recipients"]] for body in fake_d7.bodies(SMS)]


def thread_sections(slack: FakeSlack, thread_ts: str) -> list[str]:
    posts = [p for p in slack.of("chat.postMessage") if p.get("thread_ts") == thread_ts]
    return [b["text"]["text"] for p in posts for b in p.get("blocks") or [] if b.get("type") == "section"]


_triggers = iter(range(1, 10_000))


async def post(app: App, body: bytes, content_type: str) -> httpx.Response:
    """Post to the bot as Slack does, signed, on a connection of its own: a refresh of App Home keeps ``settle``
    waiting out its 5 s debounce, as long as uvicorn keeps an idle connection open, so a reused one may be closing."""
    issue_triggers(app.slack, body)
    headers = {"Content-Type": content_type, **sign(body)}
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(f"{app.url}/slack/events", content=body, headers=headers)


async def interact(app: App, payload: dict[str, Any]) -> httpx.Response:
    return await post(app, urlencode({"payload": json.dumps(payload)}).encode(), "application/x-www-form-urlencoded")


async def open_home(app: App, slack: FakeSlack, user: str) -> dict[str, Any]:
    before = len(slack.of("views.publish"))
    event = {"type": "app_home_opened", "user": user, "tab": "home", "ts": "1700000000.000001"}
    assert (await post(app, event_callback(event, channel="D0HOME"), "application/json")).status_code == 200
    await wait_for_publish(app, slack, before + 1)
    return slack.homes[user]


async def click_verify(app: App, slack: FakeSlack, user: str) -> dict[str, Any]:
    """Click "Verify my phone" on App Home as Slack posts it; the modal as it stands once the bot is done."""
    opened = len(slack.of("views.open"))
    home = slack.homes.get(user, {"id": "VH0", "blocks": []})
    click = {
        "type": "block_actions",
        "team": {"id": TEAM_ID},
        "user": {"id": user},
        "api_app_id": "A0APP",
        "trigger_id": f"1337.{next(_triggers)}.verify",
        "container": {"type": "view", "view_id": home["id"]},
        "view": {"id": home["id"], "type": "home", "blocks": home["blocks"]},
        "actions": [{"action_id": "verify_phone", "block_id": "phone", "type": "button", "action_ts": "1.2"}],
    }
    response = await interact(app, click)
    assert response.status_code == 200
    await app.settle()
    (call,) = slack.of("views.open")[opened:]
    assert call["view"]["blocks"][0]["text"]["text"].startswith(":hourglass_flowing_sand: Reading your Slack profile")
    return dict(slack.views[max(slack.views)])


async def submit_code(app: App, modal: dict[str, Any], user: str, code: str) -> dict[str, Any]:
    """Submit the code's form as Slack posts it; the bot's answer (``response_action`` …)."""
    payload = {
        "type": "view_submission",
        "team": {"id": TEAM_ID},
        "user": {"id": user},
        "api_app_id": "A0APP",
        "view": {**modal, "state": {"values": {"code": {"code": {"type": "plain_text_input", "value": code}}}}},
    }
    response = await interact(app, payload)
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    if "view" in answer:  # what Slack shows in place of the form: within its limits like any view
        assert_valid_view(answer["view"])
    await app.settle()
    return answer


def modal_text(view: dict[str, Any]) -> str:
    return "\n".join(
        b["text"]["text"] if b["type"] == "section" else b["elements"][0]["text"]
        for b in view["blocks"]
        if b["type"] in ("section", "context")
    )


async def verify(app: App, slack: FakeSlack, fake_d7: FakeD7, user: str, phone: str) -> None:
    modal = await click_verify(app, slack, user)
    answer = await submit_code(app, modal, user, fake_d7.otp_for(phone))
    assert answer["response_action"] == "update", answer
    assert ":white_check_mark: Your phone" in modal_text(answer["view"])


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


async def stored(app: App, user: str) -> Any:
    async with app.relay.storage.database.connect() as conn:
        return (await conn.execute(sa.select(phone_verifications).where(phone_verifications.c.user_id == user))).first()


# ------------------------------------------------------------ alerts and /sms leave unverified phones out


async def test_an_alert_leaves_out_unverified_profile_phones_says_so_and_tells_each_owner_once(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy()) as app:
        first = await alert(app)
        await alert(app, "CRITICAL: db-2 is down")  # a second alert within the hour: nobody is told twice

    assert texted(fake_d7) == [[DESK], [DESK]]  # the contact group's number as named; no profile phone
    (not_reached,) = [s for s in thread_sections(slack, first) if s.startswith(":warning: *Not reached:*")]
    assert "@ana not reached: phone not verified (they can verify it from the app's Home tab)" in not_reached
    assert "@cal not reached: phone not verified" in not_reached  # S0DBA's member
    assert ":pager: On call for *primary*: @ana" in thread_sections(slack, first)
    for user in ("U0ANA", "U0CAL"):
        (note,) = slack.dms(user)
        assert "click *Verify my phone*" in note["text"]
        assert note["blocks"][0]["text"]["text"] == note["text"]
    assert slack.dms("U0BEN") == []  # not on call, not texted, not told


async def test_an_alert_to_unverified_people_only_is_not_texted_and_its_thread_says_why(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    only_people = policy().replace('to: ["schedule:primary", S0DBA, "group:desk"]', 'to: ["schedule:primary"]')
    async with running_app(slack, fake_d7, tmp_path, policy=only_people) as app:
        ts = await alert(app)

    assert fake_d7.bodies(SMS) == []
    assert any("@ana not reached: phone not verified" in s for s in thread_sections(slack, ts))


async def test_sms_naming_a_person_with_an_unverified_phone_is_refused_naming_them_and_nothing_is_sent(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy()) as app:
        await app.command("/sms", "<@U0ANA|ana> db-1 needs you", user="U0BEN")
        await app.settle()
        refused = slack.responses["cmd"][-1]["text"]
        assert fake_d7.bodies(SMS) == []
        await app.command("/sms", f"{ANA} db-1 needs you", user="U0BEN")  # her number typed: as named
        await app.settle()

    assert "@ana's phone is not verified: they can verify it from the app's Home tab" in refused
    assert texted(fake_d7) == [[ANA]]
    assert len(slack.dms("U0ANA")) == 1


# ------------------------------------------------------------ verifying from App Home


async def test_verifying_from_app_home_texts_a_code_checks_it_with_d7_and_the_next_alert_texts_the_phone(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy()) as app:
        home = await open_home(app, slack, "U0ANA")
        assert "Your phone +1 415 ••• 0110 is not verified" in shown(home)
        (section,) = [b for b in home["blocks"] if b.get("accessory", {}).get("action_id") == "verify_phone"]
        assert section["accessory"]["text"]["text"] == "Verify my phone"

        modal = await click_verify(app, slack, "U0ANA")
        (sent,) = [r for r in fake_d7.requests if r.path == OTP_SEND]
        assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
        assert sent.body == {
            "originator": "OpsAlert",  # the first SMS sender (the WhatsApp one is listed before it)
            "recipient": ANA,
            "content": CODE_TEXT,
            "expiry": 600,
            "data_coding": "text",
        }
        (otp,) = fake_d7.otps.values()
        assert otp.text == CODE_TEXT.replace("{}", otp.code)
        assert modal["callback_id"] == "verify_phone_code"
        assert "We texted a code to +1 415 ••• 0110" in modal_text(modal)
        # What the form carries: the phone it shows and the code's end, never who verifies or the code (D7 has it).
        assert json.loads(modal["private_metadata"]).keys() == {"phone", "expires"}
        (code_input,) = [b for b in modal["blocks"] if b["type"] == "input"]
        assert code_input["element"]["type"] == "plain_text_input"
        assert "initial_value" not in code_input["element"]

        publishes = len(slack.of("views.publish"))
        answer = await submit_code(app, modal, "U0ANA", f" {otp.code[:3]} {otp.code[3:]} ")  # as people type it
        assert fake_d7.bodies(OTP_VERIFY) == [{"otp_id": otp.otp_id, "otp_code": otp.code}]
        assert answer["response_action"] == "update"
        assert modal_text(answer["view"]) == (
            ":white_check_mark: Your phone +1 415 ••• 0110 is verified: alerts and on-call texts reach it now."
        )
        await wait_for_publish(app, slack, publishes + 1)  # App Home refreshed
        assert "Your phone +1 415 ••• 0110 is verified." in shown(slack.homes["U0ANA"])
        row = await stored(app, "U0ANA")
        assert (row.phone, row.otp_id, row.failures) == (ANA, None, 0)

        await alert(app)

    assert texted(fake_d7) == [[ANA, DESK]]  # cal (S0DBA) is still not verified
    assert slack.dms("U0ANA") == []  # verified before any alert skipped her


async def test_three_wrong_codes_block_sending_and_checking_for_15_minutes_then_it_works_again(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy()) as app:
        await open_home(app, slack, "U0BEN")
        modal = await click_verify(app, slack, "U0BEN")
        bad = wrong(fake_d7.otp_for(BEN))
        answers = [await submit_code(app, modal, "U0BEN", bad) for _ in range(4)]
        assert answers[0] == {"response_action": "errors", "errors": {"code": "That code is not right: 2 tries left."}}
        assert answers[1] == {"response_action": "errors", "errors": {"code": "That code is not right: 1 try left."}}
        assert answers[2]["response_action"] == "update"
        assert modal_text(answers[2]["view"]) == (
            ":no_entry: That code is not right, 3 times in a row. Too many wrong codes: try again in 15 minutes."
        )
        assert modal_text(answers[3]["view"]) == ":no_entry: Too many wrong codes: try again in 15 minutes."
        assert len(fake_d7.bodies(OTP_VERIFY)) == 3  # the 4th never reached D7

        again = await click_verify(app, slack, "U0BEN")  # a new code is refused too
        assert modal_text(again) == ":no_entry: Too many wrong codes: try again in 15 minutes."
        assert len(fake_d7.bodies(OTP_SEND)) == 1
        home = await open_home(app, slack, "U0BEN")
        assert "is not verified: alerts and on-call texts skip it until you verify it. Too many wrong codes: try " in (
            shown(home)
        )
        row = await stored(app, "U0BEN")
        assert (row.phone, row.otp_id, row.failures) == (None, None, 0)
        assert 14 * 60 < (row.blocked_until - utc_now()).total_seconds() <= 15 * 60

        async with app.relay.storage.database.begin() as conn:  # 15 minutes pass
            await conn.execute(phone_verifications.update().values(blocked_until=utc_now() - timedelta(seconds=1)))
        await verify(app, slack, fake_d7, "U0BEN", BEN)
        assert len(fake_d7.bodies(OTP_SEND)) == 2

    row = await stored(app, "U0BEN")
    assert (row.phone, row.blocked_until) == (BEN, None)


async def test_a_changed_profile_phone_needs_verifying_again(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy()) as app:
        await open_home(app, slack, "U0ANA")
        await verify(app, slack, fake_d7, "U0ANA", ANA)
        slack.state.users["U0ANA"].phone = "+1 (415) 555-0177"
        assert "Your phone +1 415 ••• 0177 is not verified" in shown(await open_home(app, slack, "U0ANA"))
        ts = await alert(app)
        assert texted(fake_d7) == [[DESK]]
        assert any("@ana not reached: phone not verified" in s for s in thread_sections(slack, ts))

        await verify(app, slack, fake_d7, "U0ANA", "+14155550177")
        assert (await stored(app, "U0ANA")).phone == "+14155550177"

    assert fake_d7.bodies(OTP_SEND)[-1]["recipient"] == "+14155550177"


async def test_a_click_moments_after_a_code_shows_its_form_again_without_texting_another(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy()) as app:
        first = await click_verify(app, slack, "U0ANA")
        second = await click_verify(app, slack, "U0ANA")
        assert "a moment ago" in modal_text(second)
        assert len(fake_d7.bodies(OTP_SEND)) == 1
        answer = await submit_code(app, first, "U0ANA", fake_d7.otp_for(ANA))  # either form verifies it

    assert answer["response_action"] == "update"
    assert "is verified" in modal_text(answer["view"])


async def test_an_expired_code_is_not_sent_to_d7_and_not_counted(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy()) as app:
        modal = await click_verify(app, slack, "U0ANA")
        async with app.relay.storage.database.begin() as conn:  # 10 minutes pass
            await conn.execute(phone_verifications.update().values(otp_expires_at=utc_now() - timedelta(seconds=1)))
        answer = await submit_code(app, modal, "U0ANA", fake_d7.otp_for(ANA))
        row = await stored(app, "U0ANA")

    assert modal_text(answer["view"]) == (
        ":no_entry: That code has expired: click *Verify my phone* on the app's Home tab for a new one."
    )
    assert fake_d7.bodies(OTP_VERIFY) == []
    assert (row.phone, row.otp_id, row.failures) == (None, None, 0)


async def test_d7_failing_to_text_the_code_is_said_in_the_modal_and_nothing_is_kept(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    fake_d7.credit = False
    async with running_app(slack, fake_d7, tmp_path, policy=policy()) as app:
        modal = await click_verify(app, slack, "U0ANA")
        row = await stored(app, "U0ANA")

    assert modal_text(modal) == (
        ":no_entry: Could not text a code: the D7 account is out of credit: an admin must top it up. "
        "Nothing was verified."
    )
    assert "submit" not in modal
    assert row is None


async def test_d7_failing_to_check_a_code_is_an_error_on_the_field_and_verifies_nothing(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy()) as app:
        modal = await click_verify(app, slack, "U0ANA")
        fake_d7.enqueue(Reply(status=401, path=OTP_VERIFY))
        answer = await submit_code(app, modal, "U0ANA", fake_d7.otp_for(ANA))
        row = await stored(app, "U0ANA")

    assert answer == {
        "response_action": "errors",
        "errors": {
            "code": "Could not check the code: D7 refused the bot's API token: an admin must fix `D7_API_TOKEN`. "
            "Nothing was verified."
        },
    }
    assert (row.phone, row.failures, row.otp_id is not None) == (None, 0, True)  # not counted; the code still open


async def test_a_check_d7_answers_after_slacks_3_seconds_shows_checking_then_the_outcome(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy()) as app:
        modal = await click_verify(app, slack, "U0ANA")
        fake_d7.enqueue(503, 503, 503, 503)  # every try of the client's: longer than Slack waits
        answer = await submit_code(app, modal, "U0ANA", fake_d7.otp_for(ANA))
        assert answer["response_action"] == "update"
        assert modal_text(answer["view"]) == ":hourglass_flowing_sand: Checking the code with D7…"
        await app.settle(15)
        row = await stored(app, "U0ANA")

    later = slack.views[modal["id"]]
    assert later["callback_id"] == "verify_phone_code"  # the code's form again, to submit again
    assert (
        ":x: Could not check the code: D7 is unavailable just now: try again in a few minutes. Nothing was verified."
        in modal_text(later)
    )
    assert (row.phone, row.failures) == (None, 0)


async def test_in_a_dry_run_the_button_says_verifying_needs_d7_and_nothing_is_faked(
    slack: FakeSlack, tmp_path: Path
) -> None:
    async with running_app(slack, None, tmp_path, policy=policy()) as app:
        modal = await click_verify(app, slack, "U0ANA")
        row = await stored(app, "U0ANA")

    assert modal_text(modal) == (
        ":no_entry: Verifying a phone needs D7: the bot runs in dry run (`D7_API_TOKEN` is not set), so no code can "
        "be texted. Nothing was verified."
    )
    assert row is None


async def test_without_verified_phones_profile_phones_are_texted_and_app_home_shows_no_phone_section(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy().replace("verified_phones: true", "")) as app:
        home = await open_home(app, slack, "U0ANA")
        await alert(app)

    assert "Your phone" not in shown(home)
    assert texted(fake_d7) == [[ANA, CAL, DESK]]


# ------------------------------------------------------------ the policy keys


def test_verify_sender_must_name_an_sms_sender_and_verified_phones_needs_one() -> None:
    def problems(text: str) -> list[str]:
        with pytest.raises(PolicyFileError) as caught:
            parse_policy(__import__("yaml").safe_load(text))
        return [str(p) for p in caught.value.problems]

    assert problems(policy(", verify_sender: nope")) == ["defaults.verify_sender: unknown sender 'nope'"]
    assert problems(policy(", verify_sender: wa")) == [
        "defaults.verify_sender: 'wa' is not an SMS sender: codes are texted by SMS"
    ]
    whatsapp_only = policy().replace("  ops-sms: {via: sms, originator: OpsAlert}\n", "").replace("ops-sms", "wa")
    assert "defaults.verified_phones: needs an SMS sender to text the codes that verify phones" in problems(
        whatsapp_only
    )


async def test_verify_sender_names_the_originator_of_the_codes(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    named = policy(", verify_sender: codes").replace(
        "  ops-sms: {via: sms, originator: OpsAlert}\n",
        "  ops-sms: {via: sms, originator: OpsAlert}\n  codes: {via: sms, originator: Verify}\n",
    )
    async with running_app(slack, fake_d7, tmp_path, policy=named) as app:
        await click_verify(app, slack, "U0ANA")

    assert fake_d7.bodies(OTP_SEND)[0]["originator"] == "Verify"


# ------------------------------------------------------------ the D7 client's Verify calls, against the fake


async def test_d7_client_texts_a_code_and_checks_it_as_the_official_sdk_does(d7: D7Client, fake_d7: FakeD7) -> None:
    otp_id = await d7.send_code(ANA, "OpsAlert", "Code: {}", 300)

    assert fake_d7.bodies(OTP_SEND) == [
        {"originator": "OpsAlert", "recipient": ANA, "content": "Code: {}", "expiry": 300, "data_coding": "text"}
    ]
    code = fake_d7.otp_for(ANA)
    assert await d7.check_code(otp_id, wrong(code)) is False  # D7's INVALID_OTP_CODE
    assert await d7.check_code(otp_id, code) is True
    assert await d7.check_code(otp_id, code) is False  # a code is approved once
    assert fake_d7.bodies(OTP_VERIFY) == [
        {"otp_id": otp_id, "otp_code": wrong(code)},
        {"otp_id": otp_id, "otp_code": code},
        {"otp_id": otp_id, "otp_code": code},
    ]


async def test_d7_client_unicode_code_texts_go_as_unicode(d7: D7Client, fake_d7: FakeD7) -> None:
    await d7.send_code(ANA, "OpsAlert", "Ваш код: {}", 300)
    assert fake_d7.bodies(OTP_SEND)[0]["data_coding"] == "unicode"


async def test_d7_client_a_code_past_its_expiry_is_refused_by_d7(d7: D7Client, fake_d7: FakeD7) -> None:
    otp_id = await d7.send_code(ANA, "OpsAlert", "Code: {}", 60)
    fake_d7.advance(61)
    assert await d7.check_code(otp_id, fake_d7.otp_for(ANA)) is False


async def test_d7_client_an_unknown_otp_id_is_not_found(d7: D7Client) -> None:
    with pytest.raises(D7NotFoundError) as caught:
        await d7.check_code("0b6a3bd6-6a5e-4b4b-9a53-6d0a8f0c1d2e", "123456")
    assert caught.value.code == "MESSAGE_LOG_NOT_EXISTS"
    assert caught.value.http_status == 404


async def test_d7_client_a_malformed_otp_id_is_d7s_validation_error(d7: D7Client) -> None:
    with pytest.raises(D7ValidationError) as caught:
        await d7.check_code("not-an-otp-id", "123456")
    assert caught.value.errors == [FieldError(("body", "otp_id"), "value is not a valid uuid", "type_error.uuid")]


async def test_d7_client_a_wrong_token_is_refused_for_both_calls(make_d7: Any, fake_d7: FakeD7) -> None:
    client = make_d7(fake_d7.url, token="wrong-token")
    with pytest.raises(D7AuthError):
        await client.send_code(ANA, "OpsAlert", "Code: {}", 300)
    with pytest.raises(D7AuthError):
        await client.check_code("0b6a3bd6-6a5e-4b4b-9a53-6d0a8f0c1d2e", "123456")
    assert fake_d7.otps == {}


async def test_d7_client_refuses_on_its_side_what_d7_would_refuse(d7: D7Client, fake_d7: FakeD7) -> None:
    with pytest.raises(ValueError, match=r"needs \{\} where the code goes"):
        await d7.send_code(ANA, "OpsAlert", "Code without a place for it", 300)
    with pytest.raises(ValueError, match=r"E\.164"):
        await d7.send_code("4155550110", "OpsAlert", "Code: {}", 300)
    assert fake_d7.requests == []


@pytest.mark.parametrize(
    ("path", "body", "loc", "msg"),
    [
        (OTP_SEND, {"recipient": ANA, "content": "{}", "expiry": 60}, ["body", "originator"], "field required"),
        (
            OTP_SEND,
            {"originator": "X", "recipient": "nope", "content": "{}", "expiry": 60},
            ["body", "recipient"],
            "invalid mobile number",
        ),
        (
            OTP_SEND,
            {"originator": "X", "recipient": ANA, "content": "no code", "expiry": 60},
            ["body", "content"],
            "content must have a {} placeholder for the OTP code",
        ),
        (OTP_SEND, {"originator": "X", "recipient": ANA, "content": "{}"}, ["body", "expiry"], "field required"),
        (
            OTP_SEND,
            {"originator": "X", "recipient": ANA, "content": "{}", "expiry": 60, "tag": 1},
            ["body", "tag"],
            "extra fields not permitted",
        ),
        (OTP_VERIFY, {"otp_code": "123456"}, ["body", "otp_id"], "field required"),
        (OTP_VERIFY, {"otp_id": "0b6a3bd6-6a5e-4b4b-9a53-6d0a8f0c1d2e"}, ["body", "otp_code"], "field required"),
    ],
)
async def test_the_fake_d7_validates_verify_bodies_as_d7_does(
    fake_d7: FakeD7, path: str, body: dict[str, Any], loc: list[str], msg: str
) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(fake_d7.url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 422
    (detail,) = answer.json()["detail"]
    assert (detail["loc"], detail["msg"]) == (loc, msg)


# ------------------------------------------------------------ the store and the table


async def test_two_replicas_tell_a_person_once_an_hour_and_count_every_wrong_code(engine: AsyncEngine) -> None:
    one, two = (SqlPhoneVerifications(Database(engine)) for _ in range(2))
    at = utc_now()

    told = await asyncio.gather(*(s.take_reminder("U0ANA", at, REMIND_EVERY) for s in (one, two, one, two)))
    assert sorted(told) == [False, False, False, True]
    assert not await one.take_reminder("U0ANA", at + timedelta(minutes=59), REMIND_EVERY)
    assert await two.take_reminder("U0ANA", at + timedelta(hours=1), REMIND_EVERY)

    await one.code_sent("U0ANA", ANA, "otp-1", at, at + CODE_LIFETIME)
    tries = await asyncio.gather(*(s.wrong_code("U0ANA", "otp-1", at) for s in (one, two, one)))
    assert sorted(t.tries_left for t in tries if not t.blocked(at)) == [1, 2]
    blocked = await two.get("U0ANA")
    assert blocked is not None
    assert (blocked.blocked_until, blocked.otp_id, blocked.failures) == (at + BLOCK_FOR, None, 0)
    assert (await one.wrong_code("U0ANA", "otp-1", at)).failures == 0  # no open code: nothing counted
    assert await one.confirmed("U0ANA", "otp-1", at) is None

    await one.code_sent("U0ANA", ANA, "otp-2", at + BLOCK_FOR, at + BLOCK_FOR + CODE_LIFETIME)
    assert await two.confirmed("U0ANA", "otp-2", at + BLOCK_FOR) == ANA
    assert await one.verified(["U0ANA", "U0BEN"]) == {"U0ANA": ANA}
    kept = await one.get("U0ANA")
    assert kept is not None
    assert (kept.phone, kept.otp_id, kept.blocked_until, kept.failures) == (ANA, None, None, 0)


async def test_the_migrations_build_the_schema_the_code_declares(tmp_path: Path) -> None:
    """``schema.py`` (what the stores query) and the migrations (what a database has) agree on every table,
    ``phone_verifications`` (0015) included: no column, index or constraint in one and not the other."""
    engine = create_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
            columns = await conn.run_sync(lambda c: [col["name"] for col in sa.inspect(c).get_columns(TABLE)])
    finally:
        await engine.dispose()
    assert diff == []
    assert columns == [c.name for c in phone_verifications.columns]
