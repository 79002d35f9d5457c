"""A fake D7 Networks API: a real HTTP server on 127.0.0.1 that implements D7's documented contract.

It checks the bearer token and the request bodies as strictly as D7's docs describe them, answers with D7's
own success and error shapes, keeps every request it received, and can be scripted to fail (``enqueue``):
any status and body, a delay, a hang past the client's timeout, or a connection closed without an answer.

In-process (tests): ``with FakeD7() as d7: ... d7.url ... d7.requests``. It runs its own event loop in a thread,
so it works the same from sync and async tests.
As a process (benchmarks): ``python -m tests.fakes.d7 --delay 0.05`` prints ``PORT <n>`` and serves until killed.

Delivery reports: free WhatsApp text to a number outside its 24-hour window is reported failed at once, as D7 does;
``emit_reports(status)`` (or ``POST /_reports`` to a fake process, not a D7 endpoint) posts an SMS report for every
recipient of every send so far that asked for them, as D7 posts them. ``max_recipients``: a per-request recipient
limit to enforce (D7 documents none; off by default).

D7 Verify (``/verify/v1/otp/send-otp`` and ``verify-otp``) takes the bodies of D7's official Python SDK
(github.com/d7networks/direct7-python-sdk, ``src/direct7/verify.py``) and answers as D7's API reference shows: the
fake makes each code, "texts" it (``otps``; ``otp_for(phone)`` reads the latest), lets it expire after ``expiry``
seconds on its clock (``advance``), approves it once, and answers a wrong or expired code with
``INVALID_OTP_CODE``. D7 documents no HTTP status for that answer: the fake uses 400 (the client reads the code,
whatever the status). An ``otp_id`` it never made is 404 with the not-found shape of D7's OTP status look-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.server import LoopbackServer, run_as_process

TOKEN = "d7-test-token-0123456789"
REGISTERED_WHATSAPP = ("+971501234567",)
# The approved templates of each registered WhatsApp number: template_id -> (language, body parameters).
APPROVED_TEMPLATES: dict[str, dict[str, tuple[str, int]]] = {
    "+971501234567": {"shift_alert_v2": ("en", 2), "follow_up_v1": ("en", 1), "hello_v1": ("en_US", 0)},
}

BALANCE = "/messages/v1/balance"

_NUMBER = re.compile(r"^\+?\d{6,15}$")
_SCHEDULE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}[+-]\d{2}:\d{2}$")

UNAUTHORIZED = {
    "detail": {
        "code": "ACCESS_TOKEN_SIGNATURE_VERIFICATION_FAILED",
        "message": "It looks like your requests were failed due to a missing or invalid 'Access Token'.",
    }
}
NO_CREDIT = {
    "detail": [
        {
            "code": "INSUFFICIENT_CREDIT",
            "message": "It looks like your requests failed due to insufficient credit on our account.",
        }
    ]
}
BAD_ORIGINATOR = {"detail": [{"code": "INVALID_WHATSAPP_ORIGINATOR", "message": "Invalid Originator configured"}]}
OTP_SEND = "/verify/v1/otp/send-otp"
OTP_VERIFY = "/verify/v1/otp/verify-otp"
INVALID_OTP = {"detail": {"code": "INVALID_OTP_CODE", "message": "Invalid OTP code or OTP code expired"}}
OTP_NOT_FOUND = {
    "detail": {
        "code": "MESSAGE_LOG_NOT_EXISTS",
        "message": "Given message otp id not exists in the system. Please Try Again!",
    }
}
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def validation_error(loc: list[str | int], msg: str, type_: str = "value_error") -> dict[str, Any]:
    return {"detail": [{"loc": loc, "msg": msg, "type": type_}]}


@dataclass
class Reply:
    """A scripted answer for the next matching request."""

    status: int = 200
    body: Any = None  # None: the normal answer for this status
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # "close": drop the connection without answering; "truncate": send the headers and half a body, then drop
    action: str | None = None
    path: str | None = None  # only for requests whose path starts with this


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON when it parses, else the raw text
    at: float


@dataclass
class _Send:
    via: str
    recipients: list[str]
    statuses: dict[str, str]
    reasons: dict[str, str] = field(default_factory=dict)
    report_urls: dict[str, str] = field(default_factory=dict)  # recipient → where its reports go (its message's)
    originator: str | None = None


@dataclass
class Otp:
    """A code the fake made and "texted" (``text``: the SMS as the phone got it)."""

    otp_id: str
    recipient: str
    originator: str
    content: str
    code: str
    expires_at: float  # on the fake's clock
    status: str = "OPEN"  # APPROVED once verified; a code is verified once

    @property
    def text(self) -> str:
        return self.content.replace("{}", self.code)


# What D7 reports when Meta refuses a free-form message outside the 24-hour customer-service window.
WINDOW_CLOSED_REASON = "Message failed to send because more than 24 hours have passed since the customer last replied to this number. (131047: Re-engagement message)"


class FakeD7(LoopbackServer):
    """The fake server; see the module docstring."""

    def __init__(
        self,
        *,
        token: str = TOKEN,
        registered_whatsapp: tuple[str, ...] = REGISTERED_WHATSAPP,
        templates: dict[str, dict[str, tuple[str, int]]] | None = None,
        delay: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
        max_recipients: int | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        self.token = token
        self.registered_whatsapp = set(registered_whatsapp)
        self.templates = APPROVED_TEMPLATES if templates is None else templates
        # Numbers that have not written to the business in 24 hours: a free-form WhatsApp text to them is accepted,
        # then fails with Meta's 131047 (reported to the message's report_url, and in the status look-up).
        self.window_closed: set[str] = set()
        self.reports_posted: list[dict[str, Any]] = []
        # Where reports really go: report_url's path on this base (the bot's PUBLIC_URL is not this loopback port).
        self.report_to: str | None = None
        self.delay = delay
        self.record = record
        self.credit = True
        # Recipients one send request may carry, over all its message objects; over it: 422. D7 documents no such
        # limit (see ``bot.d7.wire.MAX_RECIPIENTS_PER_REQUEST``), so by default there is none; a test sets one to
        # prove that no request goes over the bot's own.
        self.max_recipients: int | None = max_recipients
        # GET /messages/v1/balance: {"balance": ...} as in D7's samples; ``balance_offered = False`` answers 404 as
        # an API without the route does; ``balance_currency`` adds a "currency" key (D7 documents none).
        self.balance: float = 100.0
        self.balance_offered = True
        self.balance_currency: str | None = None
        # Balance reads are kept apart from ``requests`` and take only scripted replies whose ``path`` names them:
        # the bot reads the balance on its own schedule, and must not eat a reply scripted for a send.
        self.balance_reads: list[Recorded] = []
        self.requests: list[Recorded] = []
        self.sends: dict[str, _Send] = {}
        self.otps: dict[str, Otp] = {}  # D7 Verify: every code made, by otp_id, in order
        self.offset = 0.0  # seconds the fake's clock is ahead of real time (``advance``)
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.count = 0

    # ------------------------------------------------------------ control

    def enqueue(self, *replies: Reply | int) -> None:
        """Answer the next requests with these (an int is a bare status)."""
        with self._lock:
            for reply in replies:
                self._script.append(Reply(status=reply) if isinstance(reply, int) else reply)

    def set_status(self, request_id: str, recipient: str, status: str) -> None:
        self.sends[request_id].statuses[recipient] = status

    async def emit_reports(self, status: str = "delivered", *, at_once: int = 20) -> int:
        """Post a delivery report for every recipient of every SMS send accepted so far that asked for them
        (``report_url``), as D7 posts them (form data: request_id, msg_id, recipient, originator, status), at most
        ``at_once`` in flight; sets each status. Returns how many were answered 2xx. Awaited in a test's own loop
        (the bot may be serving in it), while the fake posts from its own."""
        assert self._loop is not None, "the fake is not running"
        emitting = asyncio.run_coroutine_threadsafe(self.aemit_reports(status, at_once=at_once), self._loop)
        return await asyncio.wrap_future(emitting)

    async def aemit_reports(self, status: str = "delivered", *, at_once: int = 20) -> int:
        """``emit_reports`` in the fake's own loop (and for the ``POST /_reports`` control endpoint of a fake process)."""
        todo = [
            (request_id, n, recipient, send)
            for request_id, send in list(self.sends.items())
            if send.via == "sms"
            for n, recipient in enumerate(send.recipients)
            if recipient in send.report_urls
        ]
        gate = asyncio.Semaphore(at_once)
        answered = 0

        async def one(session: aiohttp.ClientSession, request_id: str, n: int, recipient: str, send: _Send) -> None:
            nonlocal answered
            send.statuses[recipient] = status
            fields = {"request_id": request_id, "msg_id": f"{request_id}-{n}", "recipient": recipient, "status": status}
            if send.originator:
                fields["originator"] = send.originator
            url = self._report_url(send.report_urls[recipient])
            async with gate, session.post(url, data=fields) as answer:
                await answer.read()
                self.reports_posted.append(fields | {"answered": answer.status})
                answered += answer.status < 300

        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(one(session, *item) for item in todo))
        return answered

    def _report_url(self, url: str) -> str:
        """Where a report to ``url`` really goes: its path on ``report_to`` when set (the bot's PUBLIC_URL is not
        this loopback port)."""
        if self.report_to is None:
            return url
        return self.report_to.rstrip("/") + "/" + url.split("://", 1)[-1].split("/", 1)[-1]

    def bodies(self, path: str | None = None) -> list[Any]:
        return [r.body for r in self.requests if path is None or r.path == path]

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward (D7 Verify codes expire on it)."""
        self.offset += seconds

    def now(self) -> float:
        return time.time() + self.offset

    def otp_for(self, phone: str) -> str:
        """The code of the latest D7 Verify text to ``phone`` (what its owner reads on the phone)."""
        texted = [o for o in self.otps.values() if o.recipient == phone]
        if not texted:
            raise AssertionError(f"no code was texted to {phone}")
        return texted[-1].code

    # ------------------------------------------------------------ the API

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/messages/v1/send", self._send_sms)
        app.router.add_post("/whatsapp/v2/send", self._send_whatsapp)
        app.router.add_get("/report/v1/message-log/{request_id}", self._sms_status)
        app.router.add_get("/whatsapp/v2/report/{request_id}", self._whatsapp_status)
        app.router.add_get(BALANCE, self._balance)
        app.router.add_post(OTP_SEND, self._send_otp)
        app.router.add_post(OTP_VERIFY, self._verify_otp)
        app.router.add_post("/_reports", self._control_reports)  # not D7's: a benchmark asks the fake to report
        app.router.add_get("/_sends", self._control_sends)  # not D7's: what a fake process accepted
        return app

    async def _control_sends(self, request: web.Request) -> web.StreamResponse:
        """``GET /_sends``: every send request accepted, in order: its request_id and how many recipients it had."""
        return web.json_response([{"request_id": i, "recipients": len(s.recipients)} for i, s in self.sends.items()])

    async def _control_reports(self, request: web.Request) -> web.StreamResponse:
        """``POST /_reports {"to": base_url, "status": "delivered"}``: emit every report now (``emit_reports``)."""
        body = await request.json()
        if body.get("to"):
            self.report_to = str(body["to"])
        started = time.perf_counter()
        answered = await self.aemit_reports(
            str(body.get("status") or "delivered"), at_once=int(body.get("at_once", 20))
        )
        return web.json_response({"answered": answered, "seconds": time.perf_counter() - started})

    def _next_reply(self, path: str) -> Reply | None:
        with self._lock:
            for reply in self._script:
                if (reply.path is None and path != BALANCE) or (reply.path is not None and path.startswith(reply.path)):
                    self._script.remove(reply)
                    return reply
        return None

    async def _intake(self, request: web.Request) -> tuple[Any, web.StreamResponse | None]:
        """Record the request; return its body, or the answer to give instead of the normal one."""
        raw = await request.text()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        self.count += 1
        if self.record:
            kept = self.balance_reads if request.path == BALANCE else self.requests
            kept.append(
                Recorded(request.method, request.path, dict(request.headers), body, asyncio.get_running_loop().time())
            )
        reply = self._next_reply(request.path)
        if self.delay:
            await asyncio.sleep(self.delay)
        if reply is not None:
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.action == "close":
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError
            if reply.action == "truncate":
                response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
                response.content_length = 200
                await response.prepare(request)
                await response.write(b'{"request_id": "r-')
                await asyncio.sleep(0.05)
                assert request.transport is not None
                request.transport.abort()
                return body, response
            if reply.status != 200 or reply.body is not None:
                return body, self._scripted(reply)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return body, web.json_response(UNAUTHORIZED, status=401)
        if request.method == "POST" and request.content_type != "application/json":
            return body, web.json_response(validation_error(["body"], "content type must be JSON"), status=422)
        if request.method == "POST" and not isinstance(body, dict):
            return body, web.json_response(validation_error(["body"], "invalid JSON body", "value_error.json"), 422)
        return body, None

    @staticmethod
    def _scripted(reply: Reply) -> web.StreamResponse:
        defaults: dict[int, Any] = {
            401: UNAUTHORIZED,
            402: NO_CREDIT,
            404: BAD_ORIGINATOR,
            422: validation_error(["body", "messages", 0, "recipients"], "field required", "value_error.missing"),
        }
        body = reply.body if reply.body is not None else defaults.get(reply.status, {"detail": "error"})
        if isinstance(body, str):
            return web.Response(status=reply.status, text=body, headers=reply.headers)
        return web.json_response(body, status=reply.status, headers=reply.headers)

    def _accept(self, via: str, recipients: list[str], body: dict[str, Any] | None = None) -> web.Response:
        if not self.credit:
            return web.json_response(NO_CREDIT, status=402)
        if self.max_recipients is not None and len(recipients) > self.max_recipients:
            loc: list[str | int] = ["body", "messages"]
            msg = f"at most {self.max_recipients} recipients per request, got {len(recipients)}"
            return web.json_response(validation_error(loc, msg), status=422)
        request_id = str(uuid.uuid4())
        send = self.sends[request_id] = _Send(via, recipients, dict.fromkeys(recipients, "sent"))
        if via == "sms" and body is not None:  # where each recipient's reports go: its message's, else the global
            globals_ = body.get("message_globals") or {}
            send.originator = globals_.get("originator")
            for m in body["messages"]:
                url = m.get("report_url") or globals_.get("report_url")
                send.originator = send.originator or m.get("originator")
                if url:
                    send.report_urls |= dict.fromkeys(m["recipients"], url)
        created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return web.json_response({"request_id": request_id, "status": "accepted", "created_at": created})

    async def _send_sms(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._intake(request)
        if early is not None:
            return early
        problem = _check_sms(body)
        if problem is not None:
            return web.json_response(validation_error(*problem), status=422)
        recipients = [r for m in body["messages"] for r in m["recipients"]]
        return self._accept("sms", recipients, body)

    async def _send_whatsapp(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._intake(request)
        if early is not None:
            return early
        problem = _check_whatsapp(body, self.templates)
        if problem is not None:
            return web.json_response(validation_error(*problem), status=422)
        if any(m["originator"] not in self.registered_whatsapp for m in body["messages"]):
            return web.json_response(BAD_ORIGINATOR, status=404)
        recipients = [r["recipient"] for m in body["messages"] for r in m["recipients"]]
        answer = self._accept("whatsapp", recipients)
        if answer.status == 200:
            request_id = json.loads(answer.text or "{}")["request_id"]
            for m in body["messages"]:
                if m["content"]["message_type"] == "TEXT":
                    self._close_window(request_id, m)
        return answer

    def _close_window(self, request_id: str, message: dict[str, Any]) -> None:
        """Free text to numbers outside their window: failed, reported as D7 reports it."""
        send = self.sends[request_id]
        for r in message["recipients"]:
            number = r["recipient"]
            if number not in self.window_closed:
                continue
            send.statuses[number], send.reasons[number] = "failed", WINDOW_CLOSED_REASON
            if message.get("report_url"):
                event = {
                    "event_type": "DELIVERY_EVENTS",
                    "request_id": request_id,
                    "msg_id": f"wamid-{uuid.uuid4().hex[:8]}",
                    "recipient": number,
                    "status": "failed",
                    "reason": WINDOW_CLOSED_REASON,
                    "cust_ref": (r.get("reference") or {}).get("cust_ref"),
                    "originator": message["originator"],
                    "timestamp": int(time.time() * 1000),
                }
                asyncio.get_running_loop().create_task(self._report(message["report_url"], event))

    async def _report(self, url: str, event: dict[str, Any]) -> None:
        await asyncio.sleep(0.05)  # after the send's answer, as D7's reports come
        url = self._report_url(url)
        async with aiohttp.ClientSession() as session, session.post(url, json=event) as answer:
            self.reports_posted.append(event | {"answered": answer.status})

    async def _sms_status(self, request: web.Request) -> web.StreamResponse:
        _, early = await self._intake(request)
        if early is not None:
            return early
        send = self.sends.get(request.match_info["request_id"])
        if send is None or send.via != "sms":
            return web.json_response(
                {"detail": [{"code": "MESSAGE_LOG_NOT_EXISTS", "message": "Message log does not exist"}]}, status=404
            )
        return web.json_response(
            {
                "request_id": request.match_info["request_id"],
                "total_recipients": len(send.recipients),
                "channel": "sms",
                "messages": [
                    {
                        "msg_id": f"msg-{i}",
                        "recipient": r,
                        "status": send.statuses[r],
                        "number_of_sms": 1,
                        "sms_cost": 0.0042,
                        "country": "US" if r.startswith("+1") else "other",
                    }
                    for i, r in enumerate(send.recipients)
                ],
            }
        )

    async def _whatsapp_status(self, request: web.Request) -> web.StreamResponse:
        _, early = await self._intake(request)
        if early is not None:
            return early
        send = self.sends.get(request.match_info["request_id"])
        if send is None or send.via != "whatsapp":
            return web.json_response(
                {"detail": [{"code": "WHATSAPP_LOG_NOT_EXISTS", "message": "WhatsApp log does not exist"}]},
                status=404,
            )
        return web.json_response(
            {
                "request_id": request.match_info["request_id"],
                "request_stage": "processed",
                "messages": [
                    {"msg_id": f"wamid-{i}", "recipient": r, "status": send.statuses[r], "reason": send.reasons.get(r)}
                    for i, r in enumerate(send.recipients)
                ],
            }
        )

    async def _send_otp(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._intake(request)
        if early is not None:
            return early
        problem = _check_otp_send(body)
        if problem is not None:
            return web.json_response(validation_error(*problem), status=422)
        if not self.credit:
            return web.json_response(NO_CREDIT, status=402)
        expiry = int(body.get("expiry") or 600)
        length = int(body.get("otp_code_length") or 6)
        otp = Otp(
            otp_id=str(uuid.uuid4()),
            recipient=body["recipient"],
            originator=body["originator"],
            content=body.get("content") or "Your OTP code is {}",
            code="".join(str(secrets.randbelow(10)) for _ in range(length)),
            expires_at=self.now() + expiry,
        )
        self.otps[otp.otp_id] = otp
        return web.json_response({"otp_id": otp.otp_id, "status": "OPEN", "expiry": expiry})

    async def _verify_otp(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._intake(request)
        if early is not None:
            return early
        problem = _check_otp_verify(body)
        if problem is not None:
            return web.json_response(validation_error(*problem), status=422)
        otp = self.otps.get(str(body["otp_id"]).lower())
        if otp is None:
            return web.json_response(OTP_NOT_FOUND, status=404)
        if otp.status != "OPEN" or otp.expires_at <= self.now() or str(body["otp_code"]) != otp.code:
            return web.json_response(INVALID_OTP, status=400)
        otp.status = "APPROVED"
        return web.json_response({"status": "APPROVED"})

    async def _balance(self, request: web.Request) -> web.StreamResponse:
        _, early = await self._intake(request)
        if early is not None:
            return early
        if not self.balance_offered:
            return web.json_response({"detail": "Not Found"}, status=404)
        body: dict[str, Any] = {"balance": self.balance}
        if self.balance_currency is not None:
            body["currency"] = self.balance_currency
        return web.json_response(body)


Problem = tuple[list[str | int], str] | tuple[list[str | int], str, str]  # loc, msg (and type)


def _unknown_keys(obj: dict[str, Any], allowed: set[str], loc: list[str | int]) -> Problem | None:
    extra = sorted(set(obj) - allowed)
    return ([*loc, extra[0]], "extra fields not permitted") if extra else None


def _check_globals(body: dict[str, Any], allowed: set[str]) -> Problem | None:
    globals_ = body.get("message_globals")
    if globals_ is None:
        return None
    if not isinstance(globals_, dict):
        return (["body", "message_globals"], "value is not a valid dict")
    if (p := _unknown_keys(globals_, allowed, ["body", "message_globals"])) is not None:
        return p
    when = globals_.get("schedule_time")
    if when is not None and not _SCHEDULE.match(str(when)):
        return (["body", "message_globals", "schedule_time"], "format must be YYYY-MM-DDTHH:MM+HH:MM")
    return None


def _check_sms(body: dict[str, Any]) -> Problem | None:
    if (p := _unknown_keys(body, {"messages", "message_globals"}, ["body"])) is not None:
        return p
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return (["body", "messages"], "field required")
    allowed = {"channel", "recipients", "content", "msg_type", "data_coding", "originator", "report_url"}
    for i, m in enumerate(messages):
        loc: list[str | int] = ["body", "messages", i]
        if not isinstance(m, dict):
            return (loc, "value is not a valid dict")
        if "schedule_time" in m:
            return ([*loc, "schedule_time"], "schedule_time must be specified inside message_globals")
        if (p := _unknown_keys(m, allowed, loc)) is not None:
            return p
        recipients = m.get("recipients")
        if not isinstance(recipients, list) or not recipients:
            return ([*loc, "recipients"], "field required")
        for j, r in enumerate(recipients):
            if not isinstance(r, str) or not _NUMBER.match(r):
                return ([*loc, "recipients", j], "invalid mobile number")
        if not isinstance(m.get("content"), str) or not m["content"]:
            return ([*loc, "content"], "field required")
        if m.get("channel", "sms") != "sms":
            return ([*loc, "channel"], "unexpected value; permitted: 'sms'")
        if m.get("data_coding", "text") not in ("text", "unicode", "auto"):
            return ([*loc, "data_coding"], "unexpected value; permitted: 'text', 'unicode', 'auto'")
        if m.get("msg_type", "text") != "text":
            return ([*loc, "msg_type"], "unexpected value; permitted: 'text'")
    # "tag": the client's reference; the official SDK always sends it (null when unset), so D7 takes it.
    return _check_globals(body, {"originator", "report_url", "schedule_time", "tag"})


def _check_template(template: Any, approved: dict[str, tuple[str, int]], loc: list[str | int]) -> Problem | None:
    """A TEMPLATE message as Meta takes it: an approved template of this number, its language, and every body
    parameter ("0", "1"…) present, non-empty, without line breaks or tabs or more than 4 spaces in a row."""
    if not isinstance(template, dict):
        return (loc, "field required")
    if (p := _unknown_keys(template, {"template_id", "language", "body_parameter_values"}, loc)) is not None:
        return p
    known = approved.get(str(template.get("template_id")))
    if known is None:
        return ([*loc, "template_id"], "template not found for this originator")
    language, count = known
    if template.get("language") != language:
        return ([*loc, "language"], f"template is approved in '{language}'")
    values = template.get("body_parameter_values", {})
    if not isinstance(values, dict) or sorted(values) != [str(i) for i in range(count)]:
        return ([*loc, "body_parameter_values"], f"expected {count} parameter(s) keyed 0..{count - 1}")
    for key, value in values.items():
        if not isinstance(value, str) or not value.strip() or len(value) > 1024:
            return ([*loc, "body_parameter_values", key], "invalid parameter")
        if "\n" in value or "\r" in value or "\t" in value or "     " in value:
            return ([*loc, "body_parameter_values", key], "parameter has new lines, tabs or more than 4 spaces")
    return None


def _check_whatsapp(body: dict[str, Any], templates: dict[str, dict[str, tuple[str, int]]]) -> Problem | None:
    if (p := _unknown_keys(body, {"messages", "message_globals"}, ["body"])) is not None:
        return p
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return (["body", "messages"], "field required")
    for i, m in enumerate(messages):
        loc: list[str | int] = ["body", "messages", i]
        if not isinstance(m, dict):
            return (loc, "value is not a valid dict")
        if (p := _unknown_keys(m, {"originator", "content", "recipients", "report_url"}, loc)) is not None:
            return p
        if not isinstance(m.get("originator"), str):
            return ([*loc, "originator"], "field required")
        content = m.get("content")
        if not isinstance(content, dict) or content.get("message_type") not in ("TEXT", "TEMPLATE"):
            return ([*loc, "content", "message_type"], "unexpected value; permitted: 'TEXT', 'TEMPLATE'")
        if content["message_type"] == "TEMPLATE":
            if (p := _unknown_keys(content, {"message_type", "template"}, [*loc, "content"])) is not None:
                return p
            approved = templates.get(str(m["originator"]), {})
            if (p := _check_template(content.get("template"), approved, [*loc, "content", "template"])) is not None:
                return p
        else:
            text = content.get("text")
            if not isinstance(text, dict) or not isinstance(text.get("body"), str) or not text["body"]:
                return ([*loc, "content", "text", "body"], "field required")
        recipients = m.get("recipients")
        if not isinstance(recipients, list) or not recipients:
            return ([*loc, "recipients"], "field required")
        for j, r in enumerate(recipients):
            rloc: list[str | int] = [*loc, "recipients", j]
            if not isinstance(r, dict) or not _NUMBER.match(str(r.get("recipient", ""))):
                return ([*rloc, "recipient"], "invalid mobile number")
            if r.get("recipient_type") != "individual":
                return ([*rloc, "recipient_type"], "unexpected value; permitted: 'individual'")
    return _check_globals(body, {"schedule_time"})


_OTP_SEND_KEYS = {
    "originator",
    "recipient",
    "content",
    "expiry",
    "data_coding",
    "template_id",
    "otp_code_length",
    "otp_type",
    "retry_delay",
    "retry_count",
}


def _integer(value: Any) -> bool:
    """What pydantic (v1, as D7's API uses) takes for an int: an int, or a string of digits (D7's own example
    sends ``"expiry": "600"``)."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.isdigit())


