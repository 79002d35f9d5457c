"""Alerts from the tools people use, each in its own format, end to end: the post as Slack delivers it, the exact
SMS, and its resolved form ending the alert, told in the alert's own thread (issue 27).

Every payload is in ``tests/payloads/tools/``, and ``tests/payloads/tools/SOURCES.md`` says where each one comes
from: the tool's own code, templates or tests (repository, path, commit, test name), how it was rendered where a
template had to be filled in, and which are reconstructions (Datadog, PagerDuty and Opsgenie publish no Slack
payload anywhere we could find; their files say ``reconstructed``). The policy's rules are README's table.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import App, event_callback, running_app

SMS = "/messages/v1/send"
TOOLS = Path(__file__).parent / "payloads" / "tools"
PHONE = "+14155550100"

# One rule per tool, in a channel of its own: the `match` and `resolve` README recommends for it.
POLICY = r"""
version: 1
defaults: {region: US}
senders:
  ops-sms: {via: sms, originator: OpsAlert}
alerts:
  - {name: grafana, slack_channels: [C0GRAFANA], match: '(?i)\[firing', resolve: '(?i)^\[resolved\]',
     sender: ops-sms, to: ['+14155550100']}
  - {name: grafana legacy, slack_channels: [C0LEGACY], match: '(?i)^\[alerting\]', resolve: '(?i)^\[ok\]',
     sender: ops-sms, to: ['+14155550100']}
  - {name: alertmanager, slack_channels: [C0AM], match: '(?i)\[firing', resolve: '(?i)^\[resolved\]',
     sender: ops-sms, to: ['+14155550100']}
  - {name: sentry, slack_channels: [C0SENTRY], match: '.',
     resolve: '(?i)^resolved:|issue resolved by|marked \S+ as resolved', resolve_in: text,
     sender: ops-sms, to: ['+14155550100']}
  - {name: datadog, slack_channels: [C0DATADOG], match: '(?i)\[(re-)?triggered\]|\[warn\]',
     resolve: '(?i)\[recovered\]', sender: ops-sms, to: ['+14155550100']}
  - {name: pagerduty, slack_channels: [C0PD], match: '(?i)status:\s*triggered', resolve: '(?i)status:\s*resolved',
     resolve_in: text, sender: ops-sms, to: ['+14155550100']}
  - {name: opsgenie, slack_channels: [C0OPSGENIE], match: '(?i)status:\s*open', resolve: '(?i)status:\s*closed',
     resolve_in: text, sender: ops-sms, to: ['+14155550100']}
  - {name: new relic, slack_channels: [C0NEWRELIC], match: '.', sender: ops-sms, to: ['+14155550100']}
  - {name: cloudwatch, slack_channels: [C0AWS],
     match: '(?i)(state is now|changed state to|current state:)\s*alarm',
     resolve: '(?i)(state is now|changed state to|current state:)\s*ok', resolve_in: text,
     sender: ops-sms, to: ['+14155550100']}
  - {name: github, slack_channels: [C0GITHUB], match: '(?i)\bfailed\b|build result: failure',
     resolve: '(?i)\bsucceeded\b|build result: success', sender: ops-sms, to: ['+14155550100']}
  - {name: circleci, slack_channels: [C0CIRCLECI], match: '(?i)job failed', resolve: '(?i)job succeeded',
     sender: ops-sms, to: ['+14155550100']}
