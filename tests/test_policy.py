"""The policy file: loading errors with their paths, and allow/deny decisions with their reasons."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from bot.domain.errors import PolicyFileError
from bot.domain.models import Via
from bot.domain.phone import PhoneNumber, parse_phone
from bot.domain.policy import (
    Decision,
    Dimension,
    Policy,
    SendRequestFacts,
    admin_groups,
    evaluate,
    evaluate_before_recipients,
    groups_to_look_up,
    is_admin,
    load_policy,
    parse_duration,
    parse_policy,
)

ROOT = Path(__file__).resolve().parent.parent

POLICY = """
version: 1
defaults: {region: US, max_segments: 10, show_numbers: full, countries: [US, GB, AE]}
senders:
  ops-sms:    {via: sms, originator: OpsAlert}
  backup-sms: {via: sms, originator: "+14155550199"}
  support-wa: {via: whatsapp, originator: "+971501234567"}
contacts:
  oncall-db: ["+14155550100", "(415) 555-0101"]
  uk-team: ["+44 20 7946 0000"]
rules:
  - name: ops may page on-call
    slack_channels: [C0OPS]
    users: ["*"]
    senders: [ops-sms]
    recipients: ["+1*", "group:oncall-db"]
    max_recipients: 3
  - name: support agents on WhatsApp
    slack_channels: [C0SUPPORT]
    users: [S0SUPPORT, U0LEAD]
    senders: [support-wa]
    recipients: ["*"]
  - name: incident commanders page the UK team
    slack_channels: ["*"]
    users: [U0IC]
    senders: [backup-sms, ops-sms]
    recipients: ["group:uk-team"]
