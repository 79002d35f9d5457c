"""Delivery report bodies and status words: the pure parts, table-driven."""

from __future__ import annotations

import json

import pytest

from bot.d7.reports import parse_report
from bot.domain.delivery import Delivery, delivery_of, e164_of


@pytest.mark.parametrize(
    ("word", "delivery", "final"),
    [
        ("delivered", Delivery.DELIVERED, True),
        ("un_delivered", Delivery.UNDELIVERED, True),
        ("undelivered", Delivery.UNDELIVERED, True),
        ("UNDELIVERED", Delivery.UNDELIVERED, True),
        ("sent", Delivery.SENT, False),
        ("scheduled", Delivery.SCHEDULED, False),
        ("read", Delivery.READ, True),
        ("failed", Delivery.FAILED, True),
        ("queued_at_carrier", Delivery.OTHER, False),
    ],
)
def test_status_words(word: str, delivery: Delivery, final: bool) -> None:
    assert delivery_of(word) is delivery
    assert delivery.final is final


def test_ranks_only_move_forward() -> None:
    order = [Delivery.OTHER, Delivery.SCHEDULED, Delivery.SENT, Delivery.DELIVERED, Delivery.READ]
    assert [d.rank for d in order] == sorted(d.rank for d in order)
    assert Delivery.SENT.rank < Delivery.UNDELIVERED.rank == Delivery.DELIVERED.rank


@pytest.mark.parametrize(("raw", "e164"), [("+14155550100", "+14155550100"), ("971501234567", "+971501234567")])
def test_recipients_in_e164(raw: str, e164: str) -> None:
    assert e164_of(raw) == e164


def test_sms_form_and_whatsapp_json() -> None:
    sms = parse_report(b"request_id=r1&msg_id=m1&recipient=%2B14155550100&originator=OpsAlert&status=un_delivered")
    assert (sms.request_id, sms.msg_id, sms.recipient, sms.status, sms.key) == (
        "r1",
        "m1",
        "+14155550100",
        "un_delivered",
        "m1:un_delivered",
    )
    wa = parse_report(
        json.dumps(
            {
                "event_type": "DELIVERY_EVENTS",
                "request_id": "r2",
                "msg_id": "wamid.1",
                "recipient": "971501234567",
                "status": "read",
                "cust_ref": "send-1",
                "message_tag1": "x",
                "timestamp": 1763800000000,
            }
        ).encode()
    )
    assert (wa.request_id, wa.recipient, wa.status, wa.key) == ("r2", "971501234567", "read", "wamid.1:read")


def test_without_msg_id_the_key_is_the_request_and_recipient() -> None:
    report = parse_report(b'{"request_id": "r", "recipient": "+14155550100", "status": "Delivered"}')
    assert report.key == "r:+14155550100:delivered"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "not a delivery report"),
        (b"status=sent", "missing or invalid: request_id, recipient"),
        (b'{"request_id": "r", "recipient": "+1415555<script>", "status": "sent"}', "missing or invalid: recipient"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{" + b" " * 70000 + b"}", "too large"),
        (b'["request_id"]', "not a delivery report"),
    ],
)
def test_malformed_bodies_are_named(body: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_report(body)
