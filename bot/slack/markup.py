"""Slack markup both ways: escape text so Slack shows it literally, and turn Slack markup into plain text."""

from __future__ import annotations

import re

_ENTITY = re.compile(r"<([^<>\n]+)>")
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
        if special.startswith("date^"):  # <!date^1392734382^{date}|fallback>
            return label
        return _SPECIAL.get(special, label or f"@{special}")
    url = target.removeprefix("mailto:")
    if not label or label in (target, url, re.sub(r"^https?://", "", target)):
        return url
    return f"{label} ({url})"


def to_plain_text(text: str) -> str:
    """Slack-formatted text (as Slack sends it with escaping on) → what a phone should show.

    ``<@U1|alice>`` → ``@alice``; ``<!here>`` → ``@here``; ``<https://x.io|docs>`` → ``docs (https://x.io)``;
    ``&lt;`` → ``<``.
    """
    return unescape(_ENTITY.sub(lambda m: _entity(m.group(1)), text))


_CODE_BLOCK = re.compile(r"```\n?(.*?)\n?```", re.DOTALL)
_CODE = re.compile(r"`([^`\n]+)`")
_EMPHASIS = re.compile(r"(?<![\w*_~])([*_~])(?=\S)([^\n]*?\S)\1(?![\w*_~])")


def strip_mrkdwn(text: str) -> str:
    """Slack's *bold*, _italic_, ~strike~ and `code` marks removed, and each line trimmed: on a phone the
    marks are only noise (and cost characters). Underscores inside words (node_exporter) stay."""
    text = _CODE_BLOCK.sub(r"\1", text)
    text = _CODE.sub(r"\1", text)
    for _ in range(2):  # *_nested_*
        text = _EMPHASIS.sub(r"\2", text)
    return "\n".join(line.strip() for line in text.splitlines())
