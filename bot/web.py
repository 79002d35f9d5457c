"""The HTTP surface: ``POST /slack/events`` (Bolt), ``POST /d7/reports/{secret}``, ``POST /d7/inbound/{secret}``,
``GET /healthz`` and ``GET /metrics``; request bodies are capped and malformed Slack timestamps refused before
anything reads them."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler, to_starlette_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.metrics import CONTENT_TYPE, Metrics
from bot.sending.deliveries import Received
from bot.tasks import RightOfWay

log = logging.getLogger("bot.web")

# Slack's requests are a few KiB (a form submission or a message shortcut on a long alert, url-encoded, tens of
# KiB) and D7's delivery reports a few hundred bytes. One 150 MB POST took the bot from 95 to 1,146 MiB and slowed
# a real ack to 3 s; anything past this is refused with 413 before it is read.
MAX_BODY_BYTES = 1024 * 1024

# Slack sends Unix seconds. Bolt does ``int(timestamp)``: "abc", "", "1e3" or "12.5" raised (HTTP 500 and a
# traceback per request), and a few thousand digits do too (Python's int() digit limit).
_SLACK_TIMESTAMP = re.compile(r"[0-9]{1,15}")

Health = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


class ReportEndpoint(Protocol):
    """What ``POST /d7/reports/{secret}`` needs (``bot.sending.deliveries.Deliveries``)."""

    def knows(self, secret: str) -> bool: ...

    async def receive(self, secret: str, body: bytes) -> Received: ...

    def received(self, request_id: str) -> None: ...


class InboundEndpoint(Protocol):
    """What ``POST /d7/inbound/{secret}`` needs (``bot.sending.inbound.Inbox``)."""

    def knows(self, secret: str) -> bool: ...

    async def receive(self, body: bytes) -> Answer: ...


class QuickAnswers(Protocol):
    """Answers some signed Slack requests without Bolt (``bot.slack.listeners.commands.QuickSends``): None for the
    rest, which Bolt answers."""

    async def answer(self, body: bytes, timestamp: str | None, signature: str | None) -> BoltResponse | None: ...


FORM = "application/x-www-form-urlencoded"


class Answer(Protocol):
    """An HTTP status and a short body."""

    @property
    def status(self) -> int: ...

    @property
    def detail(self) -> str: ...


class BodyTooLarge(HTTPException):
    """A request body past ``MAX_BODY_BYTES``: answered 413.

    The connection is not closed with the answer: closing with unread bytes makes the kernel reset it, and the
    client never sees the 413 (over loopback, httpx got a ReadError every time). uvicorn reads the rest and throws
    it away as it arrives, a socket read at a time, so memory stays flat.
    """

    def __init__(self) -> None:
        super().__init__(413, "request body too large")


class BodyLimit:
    """Caps every route's request body.

    It wraps the receive channel rather than answering from the headers up front: the cap then applies where a
    body is actually read, so a route that answers without reading (a wrong report secret, ``/healthz``) never
    touches it, and a chunked body without ``Content-Length`` is counted as it streams in. The first read of a
    body declared too large fails before a byte of it is pulled; a streamed one fails at the message that would
    cross the cap, which is never handed on, so no route buffers more than the cap.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        read = 0

        async def limited() -> Message:
            nonlocal read
            if declared is not None and declared > self.limit:
                raise BodyTooLarge()
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited, send)


class SlackFirst:
    """Tells the right of way when a Slack request has arrived (its whole body is in: a client that stalls mid-body
    holds nothing) and when its answer starts, so background work waits while Slack does. Only ``/slack/events``:
    D7's reports and the probes are not in a hurry."""

    def __init__(self, app: ASGIApp, right_of_way: RightOfWay) -> None:
        self.app = app
        self.right_of_way = right_of_way

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        way = self.right_of_way
        if scope["type"] != "http" or scope["path"] != "/slack/events":
            await self.app(scope, receive, send)
            return
        answered: Callable[[], None] | None = None

        async def arriving() -> Message:
            nonlocal answered
            message = await receive()
            if answered is None and message["type"] == "http.request" and not message.get("more_body", False):
                answered = way.arrived()
            return message

        async def answering(message: Message) -> None:
            if answered is not None and message["type"] == "http.response.start":
                answered()
            await send(message)

        try:
            await self.app(scope, arriving, answering)
        finally:
            if answered is not None:
                answered()


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses such a request before it gets here
    return None


INBOUND_BODY_BYTES = 64 * 1024  # an inbound text is a few hundred bytes (``bot.sending.inbound.MAX_BODY``)


