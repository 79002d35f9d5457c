"""The HTTP surface: ``POST /slack/events`` (Bolt), ``GET /healthz`` and ``GET /metrics``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.metrics import CONTENT_TYPE, Metrics

Health = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


def create_web_app(bolt: AsyncApp | None, health: Health, metrics: Metrics) -> Starlette:
    """``bolt`` is None in Socket Mode: events then arrive over the socket, not over HTTP."""
    routes = []
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
