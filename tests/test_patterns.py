"""Linear-time text handling: policy patterns compiled by RE2 once, refused in plain words when RE2 cannot run
them, and the patterns over posted text rewritten without changing a single result (the ``re`` versions they
replace are kept here as the oracles)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.domain import patterns
from bot.domain.alerts import AlertFacts, Author, identity, match_alert, match_resolution, normalise, without_state
from bot.domain.errors import PolicyFileError
from bot.domain.policy import Policy, parse_policy
from bot.domain.templates import fit_param
from bot.sending.telling import step_words
from bot.slack.alerts import title_of
from bot.slack.flatten import MAX_TEXT, flatten
from bot.slack.grammar import _INTERNATIONAL
from bot.slack.markup import _entity, strip_mrkdwn, to_plain_text, unescape
from bot.slack.messages import shown_markup

CATASTROPHIC = r"(?i)^(\w+\s?)+ resolved$"  # exponential in Python's re: 12.7 s for 28 characters

# ---------------------------------------------------------------- the re versions, as they were (the oracles)

_OLD_ENTITY = re.compile(r"<([^<>\n]+)>")
_OLD_CODE_BLOCK = re.compile(r"```\n?(.*?)\n?```", re.DOTALL)
_OLD_CODE = re.compile(r"`([^`\n]+)`")
_OLD_EMPHASIS = re.compile(r"(?<![\w*_~])([*_~])(?=\S)([^\n]*?\S)\1(?![\w*_~])")
_OLD_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|\b\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[ap]m)?\b",
    re.IGNORECASE,
)
_OLD_NUMBER = re.compile(r"(?<![\w.-])\d+(?:[.,]\d+)*[a-z%]*")
# ``without_state`` as ``re`` reads it: the state words (issue 27's vocabulary), CloudWatch's state change with its
# reason and links' addresses (ASCII classes: RE2 reads \w, \s, \b so).
_REF_STATE = re.compile(
    r"\[?\b(?:firing|resolved|recovered|triggered|alerting|re-?triggered|failed|failure|succeeded|success)\b"
    r"(?:[:,]\s*\d+)?\]?|\[ok\]|^\s*(?:critical|warning|warn)\s*:",
    re.IGNORECASE,
)
_REF_CHANGE = re.compile(r"\b(?:state is now|changed state (?:from \w+ )?to)\s+\w+\b.*", re.IGNORECASE | re.ASCII)
_REF_LINK = re.compile(r"[ \t]*\((?:https?|mailto):[^\s()]*\)", re.ASCII)


def old_strip_mrkdwn(text: str) -> str:
    text = _OLD_CODE_BLOCK.sub(r"\1", text)
    text = _OLD_CODE.sub(r"\1", text)
    for _ in range(2):
        text = _OLD_EMPHASIS.sub(r"\2", text)
    return "\n".join(line.strip() for line in text.splitlines())


def old_normalise(text: str) -> str:
    text = _OLD_DATETIME.sub(" ", text.lower())
    text = _OLD_NUMBER.sub(" ", text)
    return re.sub(r"\s+", " ", text).strip()


def reference_without_state(title: str) -> str:
    about = _REF_LINK.sub("", _REF_CHANGE.sub("", title))
    return re.sub(r"\s+", " ", _REF_STATE.sub(" ", about)).strip(" -:.")


# Texts as posts have them, and the characters that decide: marks, spaces of every kind, word characters that are
# not ASCII (é, ٣, ², _), newlines; and any Unicode at all.
MARKUP = st.text(st.sampled_from(list(" *_~`a\nb.-1\t\u00a0\u2003é٣²<>|@!#&;:,%")), max_size=60)
NUMBERS = st.text(st.sampled_from(list(" 0123٣²a.,-_:%TZmpé\n\u00a0x")), max_size=60)
ANY = st.text(max_size=60)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(MARKUP, ANY))
@example("*bold* _it_ ~gone~ `code` ```\nblock\n``` node_exporter *_nested_*")
@example("**a* *a**b* x*y* *a*_ _b_* ~*a*~")
def test_strip_mrkdwn_gives_exactly_what_the_re_version_gave(text: str) -> None:
    assert strip_mrkdwn(text) == old_strip_mrkdwn(text)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(NUMBERS, ANY))
@example("[FIRING:3] CPU 97% on db-1 at 2024-05-01T10:00:00Z, v1.2 eu-west-2 for 5m 1,234.5gb ٣٣ ²2")
def test_normalise_gives_exactly_what_the_re_version_gave(text: str) -> None:
    assert normalise(text) == old_normalise(text)


TITLE_WORDS = st.lists(
    st.sampled_from(
        [
            *("state is now", "changed state from OK to", "OK", "ALARM", "é", ":", " ", "\t", "\n", "\u00a0", "(", ")"),
            *(
                "(https://x.io/a)",
                "(mailto:a@b)",
                "[ok]",
                "[FIRING:2]",
                "Critical:",
                "Warning :",
                "failed",
                "db-1",
                ".",
            ),
        ]
    ),
    max_size=12,
).map("".join)


@settings(max_examples=800, deadline=None)
@given(
    st.one_of(
        st.text(st.sampled_from(list(" \t\n\u00a0-:.[]()FIRINGresolvedokcritalwn2")), max_size=40), TITLE_WORDS, ANY
    )
)
@example("The alarm checkout-errors changed state to OK: Threshold Crossed.")
@example("Critical: Too many errors (https://sentry.example/alerts/1)")
def test_titles_without_state_words_are_what_re_reads(title: str) -> None:
    assert without_state(title) == reference_without_state(title)


# The patterns moved to RE2 as they were: the same matches over the same texts.
MOVED = [
    (r"<([^<>\n]+)>", "<>|@!#\n abU0"),
    (r"^https?://", "htps:/x"),
    (r"(?s)```\n?(.*?)\n?```", "`\na "),
    (r"`([^`\n]+)`", "`\na "),
    (r"<@([UW][A-Z0-9]+)>", "<@>UW0A|a"),
    (r"\n{3,}", "\na"),
    (r"<[@#!](?:subteam\^)?([A-Z0-9]+)(?:\|([^>]*))?>", "<>@#!subteam^A0|a "),
    (r"&lt;(@[UW][A-Z0-9]{2,}|#[CG][A-Z0-9]{2,})&gt;", "&lt;gt@#UWCG0A"),
    (r"&lt;!subteam\^(S[A-Z0-9]{2,})(?:\|([^&]*))?&gt;", "&lt;gt!subteam^S0A|a"),
    (r" {5,}", " a"),
]


@pytest.mark.parametrize(("source", "alphabet"), MOVED)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_each_pattern_moved_to_re2_matches_as_re_did(source: str, alphabet: str, data: st.DataObject) -> None:
    text = data.draw(st.one_of(st.text(st.sampled_from(list(alphabet + "é\u2003")), max_size=40), ANY))
    old = re.compile(source.removeprefix("(?s)"), re.DOTALL if source.startswith("(?s)") else 0)
    new = patterns.compile(source)

    def shown(m: Any) -> str:
        return "[" + "|".join(str(g) for g in (m.group(0), *m.groups())) + "]"

    assert new.sub(shown, text) == old.sub(shown, text)
    assert new.findall(text) == old.findall(text)


@settings(max_examples=500, deadline=None)
@given(st.one_of(MARKUP, ANY))
def test_slack_markup_to_plain_text_is_what_the_re_version_gave(text: str) -> None:
    assert to_plain_text(text) == unescape(_OLD_ENTITY.sub(lambda m: _entity(m.group(1)), text))


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.text(st.sampled_from(list("+1().-/x٣\n ")), max_size=30), ANY))
def test_an_international_number_is_recognised_as_before_without_the_quadratic_pattern(token: str) -> None:
    old = re.compile(r"^\+[\d().\-/]*\d[\d().\-/]*$")

    assert bool(_INTERNATIONAL.match(token)) == bool(old.match(token))


def test_a_long_typed_token_is_read_in_linear_time() -> None:
    token = "+" + "1" * MAX_TEXT + "x"  # the pattern it replaces: 0.44 s

    started = time.perf_counter()
    assert _INTERNATIONAL.match(token) is None
    assert time.perf_counter() - started < 0.01


def test_the_users_of_moved_patterns_still_read_the_same() -> None:
    assert step_words("Not sent: <@U1|ana> and <!subteam^S0ONCALL|@oncall> in <#C1>") == (
        "Not sent: ana and @oncall in C1"
    )
    assert shown_markup("<@U0ANA> &lt;x&gt; <!subteam^S0ONCALL|@oncall>") == (
        "<@U0ANA> &amp;lt;x&amp;gt; <!subteam^S0ONCALL>"
    )
    assert shown_markup("<!subteam^S0ONCALL|@oncall>", groups=False) == "@oncall"
    assert fit_param("a      b\n\tc") == "a    b  c"


# ---------------------------------------------------------------- policy patterns

POLICY = """
version: 1
defaults: {region: US}
senders:
  ops-sms: {via: sms, originator: OpsAlert}