def _inbound_route(inbox: InboundEndpoint) -> Callable[[Request], Awaitable[Response]]:
    """Texts phones send back: a wrong secret is 404 before the body is read; a body kept is 200 (a duplicate, or one
    the bot cannot read, too: D7 must not post it again)."""

    async def d7_inbound(request: Request) -> Response:
        if not inbox.knows(request.path_params["secret"]):
            return PlainTextResponse("not found", status_code=404)
        declared = _content_length(request.scope)
        if declared is not None and declared > INBOUND_BODY_BYTES:  # said before it is sent: not read at all
            return PlainTextResponse("payload too large", status_code=413)
        body = bytearray()
        async for chunk in request.stream():  # read only as far as an inbound text can go
            body += chunk
            if len(body) > INBOUND_BODY_BYTES:
                return PlainTextResponse("payload too large", status_code=413)
        answer = await inbox.receive(bytes(body))
        return PlainTextResponse(answer.detail, status_code=answer.status)

    return d7_inbound


def _slack_route(bolt: AsyncApp, quick: QuickAnswers | None) -> Callable[[Request], Awaitable[Response]]:
    """``POST /slack/events``: a malformed timestamp refused first; a command that sends answered by ``quick``;
    anything else by Bolt."""
    handler = AsyncSlackRequestHandler(bolt)

    async def slack_events(request: Request) -> Response:
        timestamp = request.headers.get("X-Slack-Request-Timestamp")
        if timestamp is None or not _SLACK_TIMESTAMP.fullmatch(timestamp):
            log.info("refused a Slack request without a valid X-Slack-Request-Timestamp")
            # The very answer Bolt gives a bad signature.
            return to_starlette_response(BoltResponse(status=401, body={"error": "invalid request"}))
        if quick is not None and request.headers.get("content-type", "").startswith(FORM):
            # A command that sends, its intent kept, answered without Bolt's dispatch; None: anything else
            answer = await quick.answer(await request.body(), timestamp, request.headers.get("X-Slack-Signature"))
            if answer is not None:
                return to_starlette_response(answer)
        return await handler.handle(request)  # the body read above is kept by the request: Bolt reads it again

    return slack_events


def create_web_app(
    bolt: AsyncApp | None,
    health: Health,
    metrics: Metrics,
    reports: ReportEndpoint | None = None,
    right_of_way: RightOfWay | None = None,
    pages: Sequence[Route] = (),
    inbound: InboundEndpoint | None = None,
    quick: QuickAnswers | None = None,
) -> Starlette:
    """``bolt`` is None in Socket Mode: events then arrive over the socket, not over HTTP. Delivery reports are
    served in both modes (D7 posts them to ``PUBLIC_URL``). While a Slack request waits for its answer, background
    work gives ``right_of_way`` to it. ``quick`` answers the commands that send without Bolt's dispatch
    (``bot.slack.listeners.commands.QuickSends``); what it declines goes to Bolt."""
    routes = []
    if reports is not None:
        endpoint = reports

        async def d7_reports(request: Request) -> Response:
            secret = request.path_params["secret"]
            if not endpoint.knows(secret):
                # Before the body: whoever does not know the secret does not get us to read what they send.
                metrics.reports.labels("404").inc()
                return PlainTextResponse("not found", status_code=404)
            answer = await endpoint.receive(secret, await request.body())
            metrics.reports.labels(str(answer.status)).inc()
            if answer.request_id is not None:
                endpoint.received(answer.request_id)  # answered now, applied next (in a batch)
            return PlainTextResponse(answer.detail, status_code=answer.status)

        routes.append(Route("/d7/reports/{secret}", d7_reports, methods=["POST"]))
    if inbound is not None:
        routes.append(Route("/d7/inbound/{secret}", _inbound_route(inbound), methods=["POST"]))
    if bolt is not None:
        routes.append(Route("/slack/events", _slack_route(bolt, quick), methods=["POST"]))

    async def healthz(request: Request) -> Response:
        ok, body = await health()
        return JSONResponse(body, status_code=200 if ok else 503)

    async def prometheus(request: Request) -> Response:
        await health()  # refreshes the outbox depth
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    routes.extend(pages)  # the alert links' page (``bot.pages``)
    routes.append(Route("/healthz", healthz, methods=["GET"]))
    routes.append(Route("/metrics", prometheus, methods=["GET"]))
    middleware = [Middleware(BodyLimit)]
    if right_of_way is not None:
        middleware.insert(0, Middleware(SlackFirst, right_of_way=right_of_way))
    return Starlette(routes=routes, middleware=middleware)
