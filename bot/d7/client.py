"""The D7 Networks client: pooled async HTTP, typed errors, and retries only where a send provably did not happen.

D7 has no idempotency key, so a send whose answer was lost (read timeout, dropped connection, 500, an answer we
cannot read) becomes ``D7OutcomeUnknownError`` and is never retried here. Status look-ups are read-only and are
retried on those failures too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from bot import __version__
from bot.d7.gateway import TextGateway
from bot.d7.retry import CLIENT_RETRY, parse_retry_after, retry_delay
from bot.d7.transport import D7Transport
from bot.d7.wire import (
    BalanceAnswer,
    ErrorAnswer,
    OtpChecked,
    OtpSent,
    OtpVerifyBody,
    SendAnswer,
    SmsLog,
    WhatsAppReport,
    build_body,
    build_otp_body,
)
from bot.domain import errors as E
from bot.domain.models import OutgoingText, RecipientStatus, SendResult, SendStatus, StatusReport, Via
from bot.domain.ports import Balance, RetryHook
from bot.domain.retry import RetryPolicy

log = logging.getLogger("bot.d7")

DEFAULT_BASE_URL = "https://api.d7networks.com"
# Connecting is quick or it is not going to work; D7 itself may take a while to answer a large batch.
DEFAULT_TIMEOUT = httpx.Timeout(connect=3.0, read=15.0, write=5.0, pool=5.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=50, keepalive_expiry=30.0)

SMS_SEND_PATH = "/messages/v1/send"
WHATSAPP_SEND_PATH = "/whatsapp/v2/send"
SMS_STATUS_PATH = "/report/v1/message-log/{request_id}"
WHATSAPP_STATUS_PATH = "/whatsapp/v2/report/{request_id}"
BALANCE_PATH = "/messages/v1/balance"
OTP_SEND_PATH = "/verify/v1/otp/send-otp"
OTP_CHECK_PATH = "/verify/v1/otp/verify-otp"
INVALID_OTP_CODE = "INVALID_OTP_CODE"  # D7's code for a wrong or expired code
# One try, no retries inside: the balance watcher has its own backoff, and nothing waits for the answer.
BALANCE_WITHIN = 10.0
# "Not offered": D7 lists the endpoint in its samples but may have retired it.
_BALANCE_ABSENT = frozenset({404, 405, 410, 501})

Sleep = Callable[[float], Awaitable[None]]
_M = TypeVar("_M", bound=BaseModel)


class _BearerAuth(httpx.Auth):
    """Adds the token to each request; keeps it out of reprs, logs and the client's default headers."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        yield request

    def __repr__(self) -> str:
        return "_BearerAuth(token=SecretStr('**********'))"


# Failures before any byte reached D7: nothing was sent.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

_ERRORS_BY_STATUS: dict[int, type[E.D7Error]] = {
    401: E.D7AuthError,
    402: E.D7InsufficientCreditError,
    404: E.D7NotFoundError,
    422: E.D7ValidationError,
    429: E.D7RateLimitedError,
    502: E.D7UnavailableError,
    503: E.D7UnavailableError,
    504: E.D7UnavailableError,
}


def _error_from_response(response: httpx.Response, *, idempotent: bool) -> E.D7Error:
    """Map an error answer to the most specific class of the tree."""
    status = response.status_code
    try:
        answer = ErrorAnswer.model_validate_json(response.content)
        detail: Any = response.json()
    except (ValidationError, ValueError):
        answer, detail = ErrorAnswer(), response.text[:500] or None
    items = answer.items()
    code = next((i.code for i in items if i.code), None)
    message = next((i.message or i.msg for i in items if i.message or i.msg), None) or (
        f"D7 answered HTTP {status} {response.reason_phrase}".rstrip()
    )
    kwargs: dict[str, Any] = {"http_status": status, "code": code, "detail": detail}
    if status in (429, 502, 503, 504):
        kwargs["retry_after"] = parse_retry_after(response.headers.get("Retry-After"))

    cls = _ERRORS_BY_STATUS.get(status)
    if status == 404 and code == "INVALID_WHATSAPP_ORIGINATOR":
        cls = E.D7InvalidOriginatorError
    if cls is E.D7ValidationError:
        errors = [E.FieldError(tuple(i.loc or ()), i.msg or "", i.type or "") for i in items if i.msg]
        if errors:
            message = "; ".join(str(e) for e in errors)
        return E.D7ValidationError(message, errors=errors, **kwargs)
    if cls is not None:
        return cls(message, **kwargs)
    if status >= 500:
        if idempotent:
            return E.D7UnavailableError(message, **kwargs)
        # A 500 comes from D7's application: it may have queued the text before failing.
        return E.D7OutcomeUnknownError(
            f"D7 failed with HTTP {status} after receiving the request; the text may have been sent", **kwargs
        )
    return E.D7Error(message, **kwargs)


