"""Logging: one line per event, text or JSON (``LOG_FORMAT=json``), never a message text or a full phone number.

``LOG_LEVEL`` sets the bot's own loggers (``bot.*``). Libraries stay at INFO or above whatever it says: at DEBUG,
slack_sdk logs every request and response body (profile phones, message texts, response_urls) and Bolt the
body of every ack. Bolt's one INFO line that quotes a request body is cut short.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

# Kept at INFO or above (and QUIET ones at WARNING). They are set by name, not only left to inherit from the root,
# so that one a library sets to DEBUG itself is held back too. ``bot.bolt`` is Bolt's app logger: its words.
THIRD_PARTY = (
    "slack_sdk",
    "slack_bolt",
    "bot.bolt",
    "aiohttp",
    "httpcore",
    "alembic",
    "asyncpg",
    "aiosqlite",
    "uvicorn",
    "h11",
    "urllib3",
    "websockets",
    "asyncio",
)
# Held at WARNING: httpx logs every request URL at INFO (ours are logged once per send already), and SQLAlchemy
# echoes every statement at INFO (it sets its own logger to WARNING when imported; INFO here would undo that).
QUIET = ("httpx", "sqlalchemy")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra=`` fields are kept as keys."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class RedactRequestBodies(logging.Filter):
    """Bolt logs "Invalid request signature detected (signature: …, timestamp: …, body: …)" at INFO for each
    badly signed request, the whole body included: a slash command's text and numbers, up to a megabyte of
    whatever was posted. Everything from "body:" on is dropped; the signature and timestamp stay.

    On the handler, not on a logger: a logger's filters only see records logged on that very logger, and Bolt
    logs this one on a child (``slack_bolt.AsyncRequestVerification``) it configures itself.
    """

    _marker = ", body: "

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("slack_bolt"):
            message = record.getMessage()
            cut = message.find(self._marker)
            if cut >= 0:
                record.msg, record.args = message[:cut] + ", body: [redacted])", None
        return True


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RedactRequestBodies())
    ours = logging.getLevelNamesMapping()[level]
    libraries = max(logging.INFO, ours)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # The root holds back every library not named in THIRD_PARTY; only ``bot`` goes below INFO.
    root.setLevel(libraries)
    logging.getLogger("bot").setLevel(ours)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(libraries)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, ours))
