"""The interface the service needs from a message gateway (the D7 client or its dry-run twin)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from bot.domain.models import SendResult, StatusReport, Via


class MessageGateway(Protocol):
    """Sends texts and looks up their status; raises the ``D7Error`` tree on failure."""

    @property
    def dry_run(self) -> bool:
        """True when nothing really leaves the building."""
        ...

    async def send_sms(
        self,
        recipients: Sequence[str],
        content: str,
        *,
        originator: str | None = None,
        report_url: str | None = None,
        schedule_time: datetime | None = None,
    ) -> SendResult: ...

    async def send_whatsapp(
        self,
        recipients: Sequence[str],
        body: str,
        *,
        originator: str,
        cust_ref: str | None = None,
        report_url: str | None = None,
        schedule_time: datetime | None = None,
        preview_url: bool = False,
    ) -> SendResult: ...

    async def get_status(self, request_id: str, via: Via) -> StatusReport: ...

    async def aclose(self) -> None: ...
