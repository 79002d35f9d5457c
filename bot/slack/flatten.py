"""A Slack message — text, attachments, blocks — flattened to the plain text a phone should show.

Monitoring tools post in every shape: classic attachments (Grafana, Alertmanager), Block Kit (Datadog), plain
text. Slack markup is made readable: ``<@U…>`` → ``@name``, ``<url|label>`` → ``label (url)``, ``<!here>`` → ``@here``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bot.domain import patterns
from bot.slack.markup import to_plain_text

# Posted text is cut to this many characters before any pattern reads it: each part (text, an attachment's field, a
# block) and the message in all. An alert is texted in at most 50 SMS parts (about 7,650 characters) or one WhatsApp
# message (4,096), so a phone loses nothing of it; whatever was posted (Slack takes 40,000 characters of text alone,
# more in attachments and blocks), matching, flattening and fingerprints then read at most this much.
MAX_TEXT = 8_000

# What Slack shows in place of content it could not render: never the alert's words, so never a phone's.
PLACEHOLDERS = frozenset({"[no preview available]"})

_BARE_USER = patterns.compile(r"<@([UW][A-Z0-9]+)>")
_BLANK_LINES = patterns.compile(r"\n{3,}")


def capped(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters, readable by every pattern (a lone surrogate as U+FFFD)."""
    return patterns.readable(text[:limit])


def _capped_parts(parts: Iterable[str]) -> str:
    """The parts, each capped, joined by newlines, and capped in all: no more than ``MAX_TEXT`` is ever built."""
    kept: list[str] = []
    room = MAX_TEXT
    for part in parts:
        if room <= 0:
            break
        kept.append(part[:room])
        room -= len(kept[-1]) + 1
    return capped("\n".join(kept))


def mentioned_users(message: Mapping[str, Any]) -> set[str]:
    """User IDs mentioned without a name, whose names the caller may look up for ``flatten``."""
    found = set(_BARE_USER.findall(_raw_text(message)))
    for block in [*_blocks(message), *(b for a in _attachments(message) for b in _blocks(a))]:
        found |= {e["user_id"] for e in _rich_elements(block) if e.get("type") == "user" and e.get("user_id")}
    return found


def _raw_text(message: Mapping[str, Any]) -> str:
    parts = [str(message.get("text") or "")]
    for attachment in _attachments(message):
        parts += [str(attachment.get(k) or "") for k in ("pretext", "title", "text", "fallback")]
        parts += [str(f.get("value") or "") for f in attachment.get("fields") or [] if isinstance(f, Mapping)]
        parts += [p for b in _blocks(attachment) for p in _block_text(b, {})]
    return _capped_parts(parts)


def _attachments(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [a for a in message.get("attachments") or [] if isinstance(a, Mapping)]


def _blocks(holder: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The blocks of a message, or of an attachment (Sentry puts its alerts' details there)."""
    return [b for b in holder.get("blocks") or [] if isinstance(b, Mapping)]


def _rich_elements(node: Any) -> Iterable[Mapping[str, Any]]:
    if isinstance(node, Mapping):
        if node.get("type") in ("text", "link", "user", "channel", "emoji", "broadcast", "usergroup"):
            yield node
        for child in node.get("elements") or []:
            yield from _rich_elements(child)


def _rich_text(block: Mapping[str, Any], names: Mapping[str, str]) -> str:
    lines: list[str] = []
    for section in block.get("elements") or []:
        out = ""
        for e in _rich_elements(section):
            kind = e.get("type")
            if kind == "text":
                out += str(e.get("text", ""))
            elif kind == "link":
                url, label = str(e.get("url", "")), e.get("text")
                out += f"{label} ({url})" if label and label != url else url
            elif kind == "user":
                out += "@" + names.get(e.get("user_id", ""), str(e.get("user_id", "")))
            elif kind == "usergroup":
                out += "@" + str(e.get("usergroup_id", ""))
            elif kind == "channel":
                out += "#" + str(e.get("channel_id", ""))
            elif kind == "emoji":
                out += f":{e.get('name', '')}:"
            elif kind == "broadcast":
                out += "@" + str(e.get("range", ""))
        lines.append(out)
    return "\n".join(lines)


def _block_text(block: Mapping[str, Any], names: Mapping[str, str]) -> list[str]:
    kind = block.get("type")
    if kind == "rich_text":
        return [_rich_text(block, names)]
    parts: list[str] = []
    if kind in ("section", "header") and isinstance(block.get("text"), Mapping):
        parts.append(str(block["text"].get("text", "")))
    if kind == "section":
        parts += [str(f.get("text", "")) for f in block.get("fields") or [] if isinstance(f, Mapping)]
    if kind == "context":
        parts += [str(e.get("text", "")) for e in block.get("elements") or [] if isinstance(e, Mapping) and "text" in e]
    return parts


def _attachment_text(attachment: Mapping[str, Any], names: Mapping[str, str]) -> list[str]:
    """An attachment's words: pretext, title, text, fields, then its blocks; its ``fallback`` (the notification
    text) only when it says nothing else."""
    parts = [str(attachment[k]) for k in ("pretext", "title", "text") if attachment.get(k)]
    for field in attachment.get("fields") or []:
        if not isinstance(field, Mapping):
            continue
        title, value = field.get("title"), field.get("value")
        parts.append(f"{title}: {value}" if title and value else str(title or value or ""))
    for block in _blocks(attachment):
        parts += _block_text(block, names)
    if not any(p.strip() and p.strip() not in PLACEHOLDERS for p in parts) and attachment.get("fallback"):
        parts.append(str(attachment["fallback"]))
    return parts


def flatten(message: Mapping[str, Any], names: Mapping[str, str] | None = None) -> str:
    """The message as plain text; ``names`` maps user IDs to names for bare ``<@U…>`` mentions."""
    names = names or {}
    parts: list[str] = []
    for block in _blocks(message):
        parts += _block_text(block, names)
    if not any(p.strip() for p in parts) and message.get("text"):
        # With blocks, `text` is only the notification fallback; without them it is the message.
        parts.append(str(message["text"]))
    for attachment in _attachments(message):
        parts += _attachment_text(attachment, names)
    raw = _capped_parts(p.strip() for p in parts if p and p.strip() and p.strip() not in PLACEHOLDERS)
    raw = _BARE_USER.sub(lambda m: f"<@{m.group(1)}|{names[m.group(1)]}>" if m.group(1) in names else m.group(0), raw)
    text = to_plain_text(raw)
    return capped(_BLANK_LINES.sub(lambda m: "\n\n", text).strip())  # names may have made it longer
