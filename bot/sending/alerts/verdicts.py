"""What the alert work decides for one intent: text these phones now, nothing (a repeat), or nothing now (held)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain.sends import Checked


@dataclass(frozen=True)
class Text:
    """Text these phones now (``checked.held``: the others, over their limit, get the summary). ``thread``: where
    the outcome is told when not in the request's own thread (a resolution posted on its own: the alert's).
    ``acts_on``: a firing alert's, an escalation step's or a summary's texts end with each phone's action link to
    this alert (when links are on and the text is not a WhatsApp template)."""

    checked: Checked
    thread: str | None = None
    acts_on: str | None = None  # the alert (its key) the phones' action links act on; None: the texts carry none


@dataclass(frozen=True)
class Repeat:
    """The same alert was texted within the rule's dedupe window, by ``first_id``."""

    first_id: str


@dataclass(frozen=True)
class Bundle:
    """Every phone is over its limit: nothing now, the summaries will say it."""

    checked: Checked


Verdict = Text | Repeat | Bundle