alerts:
  - name: db
    slack_channels: [C0ALERTS]
    match: "(?i)critical"
    resolve: %s
    sender: ops-sms
    to: ["+14155550100"]
"""


def policy_with(resolve: str) -> Policy:
    return parse_policy(yaml.safe_load(POLICY % yaml.safe_dump(resolve, default_style='"').strip()))


def test_a_catastrophic_pattern_compiles_and_reads_a_hostile_post_in_linear_time() -> None:
    """RE2 is what keeps the red team's pattern harmless (the policy refuses it as well, below)."""
    pattern = patterns.compile(CATASTROPHIC)
    hostile = "a" * 27 + "!"  # 28 characters: 12.7 s in Python's re, twice as long for each one more

    started = time.perf_counter()
    for _ in range(10):
        assert pattern.search(hostile) is None
    elapsed = (time.perf_counter() - started) / 10

    assert elapsed < 0.010
    assert pattern.search("InstanceDown is resolved") is not None
    long = "a " * (MAX_TEXT // 2)
    started = time.perf_counter()
    assert pattern.search(long + "!") is None
    assert time.perf_counter() - started < 0.010


def test_the_policy_refuses_a_repeat_inside_a_repeat_and_takes_one_repeat() -> None:
    with pytest.raises(PolicyFileError) as caught:
        policy_with(CATASTROPHIC)
    assert "alerts[0].resolve: a repeat inside a repeat" in str(caught.value)
    splits = [r"(a*)*", r"(a+)+", r"(x+|y)+z", r"(\d+\.?)+", r"(?:(\w+)\s*)+$"]
    assert [patterns.nested_repetition(p) for p in splits] == [True] * len(splits)
    # Patterns people write, with something fixed marking each turn of the repeat (or no repeat in one).
    fine = [
        r"(https?://)+",
        r"[\w\s]+ resolved",
        r"(?i)\b(critical|firing)\b",
        r"v\d+(\.\d+)*",
        r"^(\[\w+\]\s*)+",
        r"(?:[A-Z]+-\d+,?\s*)+",
        r"((ab)+c)+",
        r"(foo|bar)+",
        "(" * 400 + "a" + ")" * 400,  # deeper than the parser goes: RE2 decides
    ]
    assert [patterns.nested_repetition(p) for p in fine] == [False] * len(fine)
    facts = AlertFacts(channel_id="C0ALERTS", author=Author(user_id=None, bot_id="B0GRAFANA"), text="x")
    one_repeat = policy_with(r"(?i)^[\w\s]+ resolved$")
    assert match_resolution(one_repeat, facts, "InstanceDown is resolved") is one_repeat.alerts[0]


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        (r"(?<=\[)RESOLVED", "RE2 does not support look-behind `(?<=…)`; patterns run in linear time"),
        (r"(?<!un)resolved", "RE2 does not support look-behind `(?<!…)`"),
        (r"resolved(?!: no)", "RE2 does not support look-ahead `(?!…)`"),
        (r"(\w+) resolved \1", "RE2 does not support back-references (`\\1`)"),
        (r"(?P<host>\w+) (?P=host)", "RE2 does not support back-references (`(?P=name)`)"),
        (r"(?>a+)b", "RE2 does not support atomic groups `(?>…)`"),
        (r"resolved\Z", "RE2 has no `\\Z`: write `\\z` for the end of the text"),
        (r"(?x) resolved", "RE2 does not support the flag in `(?x…`; it knows i, m, s and U"),
        (r"a{2000}", "RE2 repeats at most 1,000 times in all ({2000})"),
        (r"\pL{1000}", "the pattern is too large for RE2 (more than 2 MiB compiled)"),
        (r"(unclosed", "bad regular expression: missing ), unterminated subpattern at position 0"),
    ],
)
def test_a_pattern_re2_cannot_run_is_refused_with_its_path_and_why(pattern: str, says: str) -> None:
    with pytest.raises(PolicyFileError) as info:
        policy_with(pattern)

    (problem,) = info.value.problems
    assert problem.path == "alerts[0].resolve"
    assert problem.message.startswith(says)


