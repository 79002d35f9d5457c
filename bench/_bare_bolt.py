"""A bare Bolt app, the baseline of ``bench.vs_bare_bolt``: a Bolt ``AsyncApp`` doing the bot's job for ``/sms``
as naively as Bolt's docs show: ``ack()``, then the work after the ack (a task of its own). The work is the bot's,
seen from Slack and D7: a post in the channel saying a text is being sent, the D7 call, the result in that post's
thread; no policy, no database, no durability. Served like the bot (Starlette on uvicorn, uvloop when installed,
one process), with the same Slack and D7 settings from the environment; in Socket Mode when ``SLACK_APP_TOKEN`` is
set (Bolt's ``AsyncSocketModeHandler``, with ``/healthz`` still over HTTP, as the bot).

``BARE_ORDER=d7-first`` keeps the order this baseline had until issue 31: D7 first, then both posts after D7's
answer. The bot posts before D7 (people see at once that a text is going), so that order left the baseline with
less to do during a burst than the bot has (its posts wait out D7's second); it is kept to show the difference.

    BENCH_BOT_CMD="-m bench._bare_bolt" (run by ``bench._bot.bot_process``)
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import aiohttp
import uvicorn
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_NUMBER = re.compile(r"^\+\d{7,15}$")


def build() -> tuple[AsyncApp, Starlette]:
    client = AsyncWebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"])
    # process_before_response: the listener runs inline and its ack is the answer at once (Bolt's default polls for
    # the ack every 10 ms); the work goes on in a task, so this is the fastest a Bolt app acks.
    app = AsyncApp(client=client, signing_secret=os.environ["SLACK_SIGNING_SECRET"], process_before_response=True)
    d7_url = os.environ["D7_API_URL"].rstrip("/") + "/messages/v1/send"
    d7_headers = {"Authorization": f"Bearer {os.environ['D7_API_TOKEN']}"}
    tasks: set[asyncio.Task[None]] = set()
    d7_first = os.environ.get("BARE_ORDER", "announce-first") == "d7-first"
    session: dict[str, aiohttp.ClientSession] = {}

    async def send(channel: str, text: str) -> None:
        number, _, message = text.partition(" ")
        if not _NUMBER.match(number):
            return
        http = session.get("d7") or session.setdefault("d7", aiohttp.ClientSession())
        body = {
            "messages": [{"channel": "sms", "recipients": [number], "content": message, "msg_type": "text"}],
            "message_globals": {"originator": "OpsAlert"},
        }
        if d7_first:
            result = await d7(http, body)
        posted = await client.chat_postMessage(channel=channel, text=f"sending to {number}")
        if not d7_first:
            result = await d7(http, body)
        await client.chat_postMessage(
            channel=channel, thread_ts=posted["ts"], text=f"Accepted by D7 · request_id {result.get('request_id')}"
        )

    async def d7(http: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
        async with http.post(d7_url, json=body, headers=d7_headers) as answer:
            result: dict[str, Any] = await answer.json()
        return result

    @app.command("/sms")
    async def sms(ack: AsyncAck, command: dict[str, Any]) -> None:
        await ack()
        task = asyncio.create_task(send(command["channel_id"], command.get("text", "")))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    handler = AsyncSlackRequestHandler(app)

    async def events(request: Request) -> Response:
        return await handler.handle(request)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return app, Starlette(
        routes=[Route("/slack/events", events, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
    )


def main() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(serve())
    else:
        uvloop.run(serve())


async def serve() -> None:
    app, web = build()
    server = uvicorn.Server(
        uvicorn.Config(
            web,
            host=os.environ.get("HOST", "127.0.0.1"),
            port=int(os.environ["PORT"]),
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    app_token = os.environ.get("SLACK_APP_TOKEN")
    socket = AsyncSocketModeHandler(app, app_token) if app_token else None
    if socket is not None:
        await socket.connect_async()  # type: ignore[no-untyped-call]
    try:
        await server.serve()
    finally:
        if socket is not None:
            await socket.close_async()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
