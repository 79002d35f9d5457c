"""The fake Slack and fake D7 of the alert storm, each as its own process, counting what the storm needs to know.

    python -m bench._storm_fakes slack [--channels N] [--no-channel-limit] [--tiers]   # prints PORT n
    python -m bench._storm_fakes d7 [--delay S] [--reports]                            # prints PORT n

Both add to the fakes of ``tests/fakes`` (whose in-process API is unchanged) a control endpoint, ``GET /_storm``,
cheap enough to ask every second: the fake Slack answers how many alerts are told (threads with a bot reply) and
its answers by method and status (429s among them); the fake D7 answers how many texts it received and the
delivery reports it posted (``--reports``, to the bot set by ``POST /_report_to``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.d7 import FakeD7
from tests.fakes.server import run_as_process
from tests.fakes.slack import Call, FakeSlack

REPORT_SENT = 1.0  # seconds after the send: D7's "sent" report
REPORT_DELIVERED = 4.0  # and its "delivered" one


def channel_ids(count: int) -> list[str]:
    """The storm's alert channels: ``C0ALERTS`` alone (the original single-channel storm), else ``C0ALERTS00``…"""
    return ["C0ALERTS"] if count == 1 else [f"C0ALERTS{i:02d}" for i in range(count)]


class StormSlack(FakeSlack):
    """FakeSlack with ``GET /_storm``: replies, threads replied in, posts per method and how many were answered 429."""

    def __init__(self, channels: list[str], channel_limit: bool) -> None:
        super().__init__(issue_on_first_use=True)
        if not channel_limit:
            self.relax_rates()
        for channel in channels:
            self.add_channel(channel)
        self._seen = 0  # calls looked at so far (the list only grows)
        self._waiting: list[Call] = []  # looked at before they were answered
        self._threads: set[tuple[str, str]] = set()
        self._reply_count = 0
        self._counts: dict[str, int] = {}

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get("/_storm", self._storm)
        return app

    async def _storm(self, request: web.Request) -> web.Response:
        # A call's status is set when it is answered: the ones still waiting are looked at again next time.
        fresh = self.calls[self._seen :]
        self._seen += len(fresh)
        waiting, self._waiting = self._waiting, []
        for call in (*waiting, *fresh):
            if call.status is None:
                self._waiting.append(call)
                continue
            key = f"{call.method}:{'ok' if call.ok else call.status}"
            self._counts[key] = self._counts.get(key, 0) + 1
            if call.method == "chat.postMessage" and call.ok and call.params.get("thread_ts"):
                self._reply_count += 1
                self._threads.add((str(call.params.get("channel")), str(call.params["thread_ts"])))
        body: dict[str, Any] = {
            "thread_replies": self._reply_count,
            "threads": len(self._threads),
            "calls": self._counts,
        }
        return web.json_response(body)


class StormD7(FakeD7):
    """FakeD7 with ``GET /_storm``: the send requests it accepted, the texts (recipients) in them, and the delivery
    reports it posted. With ``reports``, each SMS text that carried a ``report_url`` is reported as D7 reports it
    (form data): "sent" a second after the send, "delivered" ``REPORT_DELIVERED`` seconds after it, to the bot at
    the base set with ``POST /_report_to`` (the bot's PUBLIC_URL is not this loopback port)."""

    def __init__(self, delay: float, reports: bool = False) -> None:
        super().__init__(delay=delay, record=False)
        self.reports = reports
        self.reported: dict[str, int] = {}  # answer status → reports posted
        self._http: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get("/_storm", self._storm)
        app.router.add_post("/_report_to", self._set_report_to)
        return app

    async def _storm(self, request: web.Request) -> web.Response:
        sends = list(self.sends.values())
        texts = sum(len(s.recipients) for s in sends)
        return web.json_response({"requests": len(sends), "texts": texts, "reports": self.reported})

    async def _set_report_to(self, request: web.Request) -> web.Response:
        self.report_to = str((await request.json())["base"])
        return web.json_response({"ok": True})

    async def _send_sms(self, request: web.Request) -> web.StreamResponse:
        response = await super()._send_sms(request)
        if self.reports and response.status == 200 and isinstance(response, web.Response) and response.text:
            request_id = json.loads(response.text)["request_id"]
            body = json.loads(await request.text())
            default = (body.get("message_globals") or {}).get("report_url")
            for message in body["messages"]:
                if url := message.get("report_url") or default:
                    for recipient in message["recipients"]:
                        for status, after in (("sent", REPORT_SENT), ("delivered", REPORT_DELIVERED)):
                            form = {"request_id": request_id, "msg_id": f"{request_id}:{recipient}",
                                    "recipient": recipient, "originator": message.get("originator", ""),
                                    "status": status}  # fmt: skip
                            asyncio.get_running_loop().call_later(after, self._post_later, url, form)
        return response

    def _post_later(self, url: str, form: dict[str, str]) -> None:
        asyncio.get_running_loop().create_task(self._post_report(url, form))

    async def _post_report(self, url: str, form: dict[str, str]) -> None:
        if self.report_to is None:
            return
        target = self.report_to.rstrip("/") + "/" + url.split("://", 1)[-1].split("/", 1)[-1]
        if self._http is None:
            self._http = aiohttp.ClientSession()
        try:
            async with self._http.post(target, data=form) as answer:
                key = str(answer.status)
        except aiohttp.ClientError as exc:
            key = type(exc).__name__
        self.reported[key] = self.reported.get(key, 0) + 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["slack", "d7"])
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--no-channel-limit", action="store_true", help="no per-channel post limit (Slack has one)")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds before D7 answers")
    parser.add_argument("--reports", action="store_true", help="post delivery reports for SMS that ask for them")
    parser.add_argument("--tiers", action="store_true", help="Slack's Web API tiers per method (chat.update: 50/min)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.which == "slack":
        slack = StormSlack(channel_ids(args.channels), channel_limit=not args.no_channel_limit)
        if args.tiers:
            slack.rate_tiers()
        run_as_process(slack)
    else:
        run_as_process(StormD7(args.delay, args.reports))


if __name__ == "__main__":
    main()
