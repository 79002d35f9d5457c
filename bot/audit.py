"""The send log for people: who sent what to whom, where, and how it ended (``python -m bot audit``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from bot.domain.phone import mask
from bot.domain.sends import SendRecord

COLUMNS = (
    "created_at",
    "state",
    "via",
    "team",
    "user",
    "channel",
    "sender",
    "recipients",
    "text",
    "request_id",
    "attempts",
    "detail",
)


def _detail(record: SendRecord, full_numbers: bool = False) -> str:
    notes = []
    if record.request.alert is not None:
        alert = record.request.alert
        notes.append(f"{alert.kind} of rule '{alert.rule}'")
        if record.duplicate_of:
            notes.append(f"repeat of send {record.duplicate_of}")
        if record.held:
            held = ", ".join(n if full_numbers else mask(n) for n in record.held)
            notes.append(f"held for the summary: {held}")
    if record.problems:
        notes.append("; ".join(record.problems))
    elif record.last_error is not None:
        error = record.last_error
        notes.append((f"HTTP {error.http_status}: " if error.http_status else "") + str(error))
    return " · ".join(notes)


def row(record: SendRecord, *, full_numbers: bool) -> dict[str, Any]:
    numbers = record.recipients or []
    refs = ", ".join(str(ref) for ref in record.request.recipients) if not numbers else ""
    return {
        "created_at": record.created_at.isoformat(timespec="seconds"),
        "state": record.state.value,
        "via": record.request.via.value,
        "team": record.request.origin.team_id,
        "user": record.request.user_id,
        "channel": record.request.channel_id,
        "sender": record.sender or record.request.sender or "",
        # Before checking there are no numbers yet: show what was asked (numbers in it masked too).
        "recipients": ", ".join(n if full_numbers else mask(n) for n in numbers) or _mask_refs(refs, full_numbers),
        "text": record.text_as_sent,
        "request_id": record.request_id or "",
        "attempts": record.attempts,
        "detail": _detail(record, full_numbers),
    }


def _mask_refs(refs: str, full_numbers: bool) -> str:
    if full_numbers:
        return refs
    return " ".join("•••" + word[-4:] if sum(c.isdigit() for c in word) >= 6 else word for word in refs.split(" "))


def render(records: Sequence[SendRecord], fmt: str, *, full_numbers: bool = False) -> str:
    rows = [row(r, full_numbers=full_numbers) for r in records]
    if fmt == "json":
        return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + ("\n" if rows else "")
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    shown = ("created_at", "state", "via", "user", "channel", "sender", "recipients", "request_id", "detail")
    table = [list(shown)] + [[_cell(r[c]) for c in shown] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(shown))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in table]
    lines.append(f"{len(rows)} send(s)")
    return "\n".join(lines) + "\n"


def _cell(value: Any, limit: int = 60) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
