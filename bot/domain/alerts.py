"""Alert forwarding, the pure part: which rule an alert matches, its fingerprint, and the text that fits.

An alert is a message a monitoring tool posted in Slack, already flattened to plain text by the Slack layer.
``match_alert`` picks the first rule of the policy that takes it; ``fingerprint`` says when two alerts are "the
same" (dedup); ``fit`` renders a rule's template and cuts the body until it fits the rule's segment budget.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain import patterns
from bot.domain.encoding import Encoding, analyze
from bot.domain.models import RecipientRef, RefKind, Via
from bot.domain.policy import GROUP_PREFIX, SCHEDULE_PREFIX, USERGROUP_ID, AlertRule, Policy

WHATSAPP_MAX_CHARS = 4096
WORD_BACKOFF = 15  # a cut may move back this many characters to end at a word

# Typographic characters that would switch a whole SMS to UCS-2 (70 characters a part instead of 160), with the
# GSM-7 text that reads the same on a phone.
GSM_SAFE: Mapping[str, str] = {
    "\u2018": "'",  # ‘
    "\u2019": "'",  # ’
    "\u201a": "'",  # ‚
    "\u201b": "'",  # ‛
    "\u2032": "'",  # ′
    "\u00b4": "'",  # ´
    "\u0060": "'",  # `
    "\u201c": '"',  # “
    "\u201d": '"',  # ”
    "\u201e": '"',  # „
    "\u201f": '"',  # ‟
    "\u2033": '"',  # ″
    "\u00ab": '"',  # «
    "\u00bb": '"',  # »
    "\u2010": "-",  # ‐
    "\u2011": "-",  # ‑
    "\u2012": "-",  # ‒
    "\u2013": "-",  # –
    "\u2014": "-",  # —
    "\u2015": "-",  # ―
    "\u2212": "-",  # −
    "\u2026": "...",  # …
    "\u2022": "*",  # •
    "\u00b7": "-",  # ·
    "\u2192": "->",  # →
    "\u2190": "<-",  # ←
    "\u2264": "<=",  # ≤
    "\u2265": ">=",  # ≥
    "\u00a0": " ",  # no-break space
    "\u2002": " ",
    "\u2003": " ",
    "\u2009": " ",  # thin space
    "\u202f": " ",  # narrow no-break space
    "\u200b": "",  # zero-width space
    "\ufeff": "",  # byte order mark
}
_GSM_SAFE_TABLE = str.maketrans(dict(GSM_SAFE))

# Parts of a character as people see it: never end a cut text with (or before) one of these.
_JOINERS = frozenset({"\u200d", "\ufe0e", "\ufe0f", "\u20e3"})

# "Numbers and timestamps ignored": dates and times first, then numbers that stand alone, with their unit if any
# (counts, values, [FIRING:3], 97%, for 5m). Digits that are part of a name (db-1, host10, eu-west-2, v1.2) stay:
# they say *which* thing is alerting.
#
# The patterns over alert text here stay ``re``: they read ``\d``, ``\s`` and ``\b`` as Unicode, which RE2 reads as
# ASCII, and fingerprints and identities already stored must stay equal. Each runs in linear time in ``re`` too
# (the text is capped first, ``bot.slack.flatten.MAX_TEXT``): no repeat inside a repeat, and what may fail after
# an unbounded run (``[.,]\d+``, ``:\s*``) gives back one character a step, once per run. tests/test_hostile_text.py
# times each on adversarial text. The number's look-behind, which RE2 lacks, is a scan (``_without_numbers``).
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|\b\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[ap]m)?\b",
    re.IGNORECASE,
)
_UNIT = frozenset("abcdefghijklmnopqrstuvwxyz%")  # after a number: 97%, 5m, 12gb


@dataclass(frozen=True)
class Author:
    """Who posted a message: a bot (``bot_id``, maybe also a ``user``) or a person."""

    user_id: str | None
    bot_id: str | None

    @property
    def is_bot(self) -> bool:
        return self.bot_id is not None

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(i for i in (self.user_id, self.bot_id) if i)


@dataclass(frozen=True)
class AlertFacts:
    """What the rules look at."""

    channel_id: str
    author: Author
    text: str  # the message flattened to plain text
    thread_reply: bool = False


def _why_not(rule: AlertRule, facts: AlertFacts) -> str | None:
    """None when ``rule`` takes the alert; otherwise the first reason it does not."""
    if facts.channel_id not in rule.slack_channels:
        return f"the channel {facts.channel_id} is not one of its slack_channels"
    if facts.thread_reply and not rule.thread_replies:
        return "the message is a thread reply (set thread_replies: true to forward those)"
    if rule.from_ == "bots" and not facts.author.is_bot:
        return "it takes posts from bots only (from: bots) and a person posted this"
    if isinstance(rule.from_, list) and not (facts.author.ids & set(rule.from_)):
        who = ", ".join(sorted(facts.author.ids)) or "nobody"
        return f"the author ({who}) is not in its from: list"
    if not rule.pattern.search(facts.text):
        return f"its match /{rule.match}/ does not match the message's text"
    return None


def _resolves(rule: AlertRule, facts: AlertFacts, title: str) -> bool:
    """Whether this post resolves an alert of ``rule``: in its channels, posted by a bot the rule takes alerts from
    (or someone in its ``from`` list: people's chatter never resolves), its title (or, with ``resolve_in: text``,
    its text) matching ``resolve`` and its title saying no firing word (Grafana's firing posts can carry a
    "Resolved" section for the recovered part of a group)."""
    if rule.resolve is None or facts.channel_id not in rule.slack_channels:
        return False
    if isinstance(rule.from_, list):
        if not (facts.author.ids & set(rule.from_)):
            return False
    elif not facts.author.is_bot:
        return False
    resolving = rule.resolve_pattern
    where = facts.text if rule.resolve_in == "text" else title
    return resolving is not None and resolving.search(where) is not None and _FIRING.search(title) is None


def match_resolution(policy: Policy, facts: AlertFacts, title: str) -> AlertRule | None:
    """The first alert rule this post resolves an alert of, or None. Asked before ``match_alert``: a resolved
    notice often still says "critical"."""
    for rule in policy.alerts:
        if _resolves(rule, facts, title):
            return rule
    return None


def resolving_rules(policy: Policy, facts: AlertFacts, title: str) -> tuple[str, ...]:
    """The names of every alert rule this post resolves alerts of: only their alerts may it end, so a bot that one
    rule takes alerts from cannot end another rule's (which takes alerts from another tool only)."""
    return tuple(rule.name for rule in policy.alerts if _resolves(rule, facts, title))


