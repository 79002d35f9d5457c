"""Serving the wired bot: HTTP with uvicorn, or Socket Mode (with the same HTTP server for ``/healthz``), until
SIGTERM/SIGINT, then letting sends in flight finish."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Generator

import uvicorn
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.adapter.socket_mode.async_internals import send_async_response
from slack_bolt.async_app import AsyncApp
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest

from bot import logs
from bot.app import Relay, open_relay
from bot.config import Settings
from bot.domain.errors import ConfigError
from bot.domain.policy import policy_warnings
from bot.slack.listeners.commands import QuickSends
from bot.tasks import RightOfWay

log = logging.getLogger("bot")


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its own shutdown, which would kill us before sends in flight finish;
    ``run`` handles the signals instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_socket_handler(relay: Relay) -> AsyncSocketModeHandler | None:
    """The Socket Mode connection (aiohttp) when ``SLACK_APP_TOKEN`` is set; None in HTTP mode."""
    token = relay.settings.slack_app_token
    if token is None:
        return None
    return _SlackFirstSocket(relay.bolt, token.get_secret_value(), right_of_way=relay.right_of_way, quick=relay.quick)


class _SlackFirstSocket(AsyncSocketModeHandler):
    """Socket Mode's envelopes, like HTTP requests (``web.SlackFirst``), go before background work until acked;
    commands that send are acked without Bolt's dispatch (``QuickSends``), as over HTTP."""

    def __init__(
        self, app: AsyncApp, app_token: str, *, right_of_way: RightOfWay, quick: QuickSends | None = None
    ) -> None:
        self.right_of_way = right_of_way
        self.quick = quick
        super().__init__(app, app_token)

    async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        answered = self.right_of_way.arrived()
        try:
            if self.quick is not None and req.type == "slash_commands" and isinstance(req.payload, dict):
                started = time.time()
                answer = await self.quick.answer_command(req.payload)
                if answer is not None:
                    await send_async_response(client, req, answer, started)  # the ack Bolt would send
                    return
            await super().handle(client, req)
        finally:
            answered()


async def run(settings: Settings) -> None:
    started = False
    try:
        async with open_relay(settings) as relay:
            started = True
            await _serve(relay, settings)
    finally:
        if started:
            log.info("stopped")


async def _serve(relay: Relay, settings: Settings) -> None:
    """HTTP (and Socket Mode, when configured) until SIGTERM or SIGINT."""
    server = _Server(
        uvicorn.Config(
            relay.web, host=settings.host, port=settings.port, log_config=None, access_log=False, lifespan="off"
        )
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # First signal: stop taking requests, finish the sends in flight. A second SIGINT: stop at once.
        loop.add_signal_handler(sig, server.handle_exit, sig, None)
    socket = make_socket_handler(relay)
    try:
        if socket is not None:
            await socket.connect_async()  # type: ignore[no-untyped-call]
            log.info("connected to Slack in Socket Mode; /healthz on %s:%d", settings.host, settings.port)
        else:
            log.info("serving Slack over HTTP on %s:%d (POST /slack/events)", settings.host, settings.port)
        log.info(
            "policy %s: %d sender(s), %d rule(s), %d alert rule(s); D7 %s; delivery reports %s",
            settings.bot_policy,
            len(relay.policy.senders),
            len(relay.policy.rules),
            len(relay.policy.alerts),
            "DRY RUN (nothing will be sent)" if relay.gateway.dry_run else "live",
            f"at {settings.public_url}d7/reports/…" if settings.public_url else "off (PUBLIC_URL is not set)",
        )
        # What ``check`` warns about, in the log too; reading every contact's type and region also fills the numbers'
        # cache, so the first send to a big group is not the one that pays for it (25 ms for 1,000 on the loop).
        for warning in policy_warnings(relay.policy):
            log.warning("policy: %s", warning)
        _settle_heap()
        await server.serve()  # returns after SIGTERM / SIGINT, once in-flight HTTP requests are answered
    finally:
        if socket is not None:
            await socket.close_async()  # type: ignore[no-untyped-call]


def _settle_heap() -> None:
    """What start-up built lives as long as the process (modules, the policy, SQLAlchemy's and Slack's clients:
    ~140,000 objects): keep it out of the garbage collector's full passes. Without this a full pass took 30–50 ms
    in the middle of a burst of requests, the slowest acks of ``bench.vs_bare_bolt`` (gc callbacks, loop lag)."""
    gc.collect()
    gc.freeze()


def _fast_event_loop() -> None:
    """uvloop when installed: about 2x the asyncio throughput on the ack path (docs/performance.md)."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(settings: Settings) -> int:
    """Run the bot until it is told to stop; 0 on a clean stop, 2 when it cannot start."""
    logs.configure(settings.log_level.value, settings.log_format.value)
    _fast_event_loop()
    try:
        asyncio.run(run(settings))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
