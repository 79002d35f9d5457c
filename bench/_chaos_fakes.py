"""The fake Slack and fake D7 of the chaos soak, each as its own process, with faults switched over HTTP and every
call kept for the checker.

    python -m bench._chaos_fakes slack     # prints PORT n
    python -m bench._chaos_fakes d7        # prints PORT n

Both add to the fakes of ``tests/fakes`` (whose in-process API is unchanged) only what a fake in another process
needs: ``POST /_fault`` (``{"kind", "seconds", "method"}``), ``POST /_clear``, and ``GET /_log`` (every call, with
what was answered and when, in wall-clock seconds). The fake D7 also lists the sends it carried out
(``GET /_accepted?since=n``) so that the load generator can post their delivery reports.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.d7 import FakeD7, Reply
from tests.fakes.server import run_as_process
from tests.fakes.slack import ANY_METHOD, Call, FakeSlack

# The world of the soak: channels the bot is in, people with phones, the support user group.
# Enough channels that Slack's pace (about a post a second in each) is not the bottleneck of the load, faults included.
OPS_CHANNELS = tuple(f"C0OPS{i}" for i in range(12))
ALERT_CHANNELS = tuple(f"C0ALERTS{i}" for i in range(8))
SUPPORT_CHANNEL = "C0SUPPORT"
PEOPLE = {"U0ANA": "+1 415 555 0110", "U0BEN": "+1 415 555 0111", "U0CAT": "+1 415 555 0112"}
OTHERS = ("U0HEAVY", "U0DAN")  # people without a phone in their profile
SUPPORT = ("U0AGENT",)
SEND_PATHS = ("/messages/v1/send", "/whatsapp/v2/send")
# Slack's slow answers: every method the bot calls in the background (acks do not wait for Slack).
SLOW_METHODS = (
    "chat.postMessage",
    "chat.update",
    "chat.postEphemeral",
    "conversations.history",
    "conversations.replies",
    "conversations.join",
    "users.info",
    "usergroups.users.list",
    "conversations.members",
    "functions.completeSuccess",
    "functions.completeError",
)
D7_HANG = 20.0  # past the D7 client's 15-s read timeout: carried out, the answer comes too late


def _later(coro: Callable[[], Any]) -> None:
    """Run ``coro()`` a moment after the control request is answered (a refusal closes its connection too)."""
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, lambda: loop.create_task(coro()))


class ChaosSlack(FakeSlack):
    """FakeSlack with HTTP fault switches and a log of every call (arrival and answer times)."""

    def __init__(self) -> None:
        super().__init__(issue_on_first_use=True)
        self.calls = _Stamped()
        self.response_log: list[dict[str, Any]] = []
        for channel in (*OPS_CHANNELS, *ALERT_CHANNELS, SUPPORT_CHANNEL):
            self.add_channel(channel)
        for user, phone in PEOPLE.items():
            self.add_user(user, user[2:].lower(), phone)
        for user in (*SUPPORT, *OTHERS):
            self.add_user(user, user[2:].lower())
        self.state.usergroups["S0SUPPORT"] = list(SUPPORT)

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/_fault", self._fault)
        app.router.add_post("/_clear", self._clear)
        app.router.add_get("/_log", self._log)
        return app

    async def _fault(self, request: web.Request) -> web.Response:
        body = await request.json()
        kind, seconds, method = body["kind"], float(body["seconds"]), body.get("method") or ANY_METHOD
        if kind == "5xx":
            self.fail(method, int(body.get("status", 503)), seconds=seconds)
        elif kind == "429":
            self.fail(method, 429, seconds=seconds)
        elif kind == "slow":
            self._slow(float(body.get("delay", 15.0)), seconds)
        elif kind == "refuse":
            _later(lambda: self._refuse(seconds))
        else:
            return web.json_response({"error": f"unknown fault {kind}"}, status=400)
        return web.json_response({"ok": True})

    def _slow(self, delay: float, seconds: float) -> None:
        """Slack answering late for ``seconds``: each call carried out at once and answered after ``delay``
        (``state.answer_after``, by method) when the fake has that mode, else answered and carried out after it
        (``latency``)."""
        answers = getattr(self.state, "answer_after", None)
        if isinstance(answers, dict):
            answers.update(dict.fromkeys(SLOW_METHODS, delay))
            undo: Callable[[], None] = answers.clear
        else:
            self.latency(delay)
            undo = lambda: self.latency(0.0)  # noqa: E731
        asyncio.get_running_loop().call_later(seconds, undo)

    async def _clear(self, request: web.Request) -> web.Response:
        self.recover()
        self.latency(0.0)
        if isinstance(getattr(self.state, "answer_after", None), dict):
            self.state.answer_after.clear()
        if self.refusing:
            await self._accept()
        return web.json_response({"ok": True})

    async def _log(self, request: web.Request) -> web.Response:
        calls = [_call_row(c) for c in list(self.calls)]
        responses = [
            {"name": name, "text": post.get("text"), "index": i}
            for name, posts in list(self.responses.items())
            for i, post in enumerate(posts)
        ]
        return web.json_response({"calls": calls, "responses": responses})

    def _complete_step(self, p: dict[str, Any]) -> dict[str, Any] | None:
        # As a process nothing can call run_step(): a step is running from its first completion on.
        self.steps.setdefault(str(p.get("function_execution_id", "")), "running")
        return super()._complete_step(p)

    @staticmethod
    def _answer(
        call: Call, body: dict[str, Any] | str, status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        call.answered_at = time.time()  # type: ignore[attr-defined]
        return FakeSlack._answer(call, body, status, headers)


class _Stamped(list[Call]):
    """The fake's call list, each call stamped with its wall-clock arrival."""

    def append(self, call: Call) -> None:
        call.arrived_at = time.time()  # type: ignore[attr-defined]
        super().append(call)