# The words that say an alert's state, not what it is about, in the tools' titles: "[FIRING:2]", "[RESOLVED]"
# (Grafana, Alertmanager), "[Alerting]", "[OK]" (Grafana's legacy alerting), "Triggered", "Recovered" (Datadog),
# "Critical:", "Warning:", "Resolved:" (Sentry's metric alerts), "Failed", "Succeeded", "failure", "success" (CI).
# Each runs in linear time: no repeat inside a repeat (the title is capped, ``bot.slack.flatten.MAX_TEXT``).
_STATE = re.compile(
    r"\[?\b(?:firing|resolved|recovered|triggered|alerting|re-?triggered|failed|failure|succeeded|success)\b"
    r"(?:[:,]\s*\d+)?\]?"
    r"|\[ok\]|^\s*(?:critical|warning|warn)\s*:",
    re.IGNORECASE,
)
# CloudWatch's own words: "<alarm> state is now ALARM: <reason>", "The alarm <name> changed state to OK: <reason>";
# the reason differs between the two (its numbers, its "not"), so the state and what follows are left out.
_STATE_CHANGE = patterns.compile(r"(?i)\b(?:state is now|changed state (?:from \w+ )?to)\s+\w+\b.*")
_FIRING = re.compile(r"\b(?:firing|triggered|alerting|re-?triggered)\b", re.IGNORECASE)
# A link as the phone text shows it: "label (https://…)" (its target, when it has a label), or a bare address.
_LINK_TARGET = patterns.compile(r"[ \t]*\((?:https?|mailto):[^\s()]*\)")
_BARE_LINK = patterns.compile(r"[ \t]*\bhttps?://[^\s()]+")


def identity(title: str) -> str:
    """What an alert is about, equal for its firing post and its resolved one: its title without the state words
    and their counts, case and spacing (``[FIRING:2] InstanceDown (prod)`` and ``[RESOLVED] InstanceDown (prod)``);
    numbers in it stay (``node 5`` is not ``node 7``)."""
    return hashlib.sha256(without_state(title).lower().encode()).hexdigest()[:40]


