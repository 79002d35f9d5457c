"""WhatsApp templates: in the policy (checked), sent from ``/whatsapp template:<alias>`` with the exact D7 body on
the wire and the filled-in text in the thread, bad values refused before anything is sent, and the fake D7 as
strict as Meta about them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bot.domain.errors import PolicyFileError
from bot.domain.models import Origin, SendRequest, Surface, Via
from bot.domain.policy import parse_policy
from bot.domain.templates import TemplateParam, TemplateUse, fit_param, param_problem
from bot.sending.admission import Admission, Refused
from bot.slack.grammar import Compose, parse_command
from tests.fakes.d7 import TOKEN, FakeD7
from tests.fakes.slack import TEAM_ID, FakeSlack
from tests.harness import App, event_callback, running_app
from tests.memory import FakeDirectory
from tests.test_alerts import _make_due
from tests.test_compose import block, block_action, interact, opened_view, preview, submission
from tests.test_compose import state as compose_state

WA = "/whatsapp/v2/send"

POLICY = """
version: 1
defaults: {region: US, countries: [US, AE]}  # the customers are in the UAE
senders:
  support-wa:
    via: whatsapp
    originator: "+971501234567"
    templates:
      shift_alert:
        template_id: shift_alert_v2
        language: en
        params: [{name: title, description: what happened}, {name: link, description: where to look}]
        text: "Alert: {{1}} - details {{2}}"
      follow_up: {template_id: follow_up_v1, language: en, params: [ticket], text: "About your ticket {{1}}"}
  sales-wa:
    via: whatsapp
    originator: "+971501234567"
    templates:
      hello: {template_id: hello_v1, language: en_US, text: "Hello from Acme"}
rules:
  - name: support
    slack_channels: [C0OPS]
    users: ["*"]
    senders: [support-wa]
    recipients: ["*"]
    templates: [shift_alert]
