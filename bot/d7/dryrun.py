"""A gateway with the D7 client's interface that sends nothing: used when ``D7_API_TOKEN`` is unset.

It builds and checks the same wire bodies as the real client, so a dry run fails where a real send would fail
on our side, and it says loudly, every time, that nothing was sent.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime

from bot.d7.gateway import TextGateway
from bot.d7.wire import build_body
from bot.domain.errors import D7NotFoundError
from bot.domain.models import OutgoingText, RecipientStatus, SendResult, SendStatus, StatusReport, Via
from bot.domain.ports import Balance, RetryHook

log = logging.getLogger("bot.d7")

DRY_RUN_STATUS = "dry-run (not sent)"
_REMEMBERED = 10_000


class DryRunGateway(TextGateway):
    """Accepts every well-formed send, sends nothing, and answers ``dry-run-…`` request ids."""

    dry_run = True

    def __init__(self) -> None:
        self._sent: OrderedDict[str, tuple[Via, list[str]]] = OrderedDict()
        log.warning("D7_API_TOKEN is not set: DRY RUN. No SMS or WhatsApp message will be sent to anyone.")

    def __repr__(self) -> str:
        return "DryRunGateway()"

    async def aclose(self) -> None:
        self._sent.clear()

    def _record(self, via: Via, recipients: Sequence[str]) -> SendResult:
        request_id = f"dry-run-{uuid.uuid4()}"
        self._sent[request_id] = (via, list(recipients))
        while len(self._sent) > _REMEMBERED:
            self._sent.popitem(last=False)
        log.warning(
            "DRY RUN: %s to %d recipient(s) NOT sent (request_id=%s); set D7_API_TOKEN to send for real",
            via.label,
            len(recipients),
            request_id,
        )
        return SendResult(request_id, SendStatus.ACCEPTED, datetime.now(UTC), dry_run=True)

    async def send(self, text: OutgoingText, on_retry: RetryHook | None = None) -> SendResult:
        build_body(text)  # what the real client would refuse on our side, refused here too
        return self._record(text.via, text.recipients)

    async def get_status(self, request_id: str, via: Via) -> StatusReport:
        known = self._sent.get(request_id)
        if known is None or known[0] is not via:
            raise D7NotFoundError("no dry-run request with this id", http_status=404)
        return StatusReport(
            request_id=request_id,
            via=via,
            recipients=[RecipientStatus(recipient=r, status=DRY_RUN_STATUS) for r in known[1]],
        )

    async def balance(self) -> Balance | None:
        """A dry run spends nothing and has no account to read."""
        return None
