"""An alert as a phone should read it: the lines of a flattened post in the order that says most first.

Monitoring tools write for a screen; a phone gets one SMS part (160 characters by default). Four habits of their
default formats waste it, each undone here without losing a word that says something:

- a line repeated right after itself, maybe with its link (Grafana's legacy 7.x posts its title as the message's
  text and again as the attachment's title; a post's notification text and its first block say the same);
- a line that only says the state the title already says (Grafana's ``**Firing**`` under ``[FIRING:1] …``);
- a field's label alone on its line, its value on the next (Block Kit fields written ``*Status:*\\nTriggered``), or
  with no value at all (CircleCI's ``*Mentions*: `` when nobody is mentioned);
- the words people wrote last: Grafana's label dumps (and Alertmanager templates written like them) put the
  ``summary`` and ``description`` annotations after every label (``Labels:`` / `` - k = v`` / ``Annotations:`` /
  `` - summary = …``). They come right after the title.

Linear: each line is looked at a bounded number of times, by RE2 patterns only (``without_links``).
"""

from __future__ import annotations

from bot.domain.alerts import without_links

# The annotations people write for people, most telling first.
ESSENTIAL = ("summary", "message", "description")
_STATE_LINES = frozenset({"firing", "resolved"})
_LABEL_LIMIT = 40  # a line ending in ":" at most this long is a field's label


def for_phone(text: str) -> str:
    """The flattened alert text read as a phone should: see the module's doc."""
    lines = _joined_labels(text.split("\n"))
    kept: list[str] = []
    for i, line in enumerate(lines):
        if kept and line.strip() and _same(line, kept[-1]):
            kept[-1] = max(kept[-1], line, key=len)  # the same line again: the one with its link's address
            continue
        if i > 0 and line.strip().lower() in _STATE_LINES:
            continue  # the state, which the title says
        if not line.strip() and i > 0 and lines[i - 1].strip().lower() in _STATE_LINES and kept[-1:] == [lines[0]]:
            continue  # and the blank line that set it apart from the title
        kept.append(line)
    return "\n".join(_essentials_first(_without_empty_fields(kept))).strip()


def _without_empty_fields(lines: list[str]) -> list[str]:
    """Without a field's label whose value is empty (CircleCI's ``*Mentions*: `` when nobody is mentioned): a
    label line with nothing under it before a blank line or the end."""
    kept = []
    for i, line in enumerate(lines):
        label = line.strip()
        last = i + 1 == len(lines) or not lines[i + 1].strip()
        if i > 0 and last and label.endswith(":") and len(label) <= _LABEL_LIMIT and ":" not in label[:-1]:
            continue
        kept.append(line)
    return kept


def _same(line: str, other: str) -> bool:
    """The same words, with or without their links' addresses."""
    return without_links(line).strip() == without_links(other).strip()


def _joined_labels(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        previous = out[-1].strip() if out else ""
        if (
            line.strip()
            and not line.strip().startswith(("-", "*", "•"))  # a list under a heading ("Labels:") stays a list
            and previous.endswith(":")
            and len(previous) <= _LABEL_LIMIT
            and ":" not in previous[:-1]
            and not previous.startswith(("-", "*"))
            and len(out) > 1  # not the title
        ):
            out[-1] = f"{previous} {line.strip()}"
        else:
            out.append(line)
    return out


def _annotation(line: str) -> tuple[str, str] | None:
    """``- summary = CPU is high`` → ("summary", "CPU is high")."""
    body = line.strip()
    if not body.startswith("-"):
        return None
    key, sep, value = body[1:].partition("=")
    key = key.strip()
    if not sep or not key or " " in key or not value.strip():
        return None
    return key, value.strip()


def _essentials_first(lines: list[str]) -> list[str]:
    """The ``summary``/``message``/``description`` entries of an ``Annotations:`` list, moved (as their values) to
    right after the title, in that order; the rest as it was."""
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().lower() == "annotations:")
    except StopIteration:
        return lines
    found: dict[str, int] = {}
    for i in range(start + 1, len(lines)):
        entry = _annotation(lines[i])
        if entry is None:
            break
        if entry[0].lower() in ESSENTIAL and entry[0].lower() not in found:
            found[entry[0].lower()] = i
    if not found:
        return lines
    moved = [entry[1] for k in ESSENTIAL if k in found and (entry := _annotation(lines[found[k]])) is not None]
    rest = [line for i, line in enumerate(lines) if i not in found.values()]
    if start + 1 >= len(rest) or _annotation(rest[start + 1]) is None:
        del rest[start]  # "Annotations:" with none left under it
    return [*rest[:1], *moved, *rest[1:]]
