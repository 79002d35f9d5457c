"""What the real client and its dry-run twin share: ``send_sms`` and ``send_whatsapp``, ``send`` with the fields
named, for callers that know the via (the tools, benchmarks and tests); the pipeline calls ``send``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from bot.domain.models import OutgoingText, SendResult, Via
from bot.domain.ports import RetryHook


class TextGateway(ABC):
    """Base of the ``MessageGateway`` implementations of this package."""

    @abstractmethod
    async def send(self, text: OutgoingText, on_retry: RetryHook | None = None) -> SendResult: ...

    async def send_sms(
        self, recipients: Sequence[str], content: str, *, on_retry: RetryHook | None = None, **fields: Any
    ) -> SendResult:
        """One SMS to every recipient (E.164); ``fields`` as ``OutgoingText`` names them."""
        return await self.send(OutgoingText(Via.SMS, tuple(recipients), content, **fields), on_retry)

    async def send_whatsapp(
        self, recipients: Sequence[str], body: str, *, on_retry: RetryHook | None = None, **fields: Any
    ) -> SendResult:
        """One free-form WhatsApp text to every recipient (E.164); ``fields`` as ``OutgoingText`` names them."""
        return await self.send(OutgoingText(Via.WHATSAPP, tuple(recipients), body, **fields), on_retry)