"""


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    path = tmp_path_factory.mktemp("policy") / "policy.yml"
    path.write_text(POLICY)
    return load_policy(path)


def n(raw: str) -> PhoneNumber:
    return parse_phone(raw, "US")


US1, US2, US3, US4 = (n(f"+1415555010{i}") for i in range(4))
UK = n("+442079460000")
UAE = n("+971501234568")


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        # allowed
        (
            SendRequestFacts("U1", "C0OPS", Via.SMS, [US1]),
            Decision(True, "allowed by rule 'ops may page on-call'", rule="ops may page on-call", sender="ops-sms"),
        ),
        (
            SendRequestFacts("U9", "C0SUPPORT", Via.WHATSAPP, [UAE], user_groups=frozenset({"S0SUPPORT"})),
            Decision(
                True,
                "allowed by rule 'support agents on WhatsApp'",
                rule="support agents on WhatsApp",
                sender="support-wa",
            ),
        ),
        (
            SendRequestFacts("U0LEAD", "C0SUPPORT", Via.WHATSAPP, [US1, UK]),
            Decision(
                True,
                "allowed by rule 'support agents on WhatsApp'",
                rule="support agents on WhatsApp",
                sender="support-wa",
            ),
        ),
        (  # the second rule of the file is skipped, the third allows; the named sender is kept
            SendRequestFacts("U0IC", "C0RANDOM", Via.SMS, [UK], sender="ops-sms"),
            Decision(
                True,
                "allowed by rule 'incident commanders page the UK team'",
                rule="incident commanders page the UK team",
                sender="ops-sms",
            ),
        ),
        (  # no sender named: the rule's first sender for this via
            SendRequestFacts("U0IC", "C0RANDOM", Via.SMS, [UK]),
            Decision(
                True,
                "allowed by rule 'incident commanders page the UK team'",
                rule="incident commanders page the UK team",
                sender="backup-sms",
            ),
        ),
        # denied: each dimension
        (
            SendRequestFacts("U1", "C0RANDOM", Via.WHATSAPP, [US1], channel_label="#random"),
            Decision(
                False,
                "#random is not allowed to send via WhatsApp",
                rule="support agents on WhatsApp",
                dimension="channel",
            ),
        ),
        (
            SendRequestFacts("U1", "C0RANDOM", Via.SMS, [US1], channel_label="#random"),
            Decision(
                False,
                "U1 is not allowed to send via SMS from #random",
                rule="incident commanders page the UK team",
                dimension="user",
            ),
        ),
        (
            SendRequestFacts("U2", "C0SUPPORT", Via.WHATSAPP, [US1], user_label="@bob", channel_label="#support"),
            Decision(
                False,
                "@bob is not allowed to send via WhatsApp from #support",
                rule="support agents on WhatsApp",
                dimension="user",
            ),
        ),
        (
            SendRequestFacts("U1", "C0OPS", Via.SMS, [US1], sender="backup-sms", channel_label="#ops"),
            Decision(
                False,
                "sender 'backup-sms' is not allowed for U1 in #ops (allowed: ops-sms)",
                rule="ops may page on-call",
                dimension="sender",
            ),
        ),
        (
            SendRequestFacts("U1", "C0OPS", Via.SMS, [US1, UK]),
            Decision(
                False,
                "+44 20 7946 0000 is outside the numbers rule 'ops may page on-call' allows",
                rule="ops may page on-call",
                dimension="recipient",
            ),
        ),
        (
            SendRequestFacts("U1", "C0OPS", Via.SMS, [US1, US2, US3, US4]),
            Decision(
                False,
                "4 recipients is more than the 3 rule 'ops may page on-call' allows",
                rule="ops may page on-call",
                dimension="count",
            ),
        ),
        (
            SendRequestFacts("U1", "C0OPS", Via.SMS, [US1], sender="ops-sm"),
            Decision(False, "unknown sender 'ops-sm'", dimension="sender"),
        ),
        (
            SendRequestFacts("U1", "C0OPS", Via.SMS, [US1], sender="support-wa"),
            Decision(False, "sender 'support-wa' sends via WhatsApp, not SMS", dimension="sender"),
        ),
        (
            SendRequestFacts("U1", "C0OPS", Via.SMS, []),
            Decision(False, "no recipients", dimension="recipient"),
        ),
        (  # the IC rule gets furthest: its recipient check names the number
            SendRequestFacts("U0IC", "C0RANDOM", Via.SMS, [US1]),
            Decision(
                False,
                "+1 415-555-0100 is outside the numbers rule 'incident commanders page the UK team' allows",
                rule="incident commanders page the UK team",
                dimension="recipient",
            ),
        ),
    ],
)
def test_evaluate(policy: Policy, facts: SendRequestFacts, expected: Decision) -> None:
    assert evaluate(policy, facts) == expected


@pytest.mark.parametrize(
    "facts",
    [
        SendRequestFacts("U1", "C0RANDOM", Via.WHATSAPP, [US1], channel_label="#random"),  # channel
        SendRequestFacts("U1", "C0RANDOM", Via.SMS, [US1], channel_label="#random"),  # user
        SendRequestFacts("U2", "C0SUPPORT", Via.WHATSAPP, [US1], user_label="@bob"),  # user
        SendRequestFacts("U1", "C0OPS", Via.SMS, [US1], sender="backup-sms"),  # sender the rule does not allow
        SendRequestFacts("U1", "C0OPS", Via.SMS, [US1], sender="ops-sm"),  # unknown sender
        SendRequestFacts("U1", "C0OPS", Via.SMS, [US1], sender="support-wa"),  # sender of another via
    ],
)
def test_before_recipients_refuses_in_the_words_evaluate_uses_whatever_the_recipients(
    policy: Policy, facts: SendRequestFacts
) -> None:
    full = evaluate(policy, facts)

    assert not full.allowed
    for recipients in ([], [US1], [UK, UAE], [US1, US2, US3, US4]):
        assert evaluate_before_recipients(policy, replace(facts, recipients=recipients)) == full


@pytest.mark.parametrize(
    ("facts", "dimension", "rule"),
    [
        (SendRequestFacts("U1", "C0OPS", Via.SMS, [UK]), Dimension.RECIPIENT, "ops may page on-call"),
        (SendRequestFacts("U1", "C0OPS", Via.SMS, [US1, US2, US3, US4]), Dimension.COUNT, "ops may page on-call"),
        (
            SendRequestFacts("U0IC", "C0RANDOM", Via.SMS, [US1]),
            Dimension.RECIPIENT,
            "incident commanders page the UK team",
        ),
        (SendRequestFacts("U1", "C0OPS", Via.SMS, []), Dimension.RECIPIENT, "ops may page on-call"),
    ],
)
def test_before_recipients_leaves_recipients_and_count_to_evaluate(
    policy: Policy, facts: SendRequestFacts, dimension: Dimension, rule: str
) -> None:
    early = evaluate_before_recipients(policy, facts)

    assert evaluate(policy, facts).dimension is dimension
    assert (early.allowed, early.rule) == (True, rule)


def test_before_recipients_names_the_rule_and_sender_that_may_allow_it(policy: Policy) -> None:
    facts = SendRequestFacts("U0IC", "C0RANDOM", Via.SMS, [])

    assert evaluate_before_recipients(policy, facts) == Decision(
        True,
        "rule 'incident commanders page the UK team' may allow it",
        rule="incident commanders page the UK team",
        sender="backup-sms",
    )


def test_before_recipients_without_rules_says_so() -> None:
    empty = parse_policy({"version": 1, "senders": {"s": {"via": "sms", "originator": "Ops"}}})

    assert evaluate_before_recipients(empty, SendRequestFacts("U1", "C1X", Via.SMS, [])) == Decision(
        False, "the policy has no rules, so nothing may be sent", dimension="rule"
    )


def test_max_group_size_defaults_to_50_and_is_read_from_defaults(policy: Policy) -> None:
    assert policy.defaults.max_group_size == 50
    assert parse_policy({"version": 1, "defaults": {"max_group_size": 200}}).defaults.max_group_size == 200


def test_a_rule_without_max_recipients_is_bounded_by_defaults_max_recipients() -> None:
    from bot.domain.policy import parse_policy

    def unbounded(defaults: dict[str, object]) -> Policy:
        rule = {"name": "support", "slack_channels": ["C1X"], "users": ["*"], "senders": ["s"], "recipients": ["*"]}
        senders = {"s": {"via": "sms", "originator": "Ops"}}
        return parse_policy({"version": 1, "defaults": defaults, "senders": senders, "rules": [rule]})

    eleven = [n(f"+1415555{i:04d}") for i in range(11)]
    facts = SendRequestFacts("U1", "C1X", Via.SMS, eleven)
    assert unbounded({}).defaults.max_recipients == 10
    assert evaluate(unbounded({}), facts) == Decision(
        False,
        "11 recipients is more than the 10 the policy allows per send "
        "(defaults.max_recipients; rule 'support' sets no max_recipients)",
        rule="support",
        dimension="count",
    )
    assert evaluate(unbounded({}), replace(facts, recipients=eleven[:10])).allowed
    assert evaluate(unbounded({"max_recipients": 11}), facts).allowed


def test_an_allowed_broadcast_formats_none_of_its_numbers_and_a_refusal_shows_the_one_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot.domain.policy import parse_policy

    rule = {
        "name": "everyone",
        "slack_channels": ["C1X"],
        "users": ["*"],
        "senders": ["s"],
        "recipients": ["region:US"],
        "max_recipients": 1000,
    }
    policy = parse_policy({"version": 1, "senders": {"s": {"via": "sms", "originator": "Ops"}}, "rules": [rule]})
    thousand = [n(f"+1415555{i:04d}") for i in range(1000)]
    shown: list[str] = []
    display = PhoneNumber.display
    monkeypatch.setattr(PhoneNumber, "display", lambda self, *a: shown.append(self.e164) or display(self, *a))

    assert evaluate(policy, SendRequestFacts("U1", "C1X", Via.SMS, thousand)).allowed
    assert shown == []  # formatting each of 1,000 numbers was most of the check's 56 ms, on the event loop
    refused = evaluate(policy, SendRequestFacts("U1", "C1X", Via.SMS, [*thousand[:5], n("+442079460000")]))
    assert (refused.allowed, refused.dimension) == (False, "recipient")
    assert shown == ["+442079460000"]


def test_policy_without_rules_denies_everything() -> None:
    from bot.domain.policy import parse_policy

    empty = parse_policy({"version": 1, "senders": {"s": {"via": "sms", "originator": "Ops"}}})
    decision = evaluate(empty, SendRequestFacts("U1", "C1X", Via.SMS, [US1]))
    assert decision == Decision(False, "the policy has no rules, so nothing may be sent", dimension="rule")


def test_no_rule_for_the_via_says_so() -> None:
    from bot.domain.policy import parse_policy

    sms_only = parse_policy(
        {
            "version": 1,
            "senders": {
                "s": {"via": "sms", "originator": "Ops"},
                "w": {"via": "whatsapp", "originator": "+971501234567"},
            },
            "rules": [{"name": "r", "slack_channels": ["*"], "users": ["*"], "senders": ["s"], "recipients": ["*"]}],
        }
    )
    decision = evaluate(sms_only, SendRequestFacts("U1", "C1X", Via.WHATSAPP, [US1]))
    assert (decision.allowed, decision.reason, decision.dimension) == (
        False,
        "no rule allows sending via WhatsApp",
        "via",
    )


def test_masked_numbers_in_reasons_follow_show_numbers(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text(POLICY.replace("show_numbers: full", "show_numbers: masked"))
    decision = evaluate(load_policy(path), SendRequestFacts("U1", "C0OPS", Via.SMS, [UK]))
    assert decision.reason == "+44 20 ••• 0000 is outside the numbers rule 'ops may page on-call' allows"


def test_loading_normalises_numbers_to_e164(policy: Policy) -> None:
    assert policy.contacts == {"oncall-db": ["+14155550100", "+14155550101"], "uk-team": ["+442079460000"]}
    assert policy.defaults.region == "US"


def test_example_policy_loads() -> None:
    example = load_policy(ROOT / "policy.example.yml")
    assert sorted(example.senders) == ["ops-sms", "support-wa"]
    assert [r.name for r in example.rules] == ["ops may page on-call", "support agents on WhatsApp"]
    alert = example.alerts[0]
    assert (alert.name, alert.sender, alert.to) == ("prod critical", "ops-sms", ["group:oncall-db"])
    assert alert.dedupe_window == timedelta(minutes=10)
    assert alert.max_per_phone is not None
    assert (alert.max_per_phone.count, alert.max_per_phone.per) == (5, timedelta(hours=1))
    assert alert.pattern.search("[FIRING:1] HighCPU")


# ---------------------------------------------------------------- file errors

BASE = """
version: 1
senders:
  ops-sms: {via: sms, originator: OpsAlert}
