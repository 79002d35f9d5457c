r"""Regular expressions that run in time linear in the text they read: RE2 (google-re2), for the policy's patterns
and for the ones the bot runs over posted text.

Python's ``re`` backtracks: ``(?i)^(\w+\s?)+ resolved$`` takes 12 s on a 28-character post, twice as long with each
character more, and the event loop waits. RE2 reads the text once whatever the pattern, in bounded memory; the
price is that it has no look-arounds or back-references (nor atomic groups, possessive repeats and conditionals),
and refuses them when a pattern is compiled. So a policy that ``check`` accepts cannot hang the bot, and a pattern
it refuses is named with the reason in plain words.

Where RE2 reads differently from ``re`` (for a policy's author; docs/alerts.md says so too): ``\w``, ``\d``, ``\s`` and
``\b`` are ASCII only (``\pL`` is any letter), ``$`` is the end of the text only (not also before a final newline;
``(?m)`` for lines) and ``\Z`` is written ``\z``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

# The parser ``re`` compiles with (Python 3.11+), to see a pattern's shape; nothing is matched with it.
from re import _constants as _sre  # type: ignore[attr-defined]
from re import _parser as _sre_parser  # type: ignore[attr-defined]
from typing import Any

import re2

# Memory for one compiled pattern (its program and its DFA's cache). A policy's pattern needs a few kilobytes; one
# that needs more than this is refused as too large, not run slowly.
MAX_MEM = 2 << 20

# U+D800..U+DFFF alone (JSON can carry "\ud800"; UTF-8 cannot) → U+FFFD, one character for one.
_LONE_SURROGATES = dict.fromkeys(range(0xD800, 0xE000), 0xFFFD)

# RE2's refusals of what ``re`` takes, in plain words: (what RE2 says, what to tell the policy's author).
_UNSUPPORTED = (
    ("(?<=", "look-behind `(?<=…)`"),
    ("(?<!", "look-behind `(?<!…)`"),
    ("(?=", "look-ahead `(?=…)`"),
    ("(?!", "look-ahead `(?!…)`"),
    ("(?P", "back-references (`(?P=name)`)"),
    ("(?>", "atomic groups `(?>…)`"),
    ("(?(", "conditionals `(?(…)…)`"),
    ("(?#", "comments `(?#…)`"),
    ("++", "possessive repeats (`++`, `*+`, `?+`)"),
    ("*+", "possessive repeats (`++`, `*+`, `?+`)"),
    ("?+", "possessive repeats (`++`, `*+`, `?+`)"),
)
_WHY = "patterns run in linear time, so look-arounds and back-references are not available"


class PatternError(ValueError):
    """A pattern RE2 cannot compile; the message says why in plain words."""


class Pattern:
    """A compiled RE2 pattern over ``str``: ``re.Pattern``'s ``search``, ``findall`` and ``sub``, in linear time."""

    __slots__ = ("_regexp",)

    def __init__(self, regexp: re2._Regexp[str]) -> None:
        self._regexp = regexp

    @property
    def pattern(self) -> str:
        return self._regexp.pattern

    def search(self, text: str) -> re2._Match[str] | None:
        try:
            return self._regexp.search(text)
        except UnicodeEncodeError:  # raised before anything was matched: read it again, readable
            return self._regexp.search(readable(text))

    def findall(self, text: str) -> list[Any]:
        try:
            return self._regexp.findall(text)
        except UnicodeEncodeError:
            return self._regexp.findall(readable(text))

    def sub(self, repl: str | Callable[[re2._Match[str]], str], text: str) -> str:
        try:
            return self._regexp.sub(repl, text)
        except UnicodeEncodeError:
            return self._regexp.sub(repl, readable(text))

    def __repr__(self) -> str:
        return f"Pattern({self.pattern!r})"


