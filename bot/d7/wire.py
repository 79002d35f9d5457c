"""D7's wire format: pydantic models of every request and response body, and the builders of send bodies.

Field names follow D7's own examples (``shared/seeds``). Bodies are serialised with ``exclude_none`` so that an
unset option is absent rather than ``null``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.domain.encoding import analyze
from bot.domain.models import OutgoingText, Via

_E164 = re.compile(r"^\+[1-9]\d{5,14}$")

# Recipients in one send request, counted over all its message objects. D7 documents no limit: its send pages
# (d7networks.com/docs/Messages/Send_Message/, and shared/seeds/000_05a3107c2e245157.txt) show several message
# objects with several recipients each and name no maximum, and none of its SDKs (d7networks/direct7-python-sdk
# src/direct7/sms.py, direct7-nodejs-sdk direct7/sms.js, direct7-go-sdk direct7/sms.go) splits or caps a list.
# 100 is our own, conservative: a request stays a few kilobytes however long the text (one message object per
# phone with action links), D7 answers it well inside our 15 s read timeout, one lost answer leaves at most 100
# phones "unknown", and a status look-up of one request_id lists at most 100 phones. The pipeline sends a larger
# send in requests of this many; the builders refuse more.
MAX_RECIPIENTS_PER_REQUEST = 100


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------- SMS: POST /messages/v1/send


class SmsMessage(_Body):
    channel: Literal["sms"] = "sms"
    recipients: list[str] = Field(min_length=1)
    content: str = Field(min_length=1)
    msg_type: Literal["text"] = "text"
    data_coding: Literal["text", "unicode", "auto"]


class SmsGlobals(_Body):
    originator: str | None = None
    report_url: str | None = None
    schedule_time: str | None = None


class SmsSendBody(_Body):
    messages: list[SmsMessage] = Field(min_length=1)
    message_globals: SmsGlobals | None = None


# ---------------------------------------------------------------- WhatsApp: POST /whatsapp/v2/send


class WhatsAppText(_Body):
    preview_url: bool = False
    body: str = Field(min_length=1)


class WhatsAppContent(_Body):
    message_type: Literal["TEXT"] = "TEXT"
    text: WhatsAppText


class WhatsAppTemplate(_Body):
    template_id: str
    language: str
    body_parameter_values: dict[str, str] = Field(default_factory=dict)  # "0", "1"…: {{1}}, {{2}}…


class WhatsAppTemplateContent(_Body):
    message_type: Literal["TEMPLATE"] = "TEMPLATE"
    template: WhatsAppTemplate


class WhatsAppReference(_Body):
    cust_ref: str | None = None
    message_tag1: str | None = None
    conversation_id: str | None = None


class WhatsAppRecipient(_Body):
    recipient: str
    recipient_type: Literal["individual"] = "individual"
    reference: WhatsAppReference | None = None


class WhatsAppMessage(_Body):
    originator: str
    content: WhatsAppContent | WhatsAppTemplateContent
    recipients: list[WhatsAppRecipient] = Field(min_length=1)
    report_url: str | None = None


class WhatsAppGlobals(_Body):
    schedule_time: str | None = None


class WhatsAppSendBody(_Body):
    messages: list[WhatsAppMessage] = Field(min_length=1)
    message_globals: WhatsAppGlobals | None = None


# ---------------------------------------------------------------- D7 Verify: POST /verify/v1/otp/send-otp, verify-otp
# As D7's official Python SDK sends them (github.com/d7networks/direct7-python-sdk, ``src/direct7/verify.py``:
# ``send_otp`` posts originator, recipient, content (``{}`` where the code goes), expiry (seconds) and data_coding;
# ``verify_otp`` posts otp_id and otp_code). Answers as D7's API reference shows them: ``{"otp_id", "status":
# "OPEN", "expiry"}`` and ``{"status": "APPROVED"}``; a wrong or expired code is ``{"detail": {"code":
# "INVALID_OTP_CODE", "message"}}``.


class OtpSendBody(_Body):
    originator: str = Field(min_length=1)
    recipient: str
    content: str = Field(min_length=3)
    expiry: int = Field(gt=0)
    data_coding: Literal["text", "unicode", "auto"]


class OtpVerifyBody(_Body):
    otp_id: str = Field(min_length=1)
    otp_code: str = Field(min_length=1)


# ---------------------------------------------------------------- answers


class SendAnswer(_Answer):
    """200 answer of both send endpoints."""

    request_id: str = Field(min_length=1)
    status: Literal["accepted", "rejected"]
    created_at: datetime | None = None


class BalanceAnswer(_Answer):
    """200 answer of ``GET /messages/v1/balance``: ``{"balance": 12.5}`` in D7's samples; a ``currency`` is read
    when present (D7 does not document one)."""

    balance: float = Field(allow_inf_nan=False)
    currency: str | None = Field(None, min_length=1, max_length=8)


class SmsLogEntry(_Answer):
    msg_id: str | None = None
    recipient: str
    status: str
    number_of_sms: int | None = None
    sms_cost: float | str | None = None
    country: str | None = None


class SmsLog(_Answer):
    """``GET /report/v1/message-log/{request_id}``."""

    request_id: str
    total_recipients: int | None = None
    channel: str | None = None
    messages: list[SmsLogEntry] = Field(default_factory=list)


class WhatsAppReportEntry(_Answer):
    msg_id: str | None = None
    recipient: str
    status: str
    reason: str | None = None
    reference: dict[str, Any] | None = None


class WhatsAppReport(_Answer):
    """``GET /whatsapp/v2/report/{request_id}``."""

    request_id: str
    request_stage: str | None = None
    messages: list[WhatsAppReportEntry] = Field(default_factory=list)


class OtpSent(_Answer):
    """200 answer of ``POST /verify/v1/otp/send-otp``."""

    otp_id: str = Field(min_length=1)
    status: str | None = None
    expiry: int | None = None


class OtpChecked(_Answer):
    """200 answer of ``POST /verify/v1/otp/verify-otp``: ``APPROVED`` when the code was right."""

    status: str


class ErrorItem(_Answer):
    """One entry of an error ``detail``: ``code``/``message`` or, for 422, ``loc``/``msg``/``type``."""

    code: str | None = None
    message: str | None = None
    loc: list[str | int] | None = None
    msg: str | None = None
    type: str | None = None


class ErrorAnswer(_Answer):
    """Error bodies: ``detail`` is an object for 401 and a list for 402/404/422."""

    detail: ErrorItem | list[ErrorItem] | str | None = None

    def items(self) -> list[ErrorItem]:
        if isinstance(self.detail, ErrorItem):
            return [self.detail]
        if isinstance(self.detail, list):
            return self.detail
        if isinstance(self.detail, str):
            return [ErrorItem(message=self.detail)]
        return []


# ---------------------------------------------------------------- builders


def format_schedule_time(when: datetime) -> str:
    """D7's ``schedule_time``: ``YYYY-MM-DDTHH:MM+HH:MM``, in the time zone ``when`` carries."""
    offset = when.utcoffset()
    if offset is None:
        raise ValueError("schedule_time needs a time zone")
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{when.strftime('%Y-%m-%dT%H:%M')}{sign}{hours:02d}:{mins:02d}"