_KEPT = ("channel", "thread_ts", "text", "ts", "user", "users", "function_execution_id", "view_id", "trigger_id")


def _call_row(call: Call) -> dict[str, Any]:
    answer = call.answer if isinstance(call.answer, dict) else {}
    metadata = call.params.get("metadata")
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            metadata = None
    post = (metadata.get("event_payload") or {}).get("post") if isinstance(metadata, dict) else None
    return {
        "post": post,  # the send and the part a bot post names in its metadata (a post is looked for by it)
        "method": call.method,
        "params": {k: call.params[k] for k in _KEPT if k in call.params},
        # Posts of different sends in one thread may share their text (an alert and its escalation steps): the
        # blocks tell them apart.
        "blocks": hashlib.sha256(json.dumps(call.params.get("blocks"), sort_keys=True).encode()).hexdigest()[:16],
        "status": call.status,
        "ok": call.ok,
        "error": answer.get("error"),
        "ts": answer.get("ts"),
        "fault": call.fault,
        "abandoned": call.abandoned,
        "arrived_at": getattr(call, "arrived_at", None),
        "answered_at": getattr(call, "answered_at", None),
    }


class ChaosD7(FakeD7):
    """FakeD7 with time-boxed faults switched over HTTP (5xx, 429, hangs, refused connections) and a log of every
    send request with what became of it."""

    def __init__(self) -> None:
        super().__init__(record=False)
        self.log: list[dict[str, Any]] = []
        self.fault: tuple[str, float, int] | None = None  # kind, until (wall clock), status
        self._placeholder: socket.socket | None = None  # holds the port while nothing listens on it

    async def _refuse(self, seconds: float) -> None:
        """Stop listening (connecting is refused) and drop open connections for ``seconds``; the port stays ours."""
        runner = self._runner
        if runner is None or runner.server is None or self._placeholder is not None:
            return
        for site in list(runner.sites):
            await site.stop()
        self._placeholder = FakeSlack._bind(self)  # type: ignore[arg-type]
        for connection in runner.server.connections:
            connection.force_close()
        await asyncio.sleep(seconds)
        await self._listen()

    async def _listen(self) -> None:
        if self._placeholder is None or self._runner is None:
            return
        self._placeholder.close()
        self._placeholder = None
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/_fault", self._fault)
        app.router.add_post("/_clear", self._clear)
        app.router.add_get("/_log", self._log)
        app.router.add_get("/_accepted", self._accepted)
        return app

    async def _fault(self, request: web.Request) -> web.Response:
        body = await request.json()
        kind, seconds = body["kind"], float(body["seconds"])
        if kind == "refuse":
            _later(lambda: self._refuse(seconds))
        elif kind in ("5xx", "429", "hang"):
            self.fault = (kind, time.time() + seconds, int(body.get("status", 503)))
        else:
            return web.json_response({"error": f"unknown fault {kind}"}, status=400)
        return web.json_response({"ok": True})

    async def _clear(self, request: web.Request) -> web.Response:
        self.fault = None
        await self._listen()
        return web.json_response({"ok": True})

    def _next_reply(self, path: str) -> Reply | None:
        if self.fault is not None and path in SEND_PATHS:
            kind, until, status = self.fault
            if time.time() < until:
                if kind == "5xx":
                    return Reply(status=status, body={"detail": "Service Unavailable"})
                if kind == "429":
                    return Reply(status=429, body={"detail": "Too Many Requests"}, headers={"Retry-After": "2"})
                return Reply(delay=D7_HANG)  # a hang: carried out, answered after the client gave up
            self.fault = None
        return super()._next_reply(path)

    async def _send_sms(self, request: web.Request) -> web.StreamResponse:
        return await self._logged(request, super()._send_sms)

    async def _send_whatsapp(self, request: web.Request) -> web.StreamResponse:
        return await self._logged(request, super()._send_whatsapp)

    async def _logged(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        arrived = time.time()
        entry: dict[str, Any] = {"path": request.path, "arrived_at": arrived}
        self.log.append(entry)
        try:
            response: web.StreamResponse = await handler(request)
        except BaseException:
            entry["status"] = None
            raise
        raw = await request.text()
        entry |= {"body": raw, "status": response.status, "answered_at": time.time()}
        if response.status == 200 and isinstance(response, web.Response) and response.text:
            entry["request_id"] = json.loads(response.text).get("request_id")
        return response

    async def _log(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": list(self.log)})

    async def _accepted(self, request: web.Request) -> web.Response:
        """Sends carried out from index ``since`` on; ``next``: the first request not answered yet (a hang)."""
        since = int(request.query.get("since", "0"))
        entries = self.log[since:]
        done = [
            {"request_id": e["request_id"], "path": e["path"], "body": e["body"]}
            for e in entries
            if e.get("request_id")
        ]
        waiting = [i for i, e in enumerate(entries, start=since) if "answered_at" not in e and "status" not in e]
        return web.json_response({"sends": done, "next": waiting[0] if waiting else since + len(entries)})


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else ""
    if which == "slack":
        run_as_process(ChaosSlack())
    elif which == "d7":
        run_as_process(ChaosD7())
    else:
        raise SystemExit("usage: python -m bench._chaos_fakes slack|d7")


if __name__ == "__main__":
    main()