"""
CHANNELS = ("C0GRAFANA", "C0LEGACY", "C0AM", "C0SENTRY", "C0DATADOG", "C0PD", "C0OPSGENIE", "C0NEWRELIC", "C0AWS")


def tool(name: str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads((TOOLS / f"{name}.json").read_text())
    message.pop("channel", None)  # posted in the tool's channel of the test policy
    return message


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    for channel in (*CHANNELS, "C0GITHUB", "C0CIRCLECI"):
        slack.add_channel(channel, name=channel.lower())
    return slack


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path, policy=POLICY) as running:
        yield running


async def post(app: App, message: dict[str, Any], channel: str) -> None:
    assert (await app.event(event_callback(message, channel=channel))).status_code == 200
    await app.settle()


def texts(fake_d7: FakeD7) -> list[str]:
    out = []
    for body in fake_d7.bodies(SMS):
        (message,) = body["messages"]
        assert message["recipients"] == [PHONE]
        assert message["data_coding"] == "text"  # GSM-7: no emoji, no typographic character made it UCS-2
        out.append(message["content"])
    return out


def stamp(ts: str) -> str:
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Case:
    firing: str  # the payload file
    channel: str
    sms: str  # exactly what the phone gets
    resolved: str  # the resolved form's payload file
    resolved_sms: str


HIGHCPU = (
    "[FIRING:1] HighCPU Infra (db-1 critical)\nCPU usage on db-1 is above 90%\nCPU usage has been above 90% for 5 minutes.\n"
    "Value: A=97.3, C=1..."  # the summary and description first; the labels and links are what did not fit
)
CASES = {
    # Grafana's unified alerting, its production template (rendered) and its own test's expected body (verbatim).
    # grafana/alerting@783ce04 templates/default_template.go (DefaultTemplateString), rendered; receivers/slack/v1.
    "grafana": Case(
        "grafana-firing-highcpu",
        "C0GRAFANA",
        HIGHCPU,
        "grafana-resolved-highcpu",
        "RESOLVED: HighCPU Infra (db-1 critical)",
    ),
    # grafana/alerting@783ce04 receivers/slack/v1/slack_test.go TestNotify_PostMessage, "Message is sent with a
    # single alert and a GeneratorURL" (verbatim); its resolved form from oncall_test.go and opsgenie_test.go.
    "grafana test": Case(
        "grafana-firing",
        "C0GRAFANA",
        "[FIRING:1]  (val1)\nValue: [no value]\nLabels:\n- alertname = alert1\n- lbl1 = val1\nAnnotations:\n"
        "- ann1 = annv1",  # the Source/Silence/Dashboard/Panel links left out to fit
        "grafana-resolved",
        "RESOLVED: (val1)",
    ),
    # grafana/grafana pkg/services/alerting/notifiers/slack.go (8.x-10.x) and eval_context.go, built as the code does.
    "grafana legacy": Case(
        "grafana-legacy-firing",
        "C0LEGACY",
        "[Alerting] HighCPU\nCPU usage on db-1 is above 90%\ndb-1: 97.3",
        "grafana-legacy-resolved",
        "RESOLVED: HighCPU",  # "[OK] HighCPU" ends "[Alerting] HighCPU"
    ),
    # The same notifier in Grafana 7.x: the title also as the body's `text`.
    "grafana legacy 7": Case(  # the title also as the message's text: said once
        "grafana-legacy-firing-v7",
        "C0LEGACY",
        "[Alerting] HighCPU\nCPU usage on db-1 is above 90%\ndb-1: 97.3",
        "grafana-legacy-resolved-v7",
        "RESOLVED: HighCPU",
    ),
    # The default template has no text: the title is all there is (README says how to add the summary).
    # prometheus/alertmanager v0.34.0 template/default.tmpl (slack.default.*) and notify/slack/slack.go, rendered.
    "alertmanager": Case(
        "alertmanager-firing",
        "C0AM",
        "[FIRING:1] HighCPU (db-1 critical)",
        "alertmanager-resolved",
        "RESOLVED: HighCPU (db-1 critical)",
    ),
    # v0.32.0+ `update_message: true` (notify/slack/slack.go): chat.postMessage, then chat.update of that post.
    "alertmanager update_message": Case(  # resolved by editing the firing post (chat.update): message_changed
        "alertmanager-firing-bot",
        "C0AM",
        "[FIRING:1] HighCPU (db-1 critical)",
        "alertmanager-resolved-edit",
        "RESOLVED: HighCPU (db-1 critical)",
    ),
    # The details in the attachment's blocks; Slack's date token as a date; resolved in the alert's thread.
    # getsentry/sentry message_builder/incidents.py, utils/notifications.py (send_incident_alert_notification);
    # BuildIncidentAttachmentTest::test_metric_value, tests/sentry/incidents/action_handlers/test_slack.py threading.
    "sentry metric": Case(
        "sentry-metric-firing",
        "C0SENTRY",
        "Critical: Too many errors\n5000 events in the last 10 minutes\nStarted: 2025-12-06 at 05:48 UTC",
        "sentry-metric-resolved",
        "RESOLVED: Too many errors",
    ),
    # getsentry/sentry@4209990 test_slack_notify_service_action.py::test_after_with_threads (the post) and
    # webhooks/action.py replace_original, test_status.py::test_resolve_issue (the edit).
    "sentry issue, resolved in slack": Case(  # Sentry rewrites its post: "Issue resolved by @…"
        "sentry-issue-firing",
        "C0SENTRY",
        "Hello world\nfoo.bar\nState: New   First Seen: Just now\nProject: bar    Alert: Test Alert    Short ID: BAR-1",
        "sentry-issue-resolved-edit",
        "RESOLVED: Hello world",
    ),
    # getsentry/sentry@07591d5 integrations/slack/service.py: an activity in the thread.
    "sentry issue, resolved in sentry": Case(  # Sentry says so in the alert's thread
        "sentry-issue-firing",
        "C0SENTRY",
        "Hello world\nfoo.bar\nState: New   First Seen: Just now\nProject: bar    Alert: Test Alert    Short ID: BAR-1",
        "sentry-issue-resolved-thread",
        "RESOLVED: Hello world",
    ),
    # RECONSTRUCTED: Datadog publishes no Slack payload; its titles as its webhooks and Grafana OnCall #3158 show.
    "datadog": Case(
        "datadog-firing-reconstructed",
        "C0DATADOG",
        "[Triggered] RMC Dev - Web ASG At Max Capacity\nWeb Auto Scaling Group has reached maximum capacity.\n\n"
        "aws.autoscaling.group_in_service_instances over...",
        "datadog-resolved-reconstructed",
        "RESOLVED: RMC Dev - Web ASG At Max Capacity",
    ),
    # RECONSTRUCTED: PagerDuty publishes no Slack payload; its Slack events as its Terraform docs list them.
    "pagerduty": Case(  # a field's label and value on one line; the title once
        "pagerduty-firing-reconstructed",
        "C0PD",
        "[#1234] High CPU on web-1 (https://acme.pagerduty.com/incidents/Q1EXAMPLE0001)\nStatus: Triggered\n"
        "Urgency: High\nService: Checkout API\nAssigned: @U0ALICE",
        "pagerduty-resolved-edit-reconstructed",
        "RESOLVED: [#1234] High CPU on web-1",
    ),
    # RECONSTRUCTED: Opsgenie publishes no Slack payload; the alert's values are its docs' example.
    "opsgenie": Case(
        "opsgenie-firing-reconstructed",
        "C0OPSGENIE",
        "#23: test alert\nPriority: P1\nStatus: Open\nTags: tag1, tag2",
        "opsgenie-resolved-edit-reconstructed",
        "RESOLVED: #23: test alert",
    ),
    # aws/serverless-application-model@cd088d1 examples/apps/cloudwatch-alarm-to-slack/index.js, with the
    # ServerCpuTooHigh sample of the CloudWatch docs.
    "cloudwatch, aws blueprint": Case(  # "<alarm> state is now ALARM: <reason>", the reason differing when OK
        "aws-chatbot-firing-lambda-blueprint",
        "C0AWS",
        "ServerCpuTooHigh state is now ALARM: Threshold Crossed: 1 out of the last 1 datapoints "
        "[99.50160229693434 (02/10/19 16:59:00)] was greater than the...",
        "aws-chatbot-resolved-lambda-blueprint",
        "RESOLVED: ServerCpuTooHigh",
    ),
    # 8398a7/action-slack@59b127a src/client.ts, fields.ts; its tests' values (`is failure` / `is success`).
    "github action-slack": Case(  # ":no_entry:" is not a reason for UCS-2
        "github-firing",
        "C0GITHUB",
        "Failed GitHub Actions\nrepo: 8398a7/action-slack\ncommit: b24f03a3",
        "github-resolved",
        "RESOLVED: GitHub Actions",
    ),
    # slackapi/slack-github-action@faf8f8f docs/sending-data-slack-incoming-webhook.md, the documented payload.
    "github slack-github-action": Case(
        "github-firing-slackapi",
        "C0GITHUB",
        "GitHub Action build result: failure\nhttps://github.com/acme/payments-api/commit/"
        "9c41d7e2b0a35f68c1d24e7a90b3f5c86d2e1a47",
        "github-resolved-slackapi",
        "RESOLVED: GitHub Action build result",
    ),
    # CircleCI-Public/slack-orb@0985c45 src/message_templates/basic_fail_1.json, basic_success_1.json, rendered.
    "circleci": Case(  # the header's ":red_circle:" and the empty "Mentions:" left out
        "circleci-firing",
        "C0CIRCLECI",
        "Job Failed.\nJob: build-and-test\nProject: payments-api\nBranch: main\nAuthor: jdoe",
        "circleci-resolved",
        "RESOLVED: Job",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
async def test_each_tools_alert_is_texted_exactly_and_its_resolved_form_ends_it_in_its_thread(
    app: App, slack: FakeSlack, fake_d7: FakeD7, name: str
) -> None:
    case = CASES[name]
    firing, resolved = tool(case.firing), tool(case.resolved)

    await post(app, firing, case.channel)
    assert texts(fake_d7) == [case.sms]
    assert len(case.sms) <= 160  # one part: the rule's default budget
    await post(app, resolved, case.channel)

    assert texts(fake_d7) == [case.sms, case.resolved_sms]
    # The alert's own thread tells its whole life: texted, then resolved, with the exact texts.
    told = [c for c in slack.of("chat.postMessage") if c.get("thread_ts") == firing["ts"]]
    assert [c["text"].split(" to ")[0] for c in told] == [
        ":white_check_mark: *Alert texted*",
        ":white_check_mark: *RESOLVED texted*",
    ]
    assert [c["blocks"][1]["elements"][0]["elements"][0]["text"] for c in told] == [case.sms, case.resolved_sms]
    # A resolution posted on its own says, in its thread, which alert it ended and where the story is.
    pointers = [c["text"] for c in slack.of("chat.postMessage") if c.get("thread_ts") == resolved["ts"]]
    on_its_own = resolved.get("subtype") != "message_changed" and not resolved.get("thread_ts")
    assert pointers == (
        [
            f":white_check_mark: *Resolves an alert* posted <!date^{int(float(firing['ts']))}^{{date_short_pretty}} {{time}}|{stamp(firing['ts'])}> in <#{case.channel}>: RESOLVED goes to the phones it reached (+1 415 ••• 0100). The outcome is told in that alert's thread."
        ]
        if on_its_own
        else []
    )
    assert len(slack.of("chat.postMessage")) == 2 + len(pointers)  # nothing else was said


async def test_cloudwatch_through_notify_slack_says_its_state_in_a_field_and_resolve_in_text_reads_it(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    # terraform-aws-notify-slack's snapshot of an OK post, verbatim; its ALARM post for the same alarm is that
    # snapshot with the states swapped and the module's colour for ALARM ("danger"), as its code builds it.
    resolved = tool("aws-chatbot-resolved-notify-slack")
    firing = json.loads(json.dumps(resolved)) | {"ts": "1765004100.000100"}
    attachment = firing["attachments"][0]
    attachment["color"] = "danger"
    states = {f["title"]: f for f in attachment["fields"]}
    states["Old State"]["value"], states["Current State"]["value"] = "`OK`", "`ALARM`"

    await post(app, tool("aws-chatbot-firing-notify-slack"), "C0AWS")  # the snapshot of another alarm, verbatim
    await post(app, firing, "C0AWS")
    await post(app, resolved, "C0AWS")

    assert texts(fake_d7) == [
        "AWS CloudWatch notification - Example\nAlarm Name: Example\nAlarm Description: Example alarm description.\n"
        "Alarm reason: Threshold Crossed\nOld State: OK...",
        "AWS CloudWatch notification - DBMigrationRequired\nAlarm Name: DBMigrationRequired\nAlarm Description: App is "
        'reporting "A JPA error occurred(Unable to build...',
        "RESOLVED: AWS CloudWatch notification - DBMigrationRequired",  # the one whose title it has, not the latest
    ]
    told = [c["text"] for c in slack.of("chat.postMessage") if c.get("thread_ts") == firing["ts"]]
    assert [t.split(" to ")[0] for t in told] == [
        ":white_check_mark: *Alert texted*",
        ":white_check_mark: *RESOLVED texted*",
    ]


async def test_cloudwatchs_changed_state_words_and_slacks_placeholder(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    # As posted to Slack by AWS's notifications (superloglabs/responder-oss fixtures): the reason differs from ALARM
    # to OK, the alarm's name does not.
    await post(app, tool("aws-chatbot-firing-observed-responder-oss"), "C0AWS")
    # Sentry's metric alert as Slack can deliver it: the attachment's fallback is Slack's placeholder.
    sentry = tool("sentry-metric-firing")
    sentry["attachments"][0]["fallback"] = "[no preview available]"
    await post(app, sentry, "C0SENTRY")

    assert (
        texts(fake_d7)
        == [
            "The alarm responder-aws-alarm-e2e-lambda-errors changed state to ALARM: Threshold Crossed.",  # the link did not fit
            "Critical: Too many errors\n5000 events in the last 10 minutes\nStarted: 2025-12-06 at 05:48 UTC",
        ]
    )


async def test_a_sentry_resolution_posted_on_its_own_ends_the_alert_of_its_title(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    # Sentry threads its resolution under the alert when it can; without the thread it is a post of its own.
    firing = tool("sentry-metric-firing")
    resolved = {k: v for k, v in tool("sentry-metric-resolved").items() if k != "thread_ts"}
    await post(app, firing, "C0SENTRY")
    await post(app, resolved, "C0SENTRY")

    assert texts(fake_d7)[1] == "RESOLVED: Too many errors"
    assert [c["text"].split(" to ")[0] for c in slack.of("chat.postMessage") if c.get("thread_ts") == firing["ts"]][
        -1
    ] == ":white_check_mark: *RESOLVED texted*"


async def test_what_a_tool_does_not_say_is_not_guessed(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    # New Relic's documented webhook template for Slack says no state: its closed post is the same alert again
    # (a repeat, not texted), never a guessed resolution.
    await post(app, tool("newrelic-firing-webhook-template"), "C0NEWRELIC")
    await post(app, tool("newrelic-resolved-webhook-template"), "C0NEWRELIC")
    # rtCamp's action-slack-notify says failure and success with the colour only: the GitHub rule's words take
    # neither.
    await post(app, tool("github-firing-rtcamp"), "C0GITHUB")
    await post(app, tool("github-resolved-rtcamp"), "C0GITHUB")

    assert texts(fake_d7) == [
        "id:c5faa7e6-7b54-402d-af79-f99601e0278c,\nEnrichment Data: 97.3,\nDescription:Root volume on zulip_app is almost full"
    ]
    closed = [c["text"] for c in slack.of("chat.postMessage") if c.get("thread_ts") == "1765004700.000100"]
    (repeat,) = closed
    assert repeat.startswith(":repeat: *Not texted again:*")


async def test_a_note_slack_refuses_never_stands_in_the_way_of_the_resolved_text(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    firing, resolved = tool("grafana-legacy-firing"), tool("grafana-legacy-resolved")
    await post(app, firing, "C0LEGACY")
    slack.fail("chat.postMessage", error="fatal_error", times=1)  # the note in the resolving post's thread

    await post(app, resolved, "C0LEGACY")

    assert texts(fake_d7) == [CASES["grafana legacy"].sms, "RESOLVED: HighCPU"]
    told = [c["text"].split(" to ")[0] for c in slack.of("chat.postMessage") if c.get("thread_ts") == firing["ts"]]
    assert told == [":white_check_mark: *Alert texted*", ":white_check_mark: *RESOLVED texted*"]
    assert [c for c in slack.of("chat.postMessage") if c.get("thread_ts") == resolved["ts"]] == []
