"""Safe numbers by default: number types a rule must opt into, region patterns, and the warnings ``check`` gives."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.domain.errors import PolicyFileError
from bot.domain.models import Via
from bot.domain.phone import NumberType, PhoneNumber, parse_phone
from bot.domain.policy import Decision, Policy, SendRequestFacts, evaluate, parse_policy, policy_warnings
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import POLICY, App, event_callback, running_app

SFO = parse_phone("+14155550100")  # the fictional 555-01xx range every other test uses
PREMIUM = parse_phone("+19005550123")
JAMAICA = parse_phone("+18765550123")
DOMINICAN = parse_phone("+18095550123")
TORONTO = parse_phone("+14165550123")
LONDON = parse_phone("+442079460000")


def policy_with(recipients: list[str], **rule: object) -> Policy:
    return parse_policy(
        {
            "version": 1,
            # The rules' own patterns, tested alone: every country these tests use may be texted at all.
            "defaults": {"show_numbers": "masked", "countries": ["US", "CA", "JM", "DO", "GB"]},
            "senders": {"s": {"via": "sms", "originator": "Ops"}},
            "contacts": {"vetted": ["+19005550123"]},
            "rules": [
                {"name": "ops", "slack_channels": ["*"], "users": ["*"], "senders": ["s"], "recipients": recipients}
                | rule
            ],
        }
    )


def send_to(policy: Policy, number: PhoneNumber) -> Decision:
    return evaluate(policy, SendRequestFacts("U1", "C1", Via.SMS, [number]))


@pytest.mark.parametrize(
    ("number", "number_type", "region"),
    [
        (SFO, NumberType.FIXED_LINE_OR_MOBILE, "US"),
        (parse_phone("+14155550199"), NumberType.FIXED_LINE_OR_MOBILE, "US"),
        (PREMIUM, NumberType.PREMIUM_RATE, "US"),
        (JAMAICA, NumberType.MOBILE, "JM"),
        (DOMINICAN, NumberType.FIXED_LINE_OR_MOBILE, "DO"),
        (TORONTO, NumberType.FIXED_LINE_OR_MOBILE, "CA"),
        (LONDON, NumberType.FIXED_LINE, "GB"),
        (parse_phone("+443450000000"), NumberType.UAN, "GB"),
        (parse_phone("+447012345678"), NumberType.PERSONAL_NUMBER, "GB"),
    ],
)
def test_numbers_know_their_type_and_region(number: PhoneNumber, number_type: NumberType, region: str) -> None:
    assert (number.number_type, number.region) == (number_type, region)


def test_a_premium_rate_number_is_refused_by_a_prefix_rule_naming_the_number_and_its_type() -> None:
    assert send_to(policy_with(["+1*"]), PREMIUM) == Decision(
        False,
        "+1 900 ••• 0123 is a premium-rate number; rule 'ops' does not allow premium-rate numbers "
        "(allow_number_types: [premium_rate])",
        rule="ops",
        dimension="recipient",
    )


@pytest.mark.parametrize("recipients", [["*"], ["+1900*"], ["region:US"], ["+19005550123"], ["group:vetted"]])
def test_every_kind_of_pattern_refuses_premium_rate_unless_the_rule_opts_in(recipients: list[str]) -> None:
    assert not send_to(policy_with(recipients), PREMIUM).allowed
    assert send_to(policy_with(recipients, allow_number_types=["premium_rate"]), PREMIUM).allowed


def test_opting_into_one_type_does_not_admit_another() -> None:
    shared_cost = parse_phone("+33810123456")  # France 0810
    assert shared_cost.number_type is NumberType.SHARED_COST

    decision = send_to(policy_with(["*"], allow_number_types=["premium_rate"]), shared_cost)

    assert decision.reason.endswith("does not allow shared-cost numbers (allow_number_types: [shared_cost])")


def test_a_number_phonenumbers_cannot_place_is_refused_as_unknown() -> None:
    decision = send_to(policy_with(["*"]), PhoneNumber("+15555550100"))  # NANP has no 555 area code

    assert decision.reason == (
        "+1 555 ••• 0100 is an unknown-type number; rule 'ops' does not allow unknown-type numbers "
        "(allow_number_types: [unknown])"
    )


def test_plus_one_prefix_is_literal_and_still_admits_caribbean_numbers() -> None:
    # "+1*" keeps meaning every number starting +1, as it always did; check warns about it (below).
    policy = policy_with(["+1*"])

    assert [send_to(policy, n).allowed for n in (SFO, JAMAICA, DOMINICAN)] == [True, True, True]


def test_region_us_admits_san_francisco_and_refuses_jamaica_and_the_dominican_republic() -> None:
    policy = policy_with(["region:US"])

    assert send_to(policy, SFO).allowed
    assert not send_to(policy, TORONTO).allowed
    assert send_to(policy, JAMAICA) == Decision(
        False, "+1 876 ••• 0123 is outside the numbers rule 'ops' allows", rule="ops", dimension="recipient"
    )
    assert not send_to(policy, DOMINICAN).allowed


def test_region_list_is_normalised_and_admits_each_region() -> None:
    policy = policy_with(["region: us, ca"])

    assert policy.rules[0].recipients == ["region:US,CA"]
    assert [send_to(policy, n).allowed for n in (SFO, TORONTO, JAMAICA, LONDON)] == [True, True, False, False]


@pytest.mark.parametrize(
    ("recipients", "rule", "expected"),
    [
        (
            ["region:XX"],
            {},
            "rules[0].recipients[0]: unknown region 'XX' (use two-letter codes such as region:US or region:US,CA)",
        ),
        (
            ["*"],
            {"allow_number_types": ["premium"]},
            "rules[0].allow_number_types[0]: Input should be 'fixed_line', 'mobile', 'fixed_line_or_mobile', "
            "'toll_free', 'voip', 'premium_rate', 'shared_cost', 'uan', 'personal_number', 'pager', 'voicemail' or "
            "'unknown'",
        ),
    ],
)
def test_bad_region_and_type_names_are_errors(recipients: list[str], rule: dict[str, object], expected: str) -> None:
    with pytest.raises(PolicyFileError) as info:
        policy_with(recipients, **rule)

    assert [str(p) for p in info.value.problems] == [expected]


def test_alerts_cannot_go_to_a_region() -> None:
    with pytest.raises(PolicyFileError) as info:
        parse_policy(
            {
                "version": 1,
                "senders": {"s": {"via": "sms", "originator": "Ops"}},
                "alerts": [{"name": "a", "slack_channels": ["C0AL"], "match": "x", "sender": "s", "to": ["region:US"]}],
            }
        )

    assert [str(p) for p in info.value.problems] == ["alerts[0].to[0]: alerts go to numbers, group:NAME or S… groups"]


def test_check_warns_about_prefixes_spanning_countries_and_listed_numbers_it_will_refuse() -> None:
    warnings = [str(w) for w in policy_warnings(policy_with(["+1*", "+4420*", "region:US", "group:vetted"]))]

    assert warnings == [
        "rules[0].recipients[0]: '+1*' spans 25 countries and territories (AG, AI, AS, BB, BM, BS, CA, DM, DO, GD, GU, "
        "JM, KN, KY, LC, MP, MS, PR, SX, TC, TT, US, VC, VG, VI); name the ones you mean, like region:US",
        "rules[0].recipients[3]: +1 900 ••• 0123 is a premium-rate number; rule 'ops' does not allow premium-rate "
        "numbers (allow_number_types: [premium_rate]), so texts to it are refused",
    ]
    assert policy_warnings(policy_with(["region:US", "group:vetted"], allow_number_types=["premium_rate"])) == []


# ---------------------------------------------------------------- end to end, with the tests' own "+1*" policy


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel("C0OPS")
        yield fake


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path) as running:
        yield running


async def test_sms_to_a_premium_rate_number_is_refused_and_nothing_is_sent(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    assert '"+1*"' in POLICY

    await app.command("/sms", "+19005550123 hello", channel="C0OPS")
    await app.settle()

    assert fake_d7.requests == []
    (answer,) = slack.responses["cmd"]
    assert answer["blocks"][1]["text"]["text"] == (
        "• +1 900 ••• 0123 is a premium-rate number; rule 'ops may page on-call' does not allow premium-rate "
        "numbers (allow_number_types: [premium_rate])"
    )


ALERTS_TO_A_GROUP = """
version: 1
defaults: {region: US}
senders:
  ops-sms: {via: sms, originator: OpsAlert}