def test_match_and_quiet_hours_except_are_checked_the_same_way() -> None:
    text = POLICY.replace('"(?i)critical"', r'"(a)\\1"').replace(
        "resolve: %s", "quiet_hours: {from: '22:00', to: '07:00', except: '(?!x)'}"
    )

    with pytest.raises(PolicyFileError) as info:
        parse_policy(yaml.safe_load(text))

    assert [p.path for p in info.value.problems] == ["alerts[0].match", "alerts[0].quiet_hours.except"]
    assert "back-references" in info.value.problems[0].message
    assert "look-ahead" in info.value.problems[1].message


def test_a_refused_pattern_prints_nothing_of_re2s_own(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(patterns.PatternError):
        patterns.compile(r"(?<=a)never-compiled-before")

    assert capfd.readouterr() == ("", "")


def test_policy_patterns_are_compiled_once_when_the_policy_is_read() -> None:
    policy = policy_with(r"(?i)\bresolved\b")
    rule = policy.alerts[0]

    assert rule.pattern is rule.pattern is patterns.compile("(?i)critical")
    assert rule.resolve_pattern is patterns.compile(r"(?i)\bresolved\b")
    facts = AlertFacts(channel_id="C0ALERTS", author=Author(user_id=None, bot_id="B0X"), text="CRITICAL: disk")
    assert match_alert(policy, facts) is rule


def test_re2_reads_ascii_classes_where_re_read_unicode() -> None:
    """docs/alerts.md tells a policy's author: ``\\w``, ``\\d``, ``\\b`` are ASCII in RE2; ``\\pL`` is any letter."""
    assert patterns.compile(r"^\w+$").search("naïve") is None
    assert patterns.compile(r"^\pL+$").search("naïve") is not None
    assert patterns.compile(r"(?i)résolu").search("RÉSOLU") is not None


# ---------------------------------------------------------------- text RE2 cannot read as it came


def test_a_lone_surrogate_in_a_post_is_read_as_a_replacement_character() -> None:
    message = {"text": "*CRITICAL* \ud800 <@U0ANA> disk full", "bot_id": "B0X"}

    text = strip_mrkdwn(flatten(message, {"U0ANA": "ana"}))

    assert text == "CRITICAL \ufffd @ana disk full"
    assert patterns.compile("disk").search("\udfff disk") is not None
    assert normalise(text) == "critical \ufffd @ana disk full"
    assert identity(title_of({"attachments": [{"title": "\ud800 [FIRING:1] x"}]}, text)) == identity("\ufffd x")
