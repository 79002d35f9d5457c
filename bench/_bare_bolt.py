"""A bare Bolt app, the baseline of ``bench.vs_bare_bolt``: ``/sms`` is acked at once, then the text goes to D7 and the
result is posted, with no policy, no database and no durability. Served like the bot (Starlette on uvicorn, uvloop
when installed, one process) with the same Slack and D7 settings from the environment.

    BENCH_BOT_CMD="-m bench._bare_bolt" (run by ``bench._bot.bot_process``)
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import aiohttp
import uvicorn
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_NUMBER = re.compile(r"^\+\d{7,15}$")


def build() -> Starlette:
    client = AsyncWebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"])
    app = AsyncApp(client=client, signing_secret=os.environ["SLACK_SIGNING_SECRET"], process_before_response=True)
    d7_url = os.environ["D7_API_URL"].rstrip("/") + "/messages/v1/send"
    d7_headers = {"Authorization": f"Bearer {os.environ['D7_API_TOKEN']}"}
    tasks: set[asyncio.Task[None]] = set()
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
        async with http.post(d7_url, json=body, headers=d7_headers) as answer:
            result: dict[str, Any] = await answer.json()
        posted = await client.chat_postMessage(channel=channel, text=f"sending to {number}")
        await client.chat_postMessage(
            channel=channel, thread_ts=posted["ts"], text=f"Accepted by D7 · request_id {result.get('request_id')}"
        )

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

    return Starlette(
        routes=[Route("/slack/events", events, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
    )


def main() -> None:
    try:
        import uvloop

        loop = "uvloop"
        del uvloop
    except ImportError:  # pragma: no cover
        loop = "asyncio"
    uvicorn.run(
        build(),
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ["PORT"]),
        log_config=None,
        access_log=False,
        lifespan="off",
        loop=loop,
    )


if __name__ == "__main__":
    main()