alerts:
  - name: pages
    slack_channels: [C0ALERTS]
    match: "(?i)critical"
    from: any
    sender: ops-sms
    to: [S0ONCALL, "+19005550199"]
"""


async def test_an_alert_skips_a_premium_rate_profile_phone_and_says_so_in_its_thread(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.add_channel("C0ALERTS", name="alerts")
    slack.add_user("U0ANA", "ana", "+1 415 555 0110")
    slack.add_user("U0EVE", "eve", "+1 900 555 0123")  # anyone may edit their own profile phone
    slack.state.usergroups["S0ONCALL"] = ["U0ANA", "U0EVE"]
    message = {"type": "message", "user": "U0ANA", "text": "CRITICAL: db-1 down", "ts": "1700000001.000100"}
    async with running_app(slack, fake_d7, tmp_path, policy=ALERTS_TO_A_GROUP) as app:
        await app.event(event_callback(message, channel="C0ALERTS"))
        await app.settle()

    # The policy's own number is the admin's choice (a premium-rate line they mean); eve's profile is not.
    assert [b["messages"][0]["recipients"] for b in fake_d7.bodies("/messages/v1/send")] == [
        ["+14155550110", "+19005550199"]
    ]
    (reply,) = [p for p in slack.of("chat.postMessage") if p.get("thread_ts") == message["ts"]]
    assert (
        "@eve has a premium-rate number in their Slack profile (+1 900 ••• 0123); alerts text profile phones only "
        "when they are mobile, landline, toll-free or VoIP numbers"
    ) in str(reply["blocks"])