def _check_otp_send(body: dict[str, Any]) -> Problem | None:
    if (p := _unknown_keys(body, _OTP_SEND_KEYS, ["body"])) is not None:
        return p
    if not isinstance(body.get("originator"), str) or not body["originator"].strip():
        return (["body", "originator"], "field required")
    if not isinstance(body.get("recipient"), str) or not _NUMBER.match(body["recipient"]):
        return (["body", "recipient"], "invalid mobile number")
    for key in ("expiry", "template_id", "otp_code_length", "retry_delay", "retry_count"):
        if key in body and not _integer(body[key]):
            return (["body", key], "value is not a valid integer", "type_error.integer")
    if "otp_code_length" in body and not 4 <= int(body["otp_code_length"]) <= 8:
        return (["body", "otp_code_length"], "ensure this value is between 4 and 8")
    if body.get("template_id") is None:
        content = body.get("content")
        if not isinstance(content, str) or not content:
            return (["body", "content"], "field required", "value_error.missing")
        if "{}" not in content:
            return (["body", "content"], "content must have a {} placeholder for the OTP code")
        if "expiry" not in body:
            return (["body", "expiry"], "field required", "value_error.missing")
        if int(body["expiry"]) <= 0:
            return (["body", "expiry"], "ensure this value is greater than 0")
    if body.get("data_coding", "text") not in ("text", "unicode", "auto"):
        return (["body", "data_coding"], "unexpected value; permitted: 'text', 'unicode', 'auto'")
    return None


def _check_otp_verify(body: dict[str, Any]) -> Problem | None:
    if (p := _unknown_keys(body, {"otp_id", "otp_code"}, ["body"])) is not None:
        return p
    if "otp_id" not in body:
        return (["body", "otp_id"], "field required", "value_error.missing")
    if not isinstance(body["otp_id"], str) or not _UUID.match(body["otp_id"]):
        return (["body", "otp_id"], "value is not a valid uuid", "type_error.uuid")
    code = body.get("otp_code")
    if code is None:
        return (["body", "otp_code"], "field required", "value_error.missing")
    if not isinstance(code, str | int) or isinstance(code, bool) or not str(code).strip():
        return (["body", "otp_code"], "str type expected", "type_error.str")
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--token", default=TOKEN)
    parser.add_argument("--max-recipients", type=int, default=None, help="refuse requests with more (422)")
    args = parser.parse_args(argv)
    fake = FakeD7(token=args.token, delay=args.delay, port=args.port, record=False, max_recipients=args.max_recipients)
    run_as_process(fake)


if __name__ == "__main__":
    main()