"""


def policy_data(**sender: Any) -> dict[str, Any]:
    wa = {"via": "whatsapp", "originator": "+971501234567"} | sender
    return {"version": 1, "senders": {"wa": wa}}


# ---------------------------------------------------------------- the policy


def test_templates_are_read_with_their_parameters_in_order() -> None:
    policy = parse_policy(yaml.safe_load(POLICY))
    template = policy.senders["support-wa"].templates["shift_alert"]
    assert (template.template_id, template.language) == ("shift_alert_v2", "en")
    assert template.params == [
        TemplateParam(name="title", description="what happened"),
        TemplateParam(name="link", description="where to look"),
    ]
    assert template.render(("DB down", "https://status.example.com"), "shift_alert") == (
        "Alert: DB down - details https://status.example.com"
    )
    assert policy.senders["support-wa"].templates["follow_up"].params == [TemplateParam(name="ticket")]


@pytest.mark.parametrize(
    ("sender", "problem"),
    [
        (
            {"templates": {"t": {"template_id": "x", "language": "en", "params": ["a"], "text": "Hi {{2}}"}}},
            "senders.wa.templates.t: text must use the placeholders {{1}}, one for each of params",
        ),
        (
            {"templates": {"t": {"template_id": "x", "language": "English"}}},
            "senders.wa.templates.t.language: 'English' is not a WhatsApp language code",
        ),
        ({"templates": {"t": {"language": "en"}}}, "senders.wa.templates.t.template_id: required"),
        (
            {"via": "sms", "originator": "Ops", "templates": {"t": {"template_id": "x", "language": "en"}}},
            "senders.wa.templates: only WhatsApp senders have templates",
        ),
    ],
)
def test_a_bad_template_is_named_by_its_path(sender: dict[str, Any], problem: str) -> None:
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(policy_data(**sender))
    assert problem in str(caught.value)


def test_a_rule_may_only_name_templates_of_its_senders() -> None:
    data = yaml.safe_load(POLICY)
    data["rules"][0]["templates"] = ["shift_alert", "hello"]
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(data)
    assert "rules[0].templates[1]: no sender of this rule has a template 'hello'" in str(caught.value)


def test_whatsapp_parameters_follow_metas_rules() -> None:
    assert param_problem("title", "DB down") is None
    assert param_problem("title", "two\nlines") == (
        "the template parameter 'title' has a line break or tab; WhatsApp allows neither in a parameter"
    )
    assert param_problem("title", "a     b") == (
        "the template parameter 'title' has more than 4 spaces in a row; WhatsApp allows at most 4"
    )
    assert param_problem("title", " ") == "the template parameter 'title' is empty"
    assert param_problem("title", "x" * 1025) == (
        "the template parameter 'title' has 1025 characters; WhatsApp allows at most 1024"
    )
    assert fit_param("CPU\nat 97%\t\ton db-1       now") == "CPU at 97%  on db-1    now"
    assert fit_param("x" * 2000) == "x" * 1023 + "…"
    assert fit_param("\n") == "-"


# ---------------------------------------------------------------- the grammar


def test_the_template_grammar_takes_the_alias_recipients_and_values_in_order() -> None:
    parsed = parse_command("template:shift_alert +971501234568, <@U0ALICE|alice> | DB down |  https://x.example ")
    assert isinstance(parsed, Compose)
    assert parsed.template == TemplateUse("shift_alert", ("DB down", "https://x.example"))
    assert [r.value for r in parsed.recipients] == ["+971501234568", "U0ALICE"]
    bare = parse_command("template:hello +971501234568")
    assert isinstance(bare, Compose)
    assert bare.template == TemplateUse("hello", ())


# ---------------------------------------------------------------- end to end


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path, policy=POLICY) as running:
        yield running


async def test_a_template_send_puts_the_exact_body_on_the_wire_and_the_filled_in_text_in_the_channel(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await app.command("/whatsapp", "template:shift_alert +971501234568 | DB down | https://status.example.com")
    await app.settle()

    (body,) = fake_d7.bodies(WA)
    (message,) = body["messages"]
    assert message["originator"] == "+971501234567"
    assert message["content"] == {
        "message_type": "TEMPLATE",
        "template": {
            "template_id": "shift_alert_v2",
            "language": "en",
            "body_parameter_values": {"0": "DB down", "1": "https://status.example.com"},
        },
    }
    assert [r["recipient"] for r in message["recipients"]] == ["+971501234568"]
    (announcement,) = [p for p in slack.of("chat.postMessage") if not p.get("thread_ts")]
    assert "is sending the WhatsApp template `shift_alert`" in announcement["blocks"][0]["text"]["text"]
    assert announcement["blocks"][1]["elements"][0]["elements"][0]["text"] == (
        "Alert: DB down - details https://status.example.com"
    )
    (result,) = [p for p in slack.of("chat.postMessage") if p.get("thread_ts")]
    assert "Accepted by D7" in result["text"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "template:shift_alert +971501234568 | DB down",
            "• the template 'shift_alert' takes 2 parameters (title, link); you gave 1",
        ),
        (
            "template:shift_alert +971501234568 | DB     down | https://x",
            "• the template parameter 'title' has more than 4 spaces in a row; WhatsApp allows at most 4",
        ),
        (
            "template:nope +971501234568 | x",
            "• there is no WhatsApp template 'nope' (templates you may use here: shift_alert)",
        ),
    ],
)
async def test_bad_template_values_are_refused_before_anything_is_sent(
    app: App, slack: FakeSlack, fake_d7: FakeD7, text: str, problem: str
) -> None:
    await app.command("/whatsapp", text)
    await app.settle()

    assert fake_d7.requests == []
    (answer,) = slack.responses["cmd"]
    assert answer["blocks"][1]["text"]["text"] == problem
    assert slack.of("users.info") == []


async def test_a_rule_that_does_not_list_a_template_refuses_it(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    await app.command("/whatsapp", "template:follow_up +971501234568 | T-42")
    await app.settle()

    assert fake_d7.requests == []
    (answer,) = slack.responses["cmd"]
    assert answer["blocks"][1]["text"]["text"] == (
        "• you may not use the template 'follow_up' from <#C0OPS> (templates you may use here: shift_alert)"
    )


async def test_help_lists_the_templates_with_their_parameters(app: App, slack: FakeSlack) -> None:
    response = await app.command("/whatsapp", "help")
    text = response.json()["text"]
    assert (
        "• `template:shift_alert <recipients> | <title> | <link>` (support-wa) “Alert: {{1}} - details {{2}}”" in text
    )
    assert "follow_up" not in text  # the rule for this channel narrows its sender's templates to shift_alert
    assert "hello" not in text  # no rule for this channel has sales-wa


# ---------------------------------------------------------------- the fake D7 is as strict as Meta


def template_body(template: dict[str, Any], originator: str = "+971501234567") -> dict[str, Any]:
    content = {"message_type": "TEMPLATE", "template": template}
    recipient = {"recipient": "+971501234568", "recipient_type": "individual"}
    return {"messages": [{"originator": originator, "content": content, "recipients": [recipient]}]}


@pytest.mark.parametrize(
    ("template", "loc"),
    [
        ({"template_id": "unknown", "language": "en"}, ["template_id"]),
        ({"template_id": "follow_up_v1", "body_parameter_values": {"0": "T-1"}}, ["language"]),
        ({"template_id": "follow_up_v1", "language": "en", "body_parameter_values": {}}, ["body_parameter_values"]),
        (
            {"template_id": "follow_up_v1", "language": "en", "body_parameter_values": {"0": "two\nlines"}},
            ["body_parameter_values", "0"],
        ),
    ],
)
def test_the_fake_d7_refuses_template_bodies_meta_would_refuse(
    fake_d7: FakeD7, template: dict[str, Any], loc: list[str]
) -> None:
    answer = httpx.post(
        f"{fake_d7.url}{WA}", json=template_body(template), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code == 422
    (detail,) = answer.json()["detail"]
    assert detail["loc"] == ["body", "messages", 0, "content", "template", *loc]


# ---------------------------------------------------------------- alerts over WhatsApp

ALERT_POLICY = """
version: 1
defaults: {region: US, countries: [US, AE]}  # the customers are in the UAE
senders:
  support-wa:
    via: whatsapp
    originator: "+971501234567"
    templates:
      shift_alert: {template_id: shift_alert_v2, language: en, params: [title, link], text: "Alert: {{1}} - details {{2}}"}
