"""The dry-run gateway: same interface, nothing sent, and it says so."""

from __future__ import annotations

import logging

import pytest

from bot.d7 import DryRunGateway
from bot.domain.errors import D7NotFoundError
from bot.domain.models import SendStatus, Via


async def test_send_returns_dry_run_id_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bot.d7")
    gateway = DryRunGateway()

    result = await gateway.send_sms(["+14155550100", "+14155550101"], "hello", originator="Ops")

    assert result.request_id.startswith("dry-run-")
    assert result.status is SendStatus.ACCEPTED
    assert result.dry_run
    assert gateway.dry_run
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "D7_API_TOKEN is not set: DRY RUN. No SMS or WhatsApp message will be sent to anyone."
    assert messages[1].startswith("DRY RUN: SMS to 2 recipient(s) NOT sent (request_id=dry-run-")
    assert "+1415" not in caplog.text
    assert "hello" not in caplog.text


async def test_status_of_dry_run_send_and_unknown_id() -> None:
    gateway = DryRunGateway()
    sent = await gateway.send_whatsapp(["+14155550100"], "hi", originator="+971501234567", cust_ref="s-1")

    report = await gateway.get_status(sent.request_id, Via.WHATSAPP)

    assert [(r.recipient, r.status) for r in report.recipients] == [("+14155550100", "dry-run (not sent)")]
    with pytest.raises(D7NotFoundError):
        await gateway.get_status(sent.request_id, Via.SMS)
    with pytest.raises(D7NotFoundError):
        await gateway.get_status("dry-run-unknown", Via.WHATSAPP)


async def test_dry_run_refuses_what_d7_would_refuse() -> None:
    gateway = DryRunGateway()
    with pytest.raises(ValueError, match=r"E\.164"):
        await gateway.send_sms(["4155550100"], "x")
    with pytest.raises(ValueError, match="content"):
        await gateway.send_sms(["+14155550100"], "")
