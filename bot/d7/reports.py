"""Delivery reports D7 posts to ``report_url``: SMS as form data, WhatsApp as JSON (either may come as either).

``parse_report`` validates one body into a ``DeliveryReport`` or raises ``ValueError`` naming what is wrong; it
never echoes the body (it holds phone numbers).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_BODY = 64 * 1024


class DeliveryReport(BaseModel):
    """One recipient's status change, as D7 reports it."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    request_id: str = Field(min_length=1, max_length=128)
    msg_id: str | None = Field(None, max_length=128)
    recipient: str = Field(min_length=3, max_length=32)
    status: str = Field(min_length=1, max_length=32)
    reason: str | None = Field(None, max_length=2000)
    event_type: str | None = None  # WhatsApp: DELIVERY_EVENTS
    cust_ref: str | None = None
    originator: str | None = None
    timestamp: int | str | None = None  # WhatsApp: milliseconds

    @field_validator("recipient")
    @classmethod
    def _phone_like(cls, value: str) -> str:
        digits = sum(c.isdigit() for c in value)
        if digits < 3 or any(not (c.isdigit() or c in "+ -()") for c in value):
            raise ValueError("not a phone number")
        return value

    @property
    def key(self) -> str:
        """What makes two reports the same report (D7 may post one several times)."""
        return f"{self.msg_id or self.request_id + ':' + self.recipient}:{self.status.lower()}"


def parse_report(body: bytes) -> DeliveryReport:
    if len(body) > MAX_BODY:
        raise ValueError("the body is too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8") from None
    data: Any
    # The body decides, not the Content-Type: D7's pages disagree on which report comes as which.
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError("the body is not valid JSON") from None
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            data = {**data["data"], **{k: v for k, v in data.items() if k != "data"}}
    else:
        data = dict(parse_qsl(text, keep_blank_values=False))
    if not isinstance(data, dict) or not data:
        raise ValueError("the body is not a delivery report")
    if isinstance(data.get("reason"), dict | list):
        data["reason"] = json.dumps(data["reason"])[:2000]
    try:
        return DeliveryReport.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors())
        raise ValueError(f"missing or invalid: {fields}") from None
