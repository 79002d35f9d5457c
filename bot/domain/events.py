"""What the sending core tells the rest of the process, and the in-process bus that carries it.

The core publishes plain facts (a request_id is known, D7 billed a send, a person's send changed); the
composition root subscribes whoever cares (delivery reports waiting for that id, the balance watcher, the App Home
tabs). The core never knows who listens, and nothing is wired after construction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

log = logging.getLogger("bot.events")


@dataclass(frozen=True)
class RequestIdKnown:
    """D7 answered a send with this request_id: delivery reports that came first may be waiting for it."""

    request_id: str


@dataclass(frozen=True)
class Billed:
    """D7 accepted a send that costs money: the balance is worth reading soon."""


@dataclass(frozen=True)
class SendChanged:
    """A person's send changed (its outcome told, a status shown): what shows their sends is out of date."""

    user_id: str


Event = RequestIdKnown | Billed | SendChanged
E = TypeVar("E", RequestIdKnown, Billed, SendChanged)


class Events(Protocol):
    """Where the core publishes; a publish never fails the caller and never waits."""

    def publish(self, event: Event) -> None: ...


class Bus:
    """``Events`` in one process: each event goes to the handlers subscribed to its type, at once, in order. A
    handler that raises is logged with its traceback; the others still get the event."""

    def __init__(self) -> None:
        self._handlers: dict[type[Event], list[Callable[[Event], None]]] = {}

    def subscribe(self, kind: type[E], handler: Callable[[E], None]) -> None:
        self._handlers.setdefault(kind, []).append(handler)  # type: ignore[arg-type]

    def publish(self, event: Event) -> None:
        for handler in self._handlers.get(type(event), ()):
            try:
                handler(event)
            except Exception:
                log.exception("a handler of %s failed", type(event).__name__)