def without_state(title: str) -> str:
    """``[RESOLVED] InstanceDown (prod)`` → ``InstanceDown (prod)``: for the RESOLVED text and the identity."""
    about = _LINK_TARGET.sub("", _STATE_CHANGE.sub("", title))
    return " ".join(_STATE.sub(" ", about).split()).strip(" -:.")


def without_links(text: str) -> str:
    """The text without the addresses of its links (``label (https://…)`` → ``label``; bare ones left out, with a
    line that held only one, or only one and its label): what a phone can spare first when the text must be cut."""
    kept = []
    for line in text.split("\n"):
        short = _BARE_LINK.sub("", _LINK_TARGET.sub("", line)).rstrip()
        if short != line.rstrip() and (not short.strip() or short.endswith(":")):
            continue  # nothing but a link was there, or its label ("Source: https://…")
        kept.append(short)
    return "\n".join(kept)


def match_alert(policy: Policy, facts: AlertFacts) -> AlertRule | None:
    """The first alert rule that takes this message, or None."""
    for rule in policy.alerts:
        if _why_not(rule, facts) is None:
            return rule
    return None


def explain_match(policy: Policy, facts: AlertFacts) -> list[tuple[AlertRule, str | None]]:
    """Each rule in order with why it does not take the message (None: it does), up to the first that does."""
    out: list[tuple[AlertRule, str | None]] = []
    for rule in policy.alerts:
        reason = _why_not(rule, facts)
        out.append((rule, reason))
        if reason is None:
            break
    return out


def normalise(text: str) -> str:
    """The text with what changes between repeats of one alert (numbers, dates, times, spacing, case) removed."""
    return " ".join(_without_numbers(_DATETIME.sub(" ", text.lower())).split())


