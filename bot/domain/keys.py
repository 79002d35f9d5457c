"""Idempotency keys: every intent is recorded under one, so that Slack's redeliveries, restarts and replicas find
it taken and do nothing twice. Built here and only here; the Slack edge and the core both call these.

A key is at most ``MAX_KEY`` characters (the column's width); the parts Slack gives (trigger, view, execution and
message ids) are short, a summary's rule name may not be.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

MAX_KEY = 255


def command(trigger_id: str) -> str:
    """``/sms`` or ``/whatsapp`` with its message: Slack's trigger id is new for each invocation."""
    return f"trigger:{trigger_id}"[:MAX_KEY]


def form(view_id: str) -> str:
    """The compose form, submitted: its view id (a form is submitted once)."""
    return f"view:{view_id}"[:MAX_KEY]


def step(execution_id: str) -> str:
    """A workflow step: its ``function_execution_id`` (Slack delivers the step again under the same one)."""
    return f"step:{execution_id}"[:MAX_KEY]


def alert(channel_id: str, ts: str) -> str:
    """An alert: the message that posted it (channel and ts name one message for good)."""
    return f"alert:{channel_id}:{ts}"[:MAX_KEY]


def resolution(channel_id: str, ts: str) -> str:
    """A post (or thread reply) that resolves an alert."""
    return f"resolved:{channel_id}:{ts}"[:MAX_KEY]


def edited_resolution(alert_key: str) -> str:
    """An alert's own post edited into a resolved one: once per alert, however many edits follow."""
    return f"resolved:edit:{alert_key}"[:MAX_KEY]


def link_resolution(alert_key: str) -> str:
    """An alert resolved from a phone, by its text's action link: once per alert, however often it is clicked."""
    return f"resolved:link:{alert_key}"[:MAX_KEY]


def escalation(alert_id: str, step_index: int) -> str:
    """Step ``step_index`` (0-based) of an alert's escalation."""
    return f"escalate:{alert_id}:{step_index}"[:MAX_KEY]


def summary(rule: str, phone: str, window_start: datetime) -> str:
    """The end-of-window summary for one phone under one rule."""
    return f"summary:{rule}:{phone}:{window_start.isoformat()}"[:MAX_KEY]


def told_resolved(alert_id: str) -> str:
    """The dedup lead of an alert's RESOLVED text: one per alert, whichever resolving post comes first."""
    return hashlib.sha256(f"resolved:{alert_id}".encode()).hexdigest()[:40]


ANSWER = "answer:"


def answer(inbound_id: str, what: str) -> str:
    """The bot's one text answering what a phone sent (``what``: what it asked, and how): the inbound message."""
    return f"{ANSWER}{inbound_id}:{what}"[:MAX_KEY]


def is_answer(key: str) -> bool:
    """Whether ``key`` is an answer's (``answer``)."""
    return key.startswith(ANSWER)