contacts:
  oncall: ["+14155550100"]
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "rules:\n  - {name: a, slack_channels: [C0OPS], users: ['*'], senders: [ops-sms], recipients: ['*']}\n"
            "  - {name: b, slack_channels: [C0OPS], users: ['*'], senders: [ops-sm], recipients: ['*']}\n",
            ["rules[1].senders[0]: unknown sender 'ops-sm'"],
        ),
        (
            "rules:\n  - {name: a, slack_channels: [C0OPS], users: ['*'], senders: [ops-sms], recipients: ['group:oncal']}\n",
            ["rules[0].recipients[0]: unknown contact group 'oncal'"],
        ),
        (
            "rules:\n  - {name: a, slack_channels: [ops], users: [bob], senders: [ops-sms], recipients: ['+1 555']}\n",
            [
                "rules[0].slack_channels[0]: 'ops' is not a channel ID (C…) or \"*\"",
                "rules[0].users[0]: 'bob' is not a user (U…/W…), user group (S…) or \"*\"",
                "rules[0].recipients[0]: '+1 555' is not a valid phone number: too short",
            ],
        ),
        (
            "rules:\n  - {name: a, slack_channels: [C0OPS], users: ['*'], senders: [ops-sms]}\n",
            ["rules[0].recipients: required"],
        ),
        (
            "rules:\n  - {name: a, slack_channels: [C0OPS], users: ['*'], senders: [ops-sms], recipients: ['*'],"
            " max_recipient: 3}\n",
            ["rules[0].max_recipient: unknown key"],
        ),
        (
            "alerts:\n  - {name: x, slack_channels: [C0AL], match: '(unclosed', sender: ops-sms, to: ['group:oncall']}\n",
            ["alerts[0].match: bad regular expression: missing ), unterminated subpattern at position 0"],
        ),
        (
            "alerts:\n  - {name: x, slack_channels: [C0AL], match: 'x', sender: nope, to: ['group:oncall'],"
            " template: '{text} {host}', dedupe_window: soon}\n",
            [
                "alerts[0].template: unknown placeholder {host}; use {channel}, {link}, {text}, {title}",
                "alerts[0].dedupe_window: 'soon' is not a duration like 30s, 10m, 1h or 2d",
            ],
        ),
        (
            "alerts:\n  - {name: x, slack_channels: [C0AL], match: 'x', sender: nope, to: ['group:oncall', S0ONCALL]}\n",
            ["alerts[0].sender: unknown sender 'nope'"],
        ),
        (
            "alerts:\n  - {name: x, slack_channels: [C0AL], match: 'x', sender: ops-sms, to: ['+1*'], from: [bob]}\n",
            [
                "alerts[0].from[0]: 'bob' is not a bot (B…) or user (U…) ID",
                "alerts[0].to[0]: alerts go to numbers, group:NAME or S… groups",
            ],
        ),
    ],
)
def test_file_errors_name_the_file_and_path(tmp_path: Path, extra: str, expected: list[str]) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(BASE + extra)

    with pytest.raises(PolicyFileError) as info:
        load_policy(path)

    assert [str(p) for p in info.value.problems] == expected
    assert str(info.value).splitlines() == [f"{path}: {line}" for line in expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 2\n", ["version: Input should be 1"]),
        ("[1, 2]\n", ["the file must be a YAML mapping with version: 1"]),
        (
            "version: 1\ndefaults: {region: XX}\n",
            ["defaults.region: unknown region 'XX' (use a two-letter code such as US or GB)"],
        ),
        (
            "version: 1\nsenders:\n  w: {via: whatsapp, originator: WhatsCo}\n  s: {via: sms, originator: WayTooLongName}\n"
            "  f: {via: fax, originator: x}\n",
            ["senders.f.via: Input should be 'sms' or 'whatsapp'"],
        ),
        (
            "version: 1\nsenders:\n  w: {via: whatsapp, originator: WhatsCo}\n  s: {via: sms, originator: WayTooLongName}\n",
            [
                "senders.w.originator: a WhatsApp sender must be a registered phone number: "
                "'WhatsCo' is not a valid phone number: only digits, spaces, dashes, dots, brackets and a leading + "
                "are allowed",
                "senders.s.originator: originator 'WayTooLongName' must be up to 11 letters/digits or a number of up "
                "to 15 digits",
            ],
        ),
        (
            'version: 1\ncontacts:\n  a: ["+1 415 555 0100", nope]\n',
            [
                "contacts.a[1]: 'nope' is not a valid phone number: only digits, spaces, dashes, dots, brackets and a leading + are allowed"
            ],
        ),
        (
            "version: 1\ndefaults: {max_group_size: 0}\n",
            ["defaults.max_group_size: Input should be greater than or equal to 1"],
        ),
        (
            "version: 1\ndefaults: {max_group_size: many}\n",
            ["defaults.max_group_size: Input should be a valid integer, unable to parse string as an integer"],
        ),
        (
            "version: 1\nrules: [\n",
            ["line 3, column 1: not valid YAML: expected the node content, but found '<stream end>'"],
        ),
    ],
)
def test_structural_errors(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(text)

    with pytest.raises(PolicyFileError) as info:
        load_policy(path)

    assert [str(p) for p in info.value.problems] == expected


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError) as info:
        load_policy(tmp_path / "nope.yml")
    assert str(info.value) == f"{tmp_path / 'nope.yml'}: cannot read the file: No such file or directory"


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("10m", 600), ("1h", 3600), ("2d", 172800), (" 5 m ", 300)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "0m", "10", "1w", "-5m", "1.5h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