def _without_numbers(text: str) -> str:
    """Each number that stands alone, with its unit, as a space: ``re.sub(r"(?<![\\w.-])\\d+(?:[.,]\\d+)*[a-z%]*",
    " ", text)`` in one pass (RE2 has no look-behind). A number starts at a digit after no word character, ``.`` or
    ``-``; it takes its digits, each ``.`` or ``,`` followed by digits with them, then lowercase letters and ``%``."""
    out: list[str] = []
    done, i, n = 0, 0, len(text)
    while i < n:
        if not text[i].isdecimal() or (i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_.-")):
            i += 1
            continue
        end = i + 1
        while end < n and (text[end].isdecimal() or (text[end] in ".," and end + 1 < n and text[end + 1].isdecimal())):
            end += 1
        while end < n and text[end] in _UNIT:
            end += 1
        out += (text[done:i], " ")
        done = i = end
    out.append(text[done:])
    return "".join(out)


def fingerprint(rule_name: str, text: str) -> str:
    """Equal for repeats of the same alert under the same rule."""
    return hashlib.sha256(f"{rule_name}\n{normalise(text)}".encode()).hexdigest()[:40]


def gsm_safe(text: str) -> str:
    """Typographic characters replaced by GSM-7 look-alikes, so one curly quote does not double an SMS's cost."""
    return text.translate(_GSM_SAFE_TABLE)


def _cut(text: str, n: int) -> str:
    """``text[:n]`` moved back so that no character as people see it is split (emoji sequences, accents)."""
    n = max(0, min(n, len(text)))
    while 0 < n < len(text) and (
        text[n] in _JOINERS
        or text[n - 1] in _JOINERS
        or unicodedata.combining(text[n])
        or 0x1F3FB <= ord(text[n]) <= 0x1F3FF  # skin tone modifiers
    ):
        n -= 1
    return text[:n].rstrip()


def _tidy(head: str) -> str:
    """A cut text's end made clean: no heading left with nothing under it (``Labels:``), no lone list marker, no
    trailing punctuation before the ellipsis."""
    lines = head.rstrip(" \n").split("\n")
    while len(lines) > 1 and (lines[-1].strip() in ("-", "*", "•", "") or lines[-1].rstrip().endswith(":")):
        lines.pop()
    return "\n".join(lines).rstrip(" \n.,;:")


def render(template: str, fields: Mapping[str, str]) -> str:
    return template.format_map(dict(fields)).strip()


@dataclass(frozen=True)
class Fitted:
    text: str
    cut: bool  # the body was shortened


def fit(template: str, fields: Mapping[str, str], via: Via, max_segments: int, suffix: str = "") -> Fitted:
    """The template rendered with ``fields``, the ``text`` field cut (with an ellipsis) until the result fits.

    SMS: typographic characters become GSM-7 look-alikes first, and the result is at most ``max_segments``
    parts. WhatsApp: at most 4,096 characters. When the text does not fit, the addresses of its body's links are
    left out first, then the body is cut. If even an empty body does not fit, the whole text is cut.

    ``suffix``: what will follow the text on the phone (an action link), counted in the budget but not returned: the
    words are shortened to keep it, never it.
    """
    clean: Callable[[str], str] = gsm_safe if via is Via.SMS else (lambda s: s)
    values = {k: clean(v) for k, v in fields.items()}
    template = clean(template)

    def fits(text: str) -> bool:
        if via is Via.WHATSAPP:
            return len(text + suffix) <= WHATSAPP_MAX_CHARS
        return analyze(text + suffix).segments <= max_segments

    def ellipsis(text: str) -> str:
        return "…" if via is Via.WHATSAPP or analyze(text).encoding is Encoding.UCS2 else "..."

    whole = render(template, values)
    if fits(whole):
        return Fitted(whole, cut=False)
    if values.get("text") and "{text}" in template:
        # Too long: the addresses of links in the body go first (a tool's links are long, and the words say more
        # on a phone; a template's own {link} stays), then the body is cut.
        values = {**values, "text": without_links(values["text"])}
        whole = render(template, values)
        if fits(whole):
            return Fitted(whole, cut=True)

    def shortened(head: str, build: Callable[[str], str]) -> str:
        head = _tidy(head)
        return build(head + ellipsis(build(head)))

    body = values.get("text", "")
    attempts: list[tuple[str, Callable[[str], str]]] = []
    if "{text}" in template and body:
        attempts.append((body, lambda b: render(template, {**values, "text": b})))
    attempts.append((whole, lambda s: s))
    for source, build in attempts:
        if not fits(shortened("", build)):
            continue  # even with nothing of ``source`` left it is too long
        lo, hi = 0, len(source)  # largest n whose cut fits (fitting is monotone in n)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(shortened(_cut(source, mid), build)):
                lo = mid
            else:
                hi = mid - 1
        head = _cut(source, lo)
        if lo < len(source) and not source[lo].isspace():  # mid-word: end at the word before, if it is near
            space = max(head.rfind(" "), head.rfind("\n"))
            if space > 0 and len(head) - space <= WORD_BACKOFF:
                head = head[:space].rstrip()
        return Fitted(shortened(head, build), cut=True)
    return Fitted("", cut=True)  # only a budget below one ellipsis gets here; max_segments >= 1 prevents it


def summary_template(count: int, channels: Sequence[str], since: datetime) -> str:
    """The end-of-window text for alerts a per-phone limit held back, as a template for ``fit`` (``{text}``:
    the latest of them). ``since`` is shown in its own time zone (UTC as stored)."""
    where = ", ".join(channels).replace("{", "{{").replace("}", "}}")
    noun = "alert" if count == 1 else "alerts"
    return f"+{count} more {noun} in {where} since {since:%H:%M} {since.tzname() or ''}".rstrip() + " - latest: {text}"


def describe_window(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class AlertActivity:
    """What one alert rule did in a period: its last match, and its alerts by outcome."""

    rule: str
    last_match: datetime | None
    texted: int
    held: int  # phones held back by a per-phone limit (in a summary instead)
    repeats: int  # not texted again within the dedupe window
    refused: int


def targets_as_refs(targets: Sequence[str]) -> tuple[RecipientRef, ...]:
    """An alert rule's ``to`` (or an escalation step's), already normalised by the policy (E.164, group:NAME,
    schedule:NAME or S…), as recipient references."""
    refs = []
    for target in targets:
        if target.startswith(GROUP_PREFIX):
            refs.append(RecipientRef(RefKind.CONTACTS, target.removeprefix(GROUP_PREFIX)))
        elif target.startswith(SCHEDULE_PREFIX):
            refs.append(RecipientRef(RefKind.SCHEDULE, target.removeprefix(SCHEDULE_PREFIX)))
        elif USERGROUP_ID.match(target):
            refs.append(RecipientRef(RefKind.USERGROUP, target))
        else:
            refs.append(RecipientRef(RefKind.NUMBER, target))
    return tuple(refs)