alerts:
  - name: pages
    slack_channels: [C0ALERTS]
    match: "(?i)critical"
    from: any
    sender: support-wa
    to: ["+971501234568"]
    whatsapp_template: shift_alert
    params: {title: "{text}", link: "{channel}"}
"""


def test_a_whatsapp_alert_rule_without_a_template_is_refused_by_check() -> None:
    data = yaml.safe_load(ALERT_POLICY)
    del data["alerts"][0]["whatsapp_template"]
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(data)
    assert (
        "alerts[0].whatsapp_template: a WhatsApp alert needs an approved template: WhatsApp delivers free text only "
        "to people who wrote in the last 24 hours (templates of 'support-wa': shift_alert)"
    ) in str(caught.value)


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"title": "{text}", "link": "{nope}"}, "alerts[0].params.link: unknown placeholder {nope}"),
        (
            {"title": "{text}", "link": "x", "extra": "y"},
            "alerts[0].params.extra: template 'shift_alert' has no parameter",
        ),
    ],
)
def test_a_whatsapp_alert_rules_params_are_checked(params: dict[str, str], problem: str) -> None:
    data = yaml.safe_load(ALERT_POLICY)
    data["alerts"][0]["params"] = params
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(data)
    assert problem in str(caught.value)


def test_a_template_parameter_named_like_an_alert_field_is_filled_from_it() -> None:
    data = yaml.safe_load(ALERT_POLICY)
    del data["alerts"][0]["params"]
    assert parse_policy(data).alerts[0].params == {"title": "{title}", "link": "{link}"}


async def test_a_whatsapp_alert_sends_its_template_with_the_alerts_fields(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.add_channel("C0ALERTS", name="alerts")
    message = {
        "type": "message",
        "user": "U0ALICE",
        "text": "CRITICAL: db-1 down\nsince 03:12\t\tsee runbook",
        "ts": "1700000001.000100",
    }
    async with running_app(slack, fake_d7, tmp_path, policy=ALERT_POLICY) as app:
        await app.event(event_callback(message, channel="C0ALERTS"))
        await app.settle()

    (body,) = fake_d7.bodies(WA)
    assert body["messages"][0]["content"] == {
        "message_type": "TEMPLATE",
        "template": {
            "template_id": "shift_alert_v2",
            "language": "en",
            # No line breaks or tabs in a parameter: made spaces (at most 4 in a row).
            "body_parameter_values": {"0": "CRITICAL: db-1 down since 03:12  see runbook", "1": "#alerts"},
        },
    }
    (reply,) = [p for p in slack.of("chat.postMessage") if p.get("thread_ts") == message["ts"]]
    assert "Alert: CRITICAL: db-1 down since 03:12  see runbook - details #alerts" in str(reply["blocks"])


async def test_a_whatsapp_alert_rules_summary_goes_in_the_same_template(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.add_channel("C0ALERTS", name="alerts")
    policy = ALERT_POLICY.replace(
        '    params: {title: "{text}", link: "{channel}"}',
        '    params: {title: "{text}", link: "{channel}"}\n    max_per_phone: {count: 1, per: 1h}',
    )
    async with running_app(slack, fake_d7, tmp_path, policy=policy) as app:
        for i in (1, 2):  # the first texted, the second held for the summary at the end of the hour
            message = {
                "type": "message",
                "user": "U0ALICE",
                "text": f"CRITICAL: db-{i} down",
                "ts": f"170000000{i}.000100",
            }
            await app.event(event_callback(message, channel="C0ALERTS"))
            await app.settle()
        await _make_due(app)
        await app.settle()

    first, summary = fake_d7.bodies(WA)
    assert first["messages"][0]["content"]["template"]["body_parameter_values"] == {
        "0": "CRITICAL: db-1 down",
        "1": "#alerts",
    }
    template = summary["messages"][0]["content"]["template"]
    assert template["template_id"] == "shift_alert_v2"
    values = template["body_parameter_values"]
    assert values["0"].startswith("+1 more alert in #alerts since ")
    assert values["0"].endswith("CRITICAL: db-2 down")
    assert "\n" not in values["0"]
    assert values["1"] == "#alerts"


# ---------------------------------------------------------------- the compose form


def form_state(
    *, kind: str, sender: str = "support-wa", numbers: str = "+971501234568", params: tuple[str, ...] = ()
) -> dict[str, Any]:
    values = compose_state(via="whatsapp", sender=None, numbers=numbers)
    chosen = "free" if kind == "free" else f"t:{kind}"
    values["kind"] = {"kind": {"type": "static_select", "selected_option": {"value": chosen}}}
    block = "sender-whatsapp" if kind == "free" else f"sender-whatsapp-t-{kind}"
    values[block] = {"sender": {"type": "static_select", "selected_option": {"value": sender}}}
    for i, value in enumerate(params):
        values[f"param-{kind}-{i}"] = {"param": {"type": "plain_text_input", "value": value}}
    return values


async def test_the_form_offers_templates_shows_one_input_per_parameter_and_a_live_preview(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    slack.add_channel("C0OPS", users=["U0ALICE"])
    await app.command("/whatsapp", "")
    opened = await opened_view(app, slack)
    view = opened["view"]
    kind = block(view, "kind")
    assert [o["value"] for o in kind["element"]["options"]] == ["free", "t:shift_alert"]  # what 'support' allows
    assert block(view, "message")  # free text first

    await interact(app, block_action(view, form_state(kind="shift_alert"), "kind"))
    await app.settle()
    view = slack.views[view["id"]]
    labels = [b["label"]["text"] for b in view["blocks"] if b.get("block_id", "").startswith("param-")]
    assert labels == ["{{1}} title", "{{2}} link"]
    assert block(view, "param-shift_alert-0")["hint"]["text"] == "what happened"
    assert not any(b.get("block_id") == "message" for b in view["blocks"])
    assert preview(view).startswith("Preview: Alert: {{title}} - details {{link}}\n")

    await interact(app, block_action(view, form_state(kind="shift_alert", params=("DB down",)), "param"))
    await app.settle()
    view = slack.views[view["id"]]
    assert preview(view) == (
        "Preview: Alert: DB down - details {{link}}\n33 characters · WhatsApp template · 1 recipient"
    )

    bad = await interact(app, submission(view, form_state(kind="shift_alert", params=("DB\tdown", "https://x"))))
    assert bad.json() == {
        "response_action": "errors",
        "errors": {
            "param-shift_alert-0": "the template parameter 'title' has a line break or tab; WhatsApp allows neither in a parameter"
        },
    }
    ok = await interact(app, submission(view, form_state(kind="shift_alert", params=("DB down", "https://x"))))
    assert ok.status_code == 200
    assert ok.content in (b"", b"{}")
    await app.settle()
    records = await app.relay.storage.sends.audit()
    assert [(r.state.value, r.refusal) for r in records] == [("accepted", None)]
    (body,) = fake_d7.bodies(WA)
    assert body["messages"][0]["content"]["template"] == {
        "template_id": "shift_alert_v2",
        "language": "en",
        "body_parameter_values": {"0": "DB down", "1": "https://x"},
    }
    (announcement,) = [p for p in slack.of("chat.postMessage") if not p.get("thread_ts")]
    assert announcement["blocks"][1]["elements"][0]["elements"][0]["text"] == "Alert: DB down - details https://x"


# ---------------------------------------------------------------- the 24-hour window

SECRET = "report-path-secret-0123456789abcdef"


async def test_free_text_failing_for_the_closed_window_offers_the_templates_and_a_button_to_send_one(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.add_channel("C0OPS", users=["U0ALICE"])
    fake_d7.window_closed = {"+971501234568"}
    async with running_app(
        slack, fake_d7, tmp_path, policy=POLICY, PUBLIC_URL="https://relay.example.com", D7_REPORT_SECRET=SECRET
    ) as app:
        fake_d7.report_to = app.url
        await app.command("/whatsapp", "+971501234568 +971501234569 your ticket T-42 is solved")
        await app.settle()
        for _ in range(100):  # the report comes after the send's answer
            if fake_d7.reports_posted:
                break
            await asyncio.sleep(0.05)
        await app.settle()
        assert [r["answered"] for r in fake_d7.reports_posted] == [200]

        replies = [p for p in slack.of("chat.postMessage") if p.get("thread_ts") and "not delivered" in p["text"]]
        (reply,) = replies
        texts = [b["text"]["text"] for b in reply["blocks"] if b["type"] == "section"]
        assert texts[0].startswith(
            ":rotating_light: <@U0ALICE> your WhatsApp message was not delivered to +971 50 ••• 4568: :x: failed ("
        )
        assert "131047: Re-engagement message" in texts[0]  # D7's own words kept
        assert texts[1] == (
            ":hourglass: WhatsApp's 24-hour window is closed for +971 50 ••• 4568: they have not written to "
            "+971501234567 in the last 24 hours, so WhatsApp delivers only approved templates. "
            "Send one instead: `shift_alert`."
        )
        (button,) = reply["blocks"][-1]["elements"]
        (first,) = await app.relay.storage.sends.audit()
        assert json.loads(button["value"]) == {"id": first.id, "t": "shift_alert"}  # no numbers for all to read

        # A form for free text to that number now warns that it will not reach them.
        await app.command("/whatsapp", "")
        form = (await opened_view(app, slack))["view"]
        typed = form_state(kind="free", numbers="+971 50 123 4568, +971501234569")
        await interact(app, block_action(form, typed, "numbers"))
        await app.settle()
        assert preview(slack.views[form["id"]]).endswith(
            "\n⚠ Free text did not reach +971 50 ••• 4568 in the last 24 hours: WhatsApp's window is closed until "
            "they write to you. Choose a template under Message type."
        )

        # The button opens the form for that template, to those not reached, answering in the same thread.
        click = {
            "type": "block_actions",
            "team": {"id": TEAM_ID},
            "user": {"id": "U0ALICE"},
            "api_app_id": "A0APP",
            "trigger_id": "1337.9.tmpl",
            "channel": {"id": "C0OPS"},
            "message": {"ts": "1700000009.000100", "thread_ts": reply["thread_ts"]},
            "container": {"type": "message", "channel_id": "C0OPS", "message_ts": "1700000009.000100"},
            "actions": [{"action_id": "template_instead", "block_id": "b", "type": "button", "value": button["value"]}],
        }
        # Anyone in the channel may click; only the sender (or an admin) gets the numbers filled in.
        await interact(app, click | {"user": {"id": "U0BOB"}, "trigger_id": "1337.9.bob"})
        bobs = (await opened_view(app, slack, 2))["view"]
        assert "initial_value" not in block(bobs, "numbers")["element"]
        await interact(app, click)
        opened = await opened_view(app, slack, 3)
        view = opened["view"]
        assert [b["block_id"] for b in view["blocks"] if b.get("block_id", "").startswith("param-")] == [
            "param-shift_alert-0",
            "param-shift_alert-1",
        ]
        assert block(view, "numbers")["element"]["initial_value"] == "+971501234568"
        assert block(view, "kind")["element"]["initial_option"]["value"] == "t:shift_alert"
        ok = await interact(app, submission(view, form_state(kind="shift_alert", params=("T-42 solved", "https://x"))))
        assert ok.status_code == 200
        await app.settle()
        records = await app.relay.storage.sends.audit()

        # The same button in an ephemeral message (told privately when the bot cannot post in the channel): Slack
        # sends no `message`. The form opens all the same, answering in the send's own thread (issue 27).
        ephemeral = {k: v for k, v in click.items() if k != "message"} | {
            "trigger_id": "1337.9.ephemeral",
            "container": {"type": "message", "channel_id": "C0OPS", "message_ts": "1700000010.1", "is_ephemeral": True},
        }
        await interact(app, ephemeral)
        again = (await opened_view(app, slack, 4))["view"]
        assert block(again, "numbers")["element"]["initial_value"] == "+971501234568"
        assert json.loads(again["private_metadata"])["thread_ts"] == reply["thread_ts"]

        # And in the app's DM (where the story goes when neither the channel nor an ephemeral can take it): its
        # channel is the DM, which no rule names; the form answers in the send's own channel and thread.
        dm = click | {
            "trigger_id": "1337.9.dm",
            "channel": {"id": "D0ALICE"},
            "message": {"ts": "1700000011.000100"},
            "container": {"type": "message", "channel_id": "D0ALICE", "message_ts": "1700000011.000100"},
        }
        await interact(app, dm)
        in_dm = (await opened_view(app, slack, 5))["view"]
        assert block(in_dm, "numbers")["element"]["initial_value"] == "+971501234568"
        context = json.loads(in_dm["private_metadata"])
        assert (context["channel_id"], context["thread_ts"]) == ("C0OPS", reply["thread_ts"])

    assert [r.state.value for r in records] == ["accepted", "accepted"]
    assert records[1].request.origin.thread_ts == reply["thread_ts"]
    template_body = fake_d7.bodies(WA)[-1]["messages"][0]
    assert template_body["content"]["message_type"] == "TEMPLATE"
    assert [r["recipient"] for r in template_body["recipients"]] == ["+971501234568"]


# ---------------------------------------------------------------- which rule, which sender


def request(text: str, *, sender: str | None = None, user: str = "U0ALICE") -> SendRequest:
    parsed = parse_command(text)
    assert isinstance(parsed, Compose)
    return SendRequest(
        via=Via.WHATSAPP,
        origin=Origin(Surface.COMMAND, "T0TEAM", user, "C0OPS"),
        recipients=parsed.recipients,
        text=parsed.text,
        idempotency_key=text,
        sender=sender,
        template=parsed.template,
    )


async def test_a_template_is_allowed_by_the_rule_that_allows_it_even_when_an_earlier_rule_does_not() -> None:
    data = yaml.safe_load(POLICY)
    follow_ups = data["rules"][0] | {"name": "support follow-ups", "templates": ["follow_up"]}
    data["rules"] = [follow_ups, data["rules"][0]]  # the first rule for C0OPS does not allow shift_alert
    admission = Admission(parse_policy(data), FakeDirectory())

    send = await admission.admit("s1", request("template:shift_alert +971501234568 | DB down | https://x"))
    assert (send.rule, send.text) == ("support", "Alert: DB down - details https://x")
    other = await admission.admit("s2", request("template:follow_up +971501234568 | T-1"))
    assert other.rule == "support follow-ups"


async def test_a_template_request_naming_a_sender_the_policy_no_longer_has_is_refused() -> None:
    admission = Admission(parse_policy(yaml.safe_load(POLICY)), FakeDirectory())
    with pytest.raises(Refused) as refused:
        await admission.admit("s1", request("template:shift_alert +971501234568 | a | b", sender="gone-wa"))
    assert refused.value.refusal.problems == ("unknown sender 'gone-wa'",)