class D7Client(TextGateway):
    """Async client for D7's SMS and WhatsApp APIs. One instance per process; close it with ``aclose``."""

    dry_run = False

    def __init__(
        self,
        token: SecretStr,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._retry = retry or CLIENT_RETRY
        self._sleep = sleep
        self._urls: dict[str, httpx.URL] = {}
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            auth=_BearerAuth(token),
            timeout=timeout,
            transport=transport or D7Transport(limits=limits),
            headers={"Accept": "application/json", "User-Agent": f"slack-d7-relay/{__version__}"},
        )

    def __repr__(self) -> str:
        return f"D7Client(base_url={str(self._http.base_url)!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> D7Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ public API

    async def send(self, text: OutgoingText, on_retry: RetryHook | None = None) -> SendResult:
        """Send one text to every recipient (E.164) in one request. An SMS goes as ``data_coding: text`` when every
        character is GSM-7, else ``unicode``; a WhatsApp text carries ``cust_ref`` on every recipient."""
        path = SMS_SEND_PATH if text.via is Via.SMS else WHATSAPP_SEND_PATH
        return await self._send(text.via, path, build_body(text), len(text.recipients), on_retry)

    async def get_status(self, request_id: str, via: Via) -> StatusReport:
        """Per-recipient status of an earlier request. Unknown id → ``D7NotFoundError``."""
        if not request_id or len(request_id) > 128:
            raise ValueError("request_id must be 1 to 128 characters")
        template = SMS_STATUS_PATH if via is Via.SMS else WHATSAPP_STATUS_PATH
        path = template.format(request_id=quote(request_id, safe=""))
        response = await self._request("GET", path, None, idempotent=True)
        if via is Via.SMS:
            sms = self._parse(SmsLog, response)
            return StatusReport(
                request_id=sms.request_id,
                via=via,
                recipients=[
                    RecipientStatus(
                        recipient=m.recipient,
                        status=m.status,
                        msg_id=m.msg_id,
                        parts=m.number_of_sms,
                        cost=None if m.sms_cost is None else str(m.sms_cost),
                        country=m.country,
                    )
                    for m in sms.messages
                ],
            )
        wa = self._parse(WhatsAppReport, response)
        return StatusReport(
            request_id=wa.request_id,
            via=via,
            stage=wa.request_stage,
            recipients=[
                RecipientStatus(recipient=m.recipient, status=m.status, msg_id=m.msg_id, reason=m.reason)
                for m in wa.messages
            ],
        )

    async def balance(self, within: float = BALANCE_WITHIN) -> Balance | None:
        """The account's credit (``GET /messages/v1/balance``); None when D7 does not offer it (404, or an answer
        without a readable ``balance``). One try within ``within`` seconds; a failure raises ``D7Error``."""
        try:
            async with asyncio.timeout(within):
                response = await self._http.get(BALANCE_PATH)
        except TimeoutError:
            raise E.D7UnavailableError(f"D7 did not answer the balance look-up within {within:g}s") from None
        except httpx.TransportError as exc:
            raise E.D7UnavailableError(f"D7 did not answer the balance look-up ({type(exc).__name__})") from exc
        if response.status_code in _BALANCE_ABSENT:
            return None
        if not response.is_success:
            raise _error_from_response(response, idempotent=True)
        try:
            answer = BalanceAnswer.model_validate_json(response.content)
        except ValidationError:
            log.warning("d7 balance answer could not be read (HTTP %d); taken as not offered", response.status_code)
            return None
        return Balance(answer.balance, answer.currency.upper() if answer.currency else None)

    async def send_code(self, phone: str, originator: str, content: str, expiry: int) -> str:
        """D7 Verify (``OneTimeCodes``): text a code D7 makes to ``phone`` from ``originator`` (``content`` has
        ``{}`` where the code goes; it expires after ``expiry`` seconds); D7's ``otp_id``. The body is the official
        SDK's ``send_otp`` (direct7-python-sdk, ``src/direct7/verify.py``). It texts, so it is never resent: an
        answer lost or unreadable is ``D7OutcomeUnknownError``."""
        body = build_otp_body(phone, originator, content, expiry)
        response = await self._request("POST", OTP_SEND_PATH, body.wire(), idempotent=False)
        try:
            answer = OtpSent.model_validate_json(response.content)
        except ValidationError as exc:
            raise E.D7OutcomeUnknownError(
                f"D7 answered HTTP {response.status_code} but the answer could not be read; "
                "the code may have been sent",
                http_status=response.status_code,
                detail=response.text[:500],
            ) from exc
        log.info("d7 verify code sent otp_id=%s status=%s", answer.otp_id, answer.status)
        return answer.otp_id

    async def check_code(self, otp_id: str, code: str) -> bool:
        """D7 Verify (``OneTimeCodes``): whether ``code`` is the code of ``otp_id`` (the SDK's ``verify_otp``).
        ``INVALID_OTP_CODE`` (wrong, or expired) is False; an ``otp_id`` D7 does not know is ``D7NotFoundError``.
        Not resent after a lost answer either: D7 may have counted the try, or used the code up."""
        payload = OtpVerifyBody(otp_id=otp_id, otp_code=code).wire()
        try:
            response = await self._request("POST", OTP_CHECK_PATH, payload, idempotent=False)
        except E.D7Error as exc:
            if exc.code == INVALID_OTP_CODE:
                return False
            raise
        answer = self._parse(OtpChecked, response)
        if answer.status.upper() != "APPROVED":
            raise E.D7Error(f"D7 answered the code check with status {answer.status!r}", http_status=200)
        return True

    # ------------------------------------------------------------ internals

    @staticmethod
    def _parse(model: type[_M], response: httpx.Response) -> _M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise E.D7Error(
                f"D7 answered HTTP {response.status_code} with a body that could not be read",
                http_status=response.status_code,
                detail=response.text[:500],
            ) from exc

    async def _send(self, via: Via, path: str, body: BaseModel, count: int, on_retry: RetryHook | None) -> SendResult:
        started = time.perf_counter()
        payload = body.model_dump(mode="json", exclude_none=True)
        response = await self._request("POST", path, payload, idempotent=False, on_retry=on_retry)
        try:
            answer = SendAnswer.model_validate_json(response.content)
        except ValidationError as exc:
            # D7 processed the request; without a request id we cannot know what happened.
            raise E.D7OutcomeUnknownError(
                f"D7 answered HTTP {response.status_code} but the answer could not be read; "
                "the text may have been sent",
                http_status=response.status_code,
                detail=response.text[:500],
            ) from exc
        log.info(
            "d7 send via=%s recipients=%d status=%s request_id=%s elapsed_ms=%d",
            via.value,
            count,
            answer.status,
            answer.request_id,
            (time.perf_counter() - started) * 1000,
        )
        return SendResult(request_id=answer.request_id, status=SendStatus(answer.status), created_at=answer.created_at)

    def _url(self, path: str) -> httpx.URL:
        """The endpoint's absolute URL, parsed once: httpx parses a relative one against base_url on every request
        (a tenth of the client's CPU per send, measured with bench.vs_sdk under cProfile)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(str(self._http.base_url).rstrip("/") + path)
        return url

    async def _request(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        *,
        idempotent: bool,
        on_retry: RetryHook | None = None,
    ) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            error: E.D7Error
            try:
                response = await self._http.request(method, self._url(path), json=payload)
            except _NOT_SENT as exc:
                error = E.D7UnavailableError(f"could not connect to D7 ({type(exc).__name__})")
                error.__cause__ = exc
            except httpx.TransportError as exc:
                if not idempotent:
                    raise E.D7OutcomeUnknownError(
                        f"D7 did not answer ({type(exc).__name__}); the text may or may not have been sent"
                    ) from exc
                error = E.D7UnavailableError(f"D7 did not answer ({type(exc).__name__})")
                error.__cause__ = exc
            else:
                if response.is_success:
                    return response
                error = _error_from_response(response, idempotent=idempotent)
            delay = retry_delay(self._retry, attempt, error)
            if delay is None:
                raise error
            log.warning(
                "d7 %s %s failed (%s%s); retry %d of %d in %.2fs",
                method,
                path,
                type(error).__name__,
                f" HTTP {error.http_status}" if error.http_status else "",
                attempt,
                (self._retry.max_attempts or attempt + 1) - 1,
                delay,
            )
            if on_retry is not None:
                await on_retry(error, attempt, delay)
            await self._sleep(delay)
