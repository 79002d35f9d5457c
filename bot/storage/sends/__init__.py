"""The send log on the database, one store per job, each implementing one port of ``bot.domain.ports``:

    rows.py         rows and records mapped both ways, side by side
    table.py        what the three share: the table, the clock, a send read by id
    queue.py        SqlSendQueue   (SendQueue: the outbox: intents, leases, recovery)
    transitions.py  ... its named transitions, each one UPDATE guarded by the lease
    views.py        SqlSendViews   (SendViews: App Home and the audit)
    alert_log.py    SqlAlertLog    (AlertLog: alerts found, acknowledged, resolved)
    phones.py       SqlSendsToPhones (SendsToPhones: the latest send that texted a phone)

``SqlSendStore`` is the four on one database (``Storage.sends``).
"""

from __future__ import annotations

from bot.storage.sends.alert_log import SqlAlertLog
from bot.storage.sends.phones import SqlSendsToPhones
from bot.storage.sends.queue import RECOVERED, STALE_GIVE_UP, SqlSendQueue
from bot.storage.sends.rows import FINAL_STATES, record_of
from bot.storage.sends.views import SqlSendViews

__all__ = [
    "FINAL_STATES",
    "RECOVERED",
    "STALE_GIVE_UP",
    "SqlAlertLog",
    "SqlSendQueue",
    "SqlSendStore",
    "SqlSendViews",
    "SqlSendsToPhones",
    "record_of",
]


class SqlSendStore(SqlSendQueue, SqlSendViews, SqlAlertLog, SqlSendsToPhones):
    """``SendStore``: the queue, its read models, the alert log and the log read by phone on one database."""
