"""The HTTP surface: ``POST /slack/events`` (Bolt), ``POST /d7/reports/{secret}``, ``GET /healthz`` and
``GET /metrics``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot.metrics import CONTENT_TYPE, Metrics
from bot.sending.deliveries import Received

Health = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
Reports = Callable[[str, bytes], Awaitable[Received]]


def create_web_app(
    bolt: AsyncApp | None,
    health: Health,
    metrics: Metrics,
    reports: Reports | None = None,
    received: Callable[[str], None] | None = None,
) -> Starlette:
    """``bolt`` is None in Socket Mode: events then arrive over the socket, not over HTTP. Delivery reports are
    served in both modes (D7 posts them to ``PUBLIC_URL``)."""
    routes = []
    if reports is not None:

        async def d7_reports(request: Request) -> Response:
            body = await request.body()
            answer = await reports(request.path_params["secret"], body)
            metrics.reports.labels(str(answer.status)).inc()
            if answer.request_id is not None and received is not None:
                received(answer.request_id)  # answered now, applied next (in a batch)
            return PlainTextResponse(answer.detail, status_code=answer.status)

        routes.append(Route("/d7/reports/{secret}", d7_reports, methods=["POST"]))
    if bolt is not None:
        handler = AsyncSlackRequestHandler(bolt)

        async def slack_events(request: Request) -> Response:
            return await handler.handle(request)

        routes.append(Route("/slack/events", slack_events, methods=["POST"]))

    async def healthz(request: Request) -> Response:
        ok, body = await health()
        return JSONResponse(body, status_code=200 if ok else 503)

    async def prometheus(request: Request) -> Response:
        await health()  # refreshes the outbox depth
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    routes.append(Route("/healthz", healthz, methods=["GET"]))
    routes.append(Route("/metrics", prometheus, methods=["GET"]))
    return Starlette(routes=routes)