def readable(text: str) -> str:
    """``text`` as RE2 (and UTF-8) can read it: a lone surrogate, which JSON can carry, becomes U+FFFD."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.translate(_LONE_SURROGATES)
    return text


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is the caller's to report (RE2 would also print it to stderr)
    options.max_mem = MAX_MEM
    # The rest as RE2's defaults, which read like ``re``: Perl syntax and classes, leftmost-first (not longest)
    # matches, case-sensitive unless ``(?i)``, ``.`` not matching a newline unless ``(?s)``, UTF-8 text.
    return options


@functools.lru_cache(maxsize=1024)
def compile(pattern: str) -> Pattern:
    """``pattern`` compiled by RE2, once (cached by its text): the policy's are compiled when it is read.

    Raises ``PatternError`` with the reason in plain words when RE2 cannot compile it."""
    try:
        return Pattern(re2.compile(pattern, _options()))
    except re2.error as exc:
        raise PatternError(_why_not(pattern, exc)) from None


def nested_repetition(pattern: str) -> bool:
    """Whether ``pattern`` repeats a group that can split one run of text many ways: a group that opens with an
    unbounded repeat and needs nothing after it (``(\\w+\\s?)+``, ``(a*)*``, ``(\\d+\\.?)+``), itself repeated
    without bound. ``v\\d+(\\.\\d+)*`` and ``([A-Z]+-\\d+)+`` are fine: something fixed marks each turn.

    RE2 runs such a pattern in linear time like any other; the policy refuses it anyway, because it is the shape that
    takes exponential time in a backtracking engine (``re``, PCRE, JavaScript: 12 s on a 28-character post), and a
    policy's patterns are read and tried by people and tools other than the bot."""
    try:
        parsed = _sre_parser.parse(pattern)
        return _splits(list(parsed), parsed.state)
    except (re.error, RecursionError, OverflowError):
        return False  # RE2 refuses what ``re`` cannot parse (or nests this deep), with its own reason


def _splits(items: list[tuple[Any, Any]], state: Any) -> bool:
    """Whether an unbounded repeat in ``items`` (or nested in them) repeats a group that can split its text."""
    for op, av in items:
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
            body = _unwrap(list(av[2]))
            if av[1] is _sre.MAXREPEAT and body and _opens_with_a_run(body, state):
                return True
            parts = [av[2]]
        elif op is _sre.SUBPATTERN:
            parts = [av[-1]]
        elif op is _sre.BRANCH:
            parts = av[1]
        else:
            continue
        if any(_splits(list(part), state) for part in parts):
            return True
    return False


def _unwrap(items: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """A group's items, through groups that hold only a group."""
    while len(items) == 1 and items[0][0] is _sre.SUBPATTERN:
        items = list(items[0][1][-1])
    return items


def _opens_with_a_run(items: list[tuple[Any, Any]], state: Any) -> bool:
    """Whether ``items`` open with an unbounded repeat and everything after it may match nothing (in one of its
    alternatives, for a choice: ``(x+|y)+``)."""
    first = _unwrap([items[0]])
    op, av = first[0] if len(first) == 1 else items[0]
    if op is _sre.BRANCH and len(items) == 1:
        return any(alt and _opens_with_a_run(_unwrap(list(alt)), state) for alt in av[1])
    if op not in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) or av[1] is not _sre.MAXREPEAT:
        return False
    rest = _sre_parser.SubPattern(state, items[1:])
    return bool(rest.getwidth()[0] == 0)


def _why_not(pattern: str, exc: re2.error) -> str:
    said = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    if said.startswith("pattern too large"):
        return f"the pattern is too large for RE2 (more than {MAX_MEM // (1 << 20)} MiB compiled)"
    try:
        re.compile(pattern)
    except re.error as bad:  # not a regular expression for anyone: ``re`` says where
        return f"bad regular expression: {bad}"
    except (RecursionError, OverflowError):
        return f"bad regular expression: {said}"
    # ``re`` takes it: say what RE2 lacks.
    for sign, feature in _UNSUPPORTED:
        if said.endswith(sign):
            return f"RE2 does not support {feature}; {_WHY}"
    if said.startswith("invalid escape sequence: \\") and said[-1:].isdigit():
        return f"RE2 does not support back-references (`{said.rsplit(' ', 1)[-1]}`); {_WHY}"
    if said == "invalid escape sequence: \\Z":
        return "RE2 has no `\\Z`: write `\\z` for the end of the text"
    if said.startswith("invalid perl operator: (?"):
        return f"RE2 does not support the flag in `{said.rsplit(' ', 1)[-1]}…`; it knows i, m, s and U"
    if said.startswith("invalid repetition size"):
        return f"RE2 repeats at most 1,000 times in all ({said.rsplit(' ', 1)[-1]})"
    return f"RE2 cannot compile it: {said}"