def _check_recipients(recipients: Sequence[str]) -> list[str]:
    if not recipients:
        raise ValueError("at least one recipient is needed")
    if len(recipients) > MAX_RECIPIENTS_PER_REQUEST:
        raise ValueError(f"at most {MAX_RECIPIENTS_PER_REQUEST} recipients go in one request, got {len(recipients)}")
    bad = [r for r in recipients if not _E164.match(r)]
    if bad:
        raise ValueError(f"recipients must be in E.164 form, got {bad[0]!r}")
    return list(recipients)


def build_body(text: OutgoingText) -> SmsSendBody | WhatsAppSendBody:
    """The request body for ``text``, exactly as D7 documents it; ``ValueError`` for what D7 would refuse."""
    return build_sms_body(text) if text.via is Via.SMS else build_whatsapp_body(text)


def build_sms_body(text: OutgoingText) -> SmsSendBody:
    """One message object with every recipient (one per recipient when each text ends differently: its action
    link); options in ``message_globals``."""
    recipients = _check_recipients(text.recipients)
    if text.suffixes:
        contents = [(r, text.text + text.suffixes.get(r, "")) for r in recipients]
        messages = [
            SmsMessage(recipients=[r], content=c, data_coding=analyze(c).encoding.data_coding) for r, c in contents
        ]
    else:
        messages = [
            SmsMessage(recipients=recipients, content=text.text, data_coding=analyze(text.text).encoding.data_coding)
        ]
    globals_ = SmsGlobals(
        originator=text.originator,
        report_url=text.report_url,
        schedule_time=format_schedule_time(text.schedule_time) if text.schedule_time else None,
    )
    empty = globals_ == SmsGlobals()
    return SmsSendBody(messages=messages, message_globals=None if empty else globals_)


def build_whatsapp_body(text: OutgoingText) -> WhatsAppSendBody:
    """One message to every recipient, each tagged with our ``cust_ref``: free-form TEXT, or an approved TEMPLATE
    with its parameter values."""
    if not text.originator:
        raise ValueError("a WhatsApp send needs its originator (the registered number)")
    reference = WhatsAppReference(cust_ref=text.cust_ref) if text.cust_ref else None
    recipients = _check_recipients(text.recipients)
    groups = [([r], text.suffixes.get(r, "")) for r in recipients] if text.suffixes else [(recipients, "")]
    messages = []
    for group, ending in groups:  # one message object per recipient when each text ends with its own link
        content: WhatsAppContent | WhatsAppTemplateContent
        if text.template is None:
            content = WhatsAppContent(text=WhatsAppText(preview_url=text.preview_url, body=text.text + ending))
        else:
            t = text.template
            template = WhatsAppTemplate(
                template_id=t.template_id, language=t.language, body_parameter_values=t.body_parameter_values()
            )
            content = WhatsAppTemplateContent(template=template)
        messages.append(
            WhatsAppMessage(
                originator=text.originator,
                content=content,
                recipients=[WhatsAppRecipient(recipient=r, reference=reference) for r in group],
                report_url=text.report_url,
            )
        )
    globals_ = WhatsAppGlobals(schedule_time=format_schedule_time(text.schedule_time)) if text.schedule_time else None
    return WhatsAppSendBody(messages=messages, message_globals=globals_)


def build_otp_body(phone: str, originator: str, content: str, expiry: int) -> OtpSendBody:
    """The body that texts a D7 Verify code to ``phone``; ``ValueError`` for what D7 would refuse. ``content``
    needs ``{}`` where the code goes; it goes as GSM-7 ``text`` when it can (a code is digits)."""
    (recipient,) = _check_recipients([phone])
    if "{}" not in content:
        raise ValueError("the text of a code needs {} where the code goes")
    coding = analyze(content.replace("{}", "000000")).encoding.data_coding
    return OtpSendBody(originator=originator, recipient=recipient, content=content, expiry=expiry, data_coding=coding)
