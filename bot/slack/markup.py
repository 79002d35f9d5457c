"""Slack markup both ways: escape text so Slack shows it literally, and turn Slack markup into plain text."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.domain import patterns

# Every pattern here runs on posted text: RE2, in time linear in it (``bot.domain.patterns``).
_ENTITY = patterns.compile(r"<([^<>\n]+)>")
_SCHEME = patterns.compile(r"^https?://")
_SPECIAL = {"here": "@here", "channel": "@channel", "everyone": "@everyone"}


def escape(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` as Slack asks, so that ``<!channel>`` or ``<@U…>`` is shown, not acted on."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _entity(body: str) -> str:
    target, _, label = body.partition("|")
    if target.startswith("@"):  # <@U123|alice>
        return f"@{label}" if label else target
    if target.startswith("#"):  # <#C123|general>
        return f"#{label}" if label else target
    if target.startswith("!"):
        special = target[1:]
        if special.startswith("subteam^"):  # <!subteam^S123|@oncall>
            return label or "@" + special.removeprefix("subteam^")
        if special.startswith("date^"):  # <!date^1392734382^{date} at {time}^optional_link|fallback>
            return _date(special, label)
        return _SPECIAL.get(special, label or f"@{special}")
    url = target.removeprefix("mailto:")
    if not label or label in (target, url, _SCHEME.sub("", target)):
        return url
    return f"{label} ({url})"


# Slack's date tokens as a phone shows them: the date as numbers, the time in UTC (a phone's reader is anywhere).
_DATE_TOKENS = {
    "{date_num}": "%Y-%m-%d",
    "{date}": "%Y-%m-%d",
    "{date_short}": "%Y-%m-%d",
    "{date_long}": "%Y-%m-%d",
    "{date_pretty}": "%Y-%m-%d",
    "{date_short_pretty}": "%Y-%m-%d",
    "{date_long_pretty}": "%Y-%m-%d",
    "{time}": "%H:%M UTC",
    "{time_secs}": "%H:%M:%S UTC",
}
_DATE_TOKEN = patterns.compile(r"\{[a-z_]+\}")


def _date(special: str, fallback: str) -> str:
    """``date^<unix time>^<format>[^<link>]`` with its tokens filled in (in UTC), or the fallback when it cannot be:
    an unknown token (``{ago}``), a time that is not one."""
    _, stamp, *rest = special.split("^")
    try:
        when = datetime.fromtimestamp(int(stamp), UTC)
    except (ValueError, OverflowError, OSError):
        return fallback.strip()
    form = rest[0] if rest else ""
    if not form or any(t not in _DATE_TOKENS for t in _DATE_TOKEN.findall(form)):
        return fallback.strip()
    return _DATE_TOKEN.sub(lambda m: when.strftime(_DATE_TOKENS[m.group(0)]), form).strip()


def to_plain_text(text: str) -> str:
    """Slack-formatted text (as Slack sends it with escaping on) → what a phone should show.

    ``<@U1|alice>`` → ``@alice``; ``<!here>`` → ``@here``; ``<https://x.io|docs>`` → ``docs (https://x.io)``;
    ``&lt;`` → ``<``.
    """
    return unescape(_ENTITY.sub(lambda m: _entity(m.group(1)), text))


# Emoji shortcodes (``:red_circle:``, ``:fire::fire:``, and those rich text blocks are rendered as) at the start or
# end of a word: a phone shows them as words, and one emoji instead would make a whole SMS UCS-2. A colon inside a
# word (``db-1:5432``, ``error:timeout:retry``) or around digits (``10:30:00``) is not one.
_SHORTCODE = r"(?::[a-z0-9_+'-]*[a-z][a-z0-9_+'-]*:)+"
_LEADING_SHORTCODES = patterns.compile(rf"(^|\s){_SHORTCODE}[ \t]?")
_TRAILING_SHORTCODES = patterns.compile(rf"[ \t]?{_SHORTCODE}(\s|$)")


def without_shortcodes(text: str) -> str:
    """``:rotating_light: [FIRING] disk :fire:`` → ``[FIRING] disk``."""
    text = _TRAILING_SHORTCODES.sub(lambda m: m.group(1), text)  # first: each takes the space before it
    return _LEADING_SHORTCODES.sub(lambda m: m.group(1), text)


_CODE_BLOCK = patterns.compile(r"(?s)```\n?(.*?)\n?```")
_CODE = patterns.compile(r"`([^`\n]+)`")
_MARKS = "*_~"


def strip_mrkdwn(text: str) -> str:
    """Slack's *bold*, _italic_, ~strike~ and `code` marks removed, and each line trimmed: on a phone the
    marks are only noise (and cost characters). Underscores inside words (node_exporter) stay."""
    text = _CODE_BLOCK.sub(lambda m: m.group(1), text)
    text = _CODE.sub(lambda m: m.group(1), text)
    for _ in range(2):  # *_nested_*
        text = _without_emphasis(text)
    return "\n".join(line.strip() for line in text.splitlines())


def _flanking(char: str) -> bool:
    """A character that keeps a mark next to it from opening or closing: a word character (``re``'s ``\\w``) or
    another mark."""
    return char.isalnum() or char in _MARKS  # "_" is both


def _without_emphasis(text: str) -> str:
    """One pass of ``re.sub(r"(?<![\\w*_~])([*_~])(?=\\S)([^\\n]*?\\S)\\1(?![\\w*_~])", r"\\2", text)``, in linear
    time (that pattern is quadratic in Python's ``re``, and RE2 has no look-arounds or back-references).

    A mark opens where nothing of ``[\\w*_~]`` is before it and no space after it. Its closer is the first later
    same mark on the same line, at least two on, with no space before it and nothing of ``[\\w*_~]`` after it.
    The closers are found right to left (for each mark, the nearest two valid ones so far, as the one right after
    an opener cannot close it); then the text is read left to right, on after each closer, as ``re.sub`` does.
    """
    marks = sorted(i for mark in _MARKS for i in _positions(text, mark))
    if len(marks) < 2:
        return text
    n = len(text)
    newlines = _positions(text, "\n")
    closer = [-1] * len(marks)  # for the mark at marks[k], if it opens: where it closes, or -1
    nearest = {mark: (n, n) for mark in _MARKS}  # each mark's nearest two valid closers right of here
    line_end = n
    for k in range(len(marks) - 1, -1, -1):
        i = marks[k]
        while newlines and newlines[-1] > i:
            line_end = newlines.pop()
        mark = text[i]
        first, second = nearest[mark]
        found = first if first > i + 1 else second
        if found < line_end:
            closer[k] = found
        if i > 0 and not text[i - 1].isspace() and (i + 1 == n or not _flanking(text[i + 1])):
            nearest[mark] = (i, first)
    out: list[str] = []
    done = 0
    for k, i in enumerate(marks):
        if i < done or closer[k] < 0:
            continue
        if (i > 0 and _flanking(text[i - 1])) or i + 1 == n or text[i + 1].isspace():
            continue
        out += (text[done:i], text[i + 1 : closer[k]])
        done = closer[k] + 1
    out.append(text[done:])
    return "".join(out)


def _positions(text: str, char: str) -> list[int]:
    """Where ``char`` is in ``text``, in order."""
    found, i = [], text.find(char)
    while i >= 0:
        found.append(i)
        i = text.find(char, i + 1)
    return found