# ---------------------------------------------------------------- admins and the admin channel

ADMINS = {"version": 1, "admins": ["U0BOSS", "S0ADMINS"]}


def test_admins_are_named_users_and_members_of_named_groups() -> None:
    policy = parse_policy(ADMINS)

    assert is_admin(policy, "U0BOSS", ())
    assert is_admin(policy, "U1", frozenset({"S0OTHER", "S0ADMINS"}))
    assert not is_admin(policy, "U1", frozenset({"S0OTHER"}))
    assert not is_admin(parse_policy({"version": 1}), "U0BOSS", ())


def test_admin_groups_are_looked_up_only_when_asked_and_only_for_non_admins() -> None:
    policy = parse_policy(ADMINS)

    assert admin_groups(policy) == frozenset({"S0ADMINS"})
    assert groups_to_look_up(policy, "U1", None) == []
    assert groups_to_look_up(policy, "U1", None, include_admins=True) == ["S0ADMINS"]
    assert groups_to_look_up(policy, "U0BOSS", None, include_admins=True) == []


def test_admin_channel_and_low_balance_default_to_none_and_are_read_from_defaults() -> None:
    unset = parse_policy({"version": 1}).defaults
    assert (unset.admin_channel, unset.low_balance) == (None, None)
    defaults = parse_policy({"version": 1, "defaults": {"admin_channel": "G0OPS", "low_balance": 12.5}}).defaults
    assert (defaults.admin_channel, defaults.low_balance) == ("G0OPS", 12.5)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"admins": ["U0BOSS", "bob", "C0OPS"]},
            [
                "admins[1]: 'bob' is not a user (U…/W…) or user group (S…)",
                "admins[2]: 'C0OPS' is not a user (U…/W…) or user group (S…)",
            ],
        ),
        (
            {"defaults": {"admin_channel": "D0DM", "low_balance": -1}},
            [
                "defaults.admin_channel: 'D0DM' is not a channel ID (C…/G…)",
                "defaults.low_balance: Input should be greater than or equal to 0",
            ],
        ),
    ],
)
def test_admin_settings_are_checked(data: dict[str, object], expected: list[str]) -> None:
    with pytest.raises(PolicyFileError) as info:
        parse_policy({"version": 1, **data})

    assert [str(p) for p in info.value.problems] == expected
