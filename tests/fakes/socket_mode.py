"""A fake Slack Socket Mode server on 127.0.0.1: the WebSocket end that ``apps.connections.open`` points at.

Point the fake Slack's ``socket_mode_url`` at ``fake.ws_url`` (``tests.fakes.slack``: ``--socket-mode-url``) and
start the app in Socket Mode with ``tests.fakes.slack.APP_TOKEN``. As Slack does, the server greets each connection
with ``hello``; ``send`` then writes envelopes on the newest connection (``envelope(...)``: ``slash_commands``, ``events_api`` or
``interactive``, each with an ``envelope_id``) all at once and returns, for each, the seconds until the app's ack
``{"envelope_id": …}`` came back on the socket. Client pings are answered (aiohttp's autoping), as Slack answers
slack_sdk's ``sdk-ping-pong`` pings. Acks are kept in ``acks`` (envelope_id → the ack's JSON).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.server import LoopbackServer

_ids = itertools.count(1)


def envelope(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A Socket Mode envelope as Slack sends one: ``kind`` is ``slash_commands``, ``events_api`` or
    ``interactive``."""
    return {
        "envelope_id": f"e{next(_ids):08d}-0000-4000-8000-000000000000",
        "payload": payload,
        "type": kind,
        "accepts_response_payload": kind != "events_api",
        **({"retry_attempt": 0, "retry_reason": ""} if kind == "events_api" else {}),
    }


class FakeSocketMode(LoopbackServer):
    """``with FakeSocketMode() as sm: …`` (its own thread and loop), or ``await sm.astart()`` in a process."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.connections: list[web.WebSocketResponse] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self._waiting: dict[str, asyncio.Future[float]] = {}

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/link"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/link", self._link)
        return app

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        hello = {
            "type": "hello",
            "num_connections": len(self.connections) + 1,
            "debug_info": {"host": "fake-socket-mode", "approximate_connection_time": 18060},
            "connection_info": {"app_id": "A0APP"},
        }
        await ws.send_str(json.dumps(hello))
        self.connections.append(ws)
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                arrived = time.perf_counter()
                ack = json.loads(message.data)
                envelope_id = ack.get("envelope_id")
                if not isinstance(envelope_id, str):
                    continue
                self.acks[envelope_id] = ack
                waiting = self._waiting.pop(envelope_id, None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(arrived)
        finally:
            self.connections.remove(ws)
        return ws

    # ------------------------------------------------------------ for the test or benchmark (any thread)

    def wait_connected(self, seconds: float = 30.0) -> None:
        """Block until an app is connected (its ``hello`` sent)."""
        deadline = time.monotonic() + seconds
        while not self.connections:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no Socket Mode connection within {seconds}s")
            time.sleep(0.05)

    def send(self, envelopes: list[dict[str, Any]], seconds: float = 30.0) -> list[float]:
        """Write ``envelopes`` on the first connection, one after another without waiting; the seconds from each
        one's write until its ack, in order. Raises ``TimeoutError`` if any is not acked within ``seconds``."""
        assert self._loop is not None, "start() the fake first"
        future = asyncio.run_coroutine_threadsafe(self.asend(envelopes, seconds), self._loop)
        return future.result(timeout=seconds + 5)

    def send_soon(self, envelopes: list[dict[str, Any]]) -> None:
        """Write ``envelopes`` without waiting for their acks (background load)."""
        assert self._loop is not None, "start() the fake first"
        asyncio.run_coroutine_threadsafe(self._write(envelopes), self._loop)

    async def _write(self, envelopes: list[dict[str, Any]]) -> None:
        for one in envelopes:
            await self.connections[-1].send_str(json.dumps(one))

    async def asend(self, envelopes: list[dict[str, Any]], seconds: float = 30.0) -> list[float]:
        ws = self.connections[-1]  # the newest: an app that stopped may not have closed its socket yet
        loop = asyncio.get_running_loop()
        sent: list[tuple[float, asyncio.Future[float]]] = []
        for one in envelopes:
            done: asyncio.Future[float] = loop.create_future()
            self._waiting[one["envelope_id"]] = done
            started = time.perf_counter()
            await ws.send_str(json.dumps(one))
            sent.append((started, done))
        async with asyncio.timeout(seconds):
            return [await done - started for started, done in sent]
