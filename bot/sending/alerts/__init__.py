"""Alerts in the outbox, one job per module:

    gate          a firing alert: dedup, the acknowledgement hold, quiet hours, per-phone limits → a verdict
    summaries     the alerts held back, one text per phone when the window ends
    escalation    nobody acknowledged in time: the next step texted
    resolution    a resolving post: RESOLVED to the phones the alert reached, once
    acknowledgement  a person has it (reaction or reply; this organisation's people only)
    rendering     the text a phone reads, and which phones an alert reaches
    verdicts      Text | Repeat | Bundle
    desk          AlertDesk: the outbox's one door to all of it

``AlertDesk.take`` decides what one alert intent (a firing alert, a summary, an escalation step or a resolution)
texts: these phones now (``Text``), nothing because it repeats one texted or acknowledged (``Repeat``), or nothing
now because every phone is held for its summary (``Bundle``).
"""

from __future__ import annotations

from bot.sending.alerts.desk import AlertDesk
from bot.sending.alerts.gate import ACKED_HOLDS
from bot.sending.alerts.resolution import RESOLVES_WITHIN
from bot.sending.alerts.summaries import SUMMARIES_REMEMBERED
from bot.sending.alerts.verdicts import Bundle, Repeat, Text, Verdict

__all__ = ["ACKED_HOLDS", "RESOLVES_WITHIN", "SUMMARIES_REMEMBERED", "AlertDesk", "Bundle", "Repeat", "Text", "Verdict"]
