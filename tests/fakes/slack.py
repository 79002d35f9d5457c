"""A fake Slack Web API on 127.0.0.1: the methods the bot calls, answering as Slack does, recording every call.

Point the bot's ``SLACK_API_URL`` at ``fake.api_url``. Channels the bot is not in answer ``not_in_channel``
until ``conversations.join``; private ones answer ``channel_not_found`` and cannot be joined. ``response_url``
posts go to ``fake.response_url(name)`` and are recorded in ``fake.responses``. ``rate_limit`` makes a method
answer 429 with ``Retry-After`` a number of times.

Slack misbehaving, switched by tests (all off by default):

- ``fail(method, 503)`` / ``fail(method, error="missing_scope")``: an edge error page or an ``ok: false`` answer,
  for a number of calls, for some seconds, or until ``recover()``;
- ``refuse_connections()`` / ``accept_connections()``: nothing listens on the port for a while (connection
  refused), then the fake listens again on the same port;
- ``strict_rates()``: about one post per second per channel, as ``chat.postMessage`` has; over it, 429;
- ``state.delays``: a slow Slack; a client whose timeout is shorter gives up (the call is ``abandoned``).

``of(method)`` leaves out the calls ``fail()`` and ``strict_rates()`` turned away (nothing was posted);
``attempts(method)`` has every call with what the fake answered.
"""

from __future__ import annotations

import asyncio
import http
import json
import math
import socket
import threading
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.server import LoopbackServer, run_as_process

BOT_TOKEN = "xoxb-test-bot-token"
SIGNING_SECRET = "test-signing-secret-8f7d6c5b"
TEAM_ID = "T0TEAM"
BOT_USER_ID = "U0BOT"

ANY_METHOD = "*"
POSTING_METHODS = ("chat.postMessage", "chat.postEphemeral", "chat.update")
# The bot scopes manifest.yml asks for, and the one each method needs: a missing_scope answer names both.
BOT_SCOPES = (
    "commands",
    "chat:write",
    "channels:join",
    "users:read",
    "usergroups:read",
    "channels:history",
    "groups:history",
    "channels:read",
    "groups:read",
)
NEEDED_SCOPES = {
    "conversations.join": "channels:join",
    "conversations.info": "channels:read",
    "users.info": "users:read",
    "usergroups.users.list": "usergroups:read",
}

Fault = Literal["fail", "rate_limit", "strict_rate"]
"""The switch that answered a call instead of the method: ``fail()``, ``rate_limit()`` or ``strict_rates()``."""


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    fault: Fault | None = None  # the switch that answered instead of the method, if one did
    status: int | None = None  # HTTP status answered; None while the answer waits (state.delays) or never came
    answer: dict[str, Any] | str | None = None  # the JSON body answered, or the HTML of an edge error page
    abandoned: bool = False  # the client had hung up (timed out) before the answer was ready

    @property
    def ok(self) -> bool:
        return self.status == 200 and isinstance(self.answer, dict) and self.answer.get("ok") is True


@dataclass
class Failure:
    """What ``fail()`` answers, and for how long: the next ``times`` calls and/or until ``until`` (monotonic)."""

    status: int
    error: str | None
    times: int | None
    until: float | None

    def expired(self, now: float) -> bool:
        return (self.times is not None and self.times <= 0) or (self.until is not None and now >= self.until)


@dataclass
class StrictRates:
    """A token bucket per (method, channel): ``burst`` calls at once, then ``per_second``."""

    per_second: float
    burst: int
    methods: frozenset[str]
    buckets: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  # → (tokens, at)

    def take(self, key: tuple[str, str], now: float) -> int:
        """0 when the call may go through (it spends a token), else the whole seconds to wait (``Retry-After``)."""
        tokens, at = self.buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.per_second)
        if tokens >= 1:
            self.buckets[key] = (tokens - 1, now)
            return 0
        self.buckets[key] = (tokens, now)
        return max(1, math.ceil((1 - tokens) / self.per_second))


class TurnedAway(NamedTuple):
    """The answer a switch gives instead of the method's."""

    fault: Fault
    status: int
    body: dict[str, Any] | str
    headers: dict[str, str]


@dataclass
class User:
    id: str
    name: str
    phone: str = ""
    tz: str = "America/Los_Angeles"
    is_bot: bool = False
    deleted: bool = False

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "team_id": TEAM_ID,
            "name": self.name,
            "deleted": self.deleted,
            "is_bot": self.is_bot,
            "tz": self.tz,
            "profile": {"real_name": self.name.title(), "display_name": self.name, "phone": self.phone},
        }


@dataclass
class FakeSlackState:
    users: dict[str, User] = field(default_factory=dict)
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    members_of: set[str] = field(default_factory=set)  # channels the bot is in
    public: set[str] = field(default_factory=set)  # channels it may join
    names: dict[str, str] = field(default_factory=dict)  # channel ID → name (conversations.info)
    rate_limits: dict[str, list[float]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)  # seconds before answering, by method
    failures: dict[str, Failure] = field(default_factory=dict)  # by method, or ANY_METHOD
    strict_rates: StrictRates | None = None


class FakeSlack(LoopbackServer):
    """See the module docstring."""

    def __init__(self, *, token: str = BOT_TOKEN, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.token = token
        self.state = FakeSlackState()
        self.calls: list[Call] = []
        self.responses: dict[str, list[dict[str, Any]]] = {}
        self.views: dict[str, dict[str, Any]] = {}
        self._ts = 0
        self._lock = threading.Lock()
        self._switches = threading.Lock()  # failures and strict rates: set by the test's thread, read by the fake's
        # Only touched in the fake's own loop:
        self._waiting: set[asyncio.Task[Any]] = set()  # handlers waiting out a delay, cancelled at stop
        self._placeholder: socket.socket | None = None  # holds the port while nothing listens on it
        self._reopen: asyncio.TimerHandle | None = None
        self._reopening: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ control

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, name: str) -> str:
        return f"{self.url}/response/{name}"

    def add_user(self, user_id: str, name: str, phone: str = "", **kwargs: Any) -> User:
        user = User(user_id, name, phone, **kwargs)
        self.state.users[user_id] = user
        return user

    def add_channel(self, channel_id: str, *, member: bool = True, public: bool = True, name: str = "") -> None:
        self.state.names[channel_id] = name or channel_id.lower()
        if member:
            self.state.members_of.add(channel_id)
        if public:
            self.state.public.add(channel_id)

    def rate_limit(self, method: str, times: int = 1, retry_after: float = 1) -> None:
        self.state.rate_limits.setdefault(method, []).extend([retry_after] * times)

    def fail(
        self,
        method: str,
        status: int = 503,
        *,
        times: int | None = None,
        seconds: float | None = None,
        error: str | None = None,
    ) -> None:
        """Answer ``method`` (``ANY_METHOD``: every method) with HTTP ``status`` and an edge error page, or, given
        ``error``, with HTTP 200 ``{"ok": false, "error": error}``: for the next ``times`` calls and/or ``seconds``
        from now (whichever ends first), or until ``recover()``. Nothing the method would do happens."""
        if error is None and not 400 <= status <= 599:
            raise ValueError(f"fail() answers an HTTP error status or an error code, not {status}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        until = None if seconds is None else time.monotonic() + seconds
        with self._switches:
            self.state.failures[method] = Failure(200 if error is not None else status, error, times, until)

    def recover(self, method: str | None = None) -> None:
        """End ``fail()`` for ``method`` (``ANY_METHOD`` included), or for every method."""
        with self._switches:
            if method is None:
                self.state.failures.clear()
            else:
                self.state.failures.pop(method, None)

    def strict_rates(
        self, per_channel_per_second: float = 1.0, burst: int = 2, *, methods: Iterable[str] = POSTING_METHODS
    ) -> None:
        """Limit each of ``methods`` per channel as Slack limits ``chat.postMessage``: ``burst`` calls at once, then
        ``per_channel_per_second``. Over it: HTTP 429, ``Retry-After`` in whole seconds, and nothing is posted."""
        if per_channel_per_second <= 0 or burst < 1:
            raise ValueError("strict_rates() needs a positive rate and a burst of at least 1")
        with self._switches:
            self.state.strict_rates = StrictRates(per_channel_per_second, burst, frozenset(methods))

    def relax_rates(self) -> None:
        """End ``strict_rates()``: no per-channel limit (the default)."""
        with self._switches:
            self.state.strict_rates = None

    def refuse_connections(self, seconds: float | None = None) -> None:
        """Stop listening (connecting is refused) and close open connections, for ``seconds`` or until
        ``accept_connections()``. The port stays reserved meanwhile. Needs a fake started with ``start()``."""
        self._in_loop(self._refuse(seconds))

    def accept_connections(self) -> None:
        """Listen again, on the same port."""
        self._in_loop(self._accept())

    @property
    def refusing(self) -> bool:
        return self._placeholder is not None

    def of(self, method: str) -> list[dict[str, Any]]:
        """Parameters of every call to ``method``, in order, as Slack took them in: calls that ``fail()`` or
        ``strict_rates()`` turned away are left out (see ``attempts``); ``rate_limit()``'s 429s and calls still
        waiting out a delay are in, as they always were."""
        return [c.params for c in self.calls if c.method == method and c.fault not in ("fail", "strict_rate")]

    def attempts(self, method: str) -> list[Call]:
        """Every call to ``method``, in order, turned away or not, with what the fake answered."""
        return [c for c in self.calls if c.method == method]

    def rate_limited(self, method: str) -> list[Call]:
        """The calls to ``method`` answered 429."""
        return [c for c in self.attempts(method) if c.status == 429]

    async def wait_for(self, method: str, count: int = 1, seconds: float = 10.0) -> list[dict[str, Any]]:
        """Wait (in the caller's loop) until ``method`` was called ``count`` times."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while len(self.of(method)) < count:
            if loop.time() > deadline:
                raise AssertionError(f"{method} called {len(self.of(method))} times, expected {count}: {self.calls}")
            await asyncio.sleep(0.01)
        return self.of(method)

    # ------------------------------------------------------------ server

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{name}", self._response_url)
        app.router.add_get("/_calls/{method}", self._calls)
        app.router.add_get("/_replies", self._replies)
        return app

    async def astop(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
        if self._reopening is not None:
            await asyncio.gather(self._reopening, return_exceptions=True)
        # Handlers waiting out a delay would hold the shutdown for its whole timeout: they are cancelled first.
        waiting = list(self._waiting)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await super().astop()
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    def _in_loop(self, coro: Coroutine[Any, Any, None]) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or threading.current_thread() is thread:
            coro.close()
            raise RuntimeError("call this from the test, on a fake started with start()")
        asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=10)

    async def _refuse(self, seconds: float | None) -> None:
        runner = self._runner
        assert runner is not None
        assert runner.server is not None
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if self._placeholder is None:
            # Stop accepting first: a connection accepted in one loop turn gets its transport in the next and its
            # protocol in the one after, and closing the server before trips asyncio or misses the connection.
            loop = asyncio.get_running_loop()
            for site in runner.sites:
                if isinstance(site._server, asyncio.Server):
                    for listening in site._server.sockets:
                        loop.remove_reader(listening.fileno())
            for _ in range(2):
                await asyncio.sleep(0)
            for site in runner.sites:
                await site.stop()
            # Bound but not listening: connecting is refused, and no one else can take the port meanwhile.
            self._placeholder = self._bind()
            for connection in runner.server.connections:
                connection.force_close()
        if seconds is not None:
            self._reopen = asyncio.get_running_loop().call_later(seconds, self._accept_soon)

    def _accept_soon(self) -> None:
        self._reopen = None
        self._reopening = asyncio.create_task(self._accept())

    async def _accept(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if self._placeholder is None or self._runner is None:
            return
        sock = self._bind()
        try:
            await web.SockSite(self._runner, sock).start()
        except BaseException:
            sock.close()
            raise
        self._placeholder.close()
        self._placeholder = None

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            # SO_REUSEADDR: the closed connections' TIME_WAIT and the placeholder do not keep the port busy.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise RuntimeError(f"the fake Slack could not bind {self.host}:{self.port} again: {exc}") from exc
        return sock

    async def _replies(self, request: web.Request) -> web.Response:
        """Control endpoint: how many thread replies there are, and how many carry a D7 request_id (results)."""
        replies = [p for p in self.of("chat.postMessage") if p.get("thread_ts")]
        results = [p for p in replies if "request_id" in str(p.get("text"))]
        accepted = sum("Accepted by D7" in str(p.get("text")) for p in results)
        return web.json_response({"results": len(results), "accepted": accepted, "thread_replies": len(replies)})

    async def _calls(self, request: web.Request) -> web.Response:
        """Control endpoint for a fake running as its own process: the params of every call to a method."""
        return web.json_response(self.of(request.match_info["method"]))

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        raw = await request.text()
        if not raw:
            return params
        if request.content_type == "application/json":
            params.update(json.loads(raw))
        else:
            params.update(dict(parse_qsl(raw, keep_blank_values=True)))
        for key in ("blocks", "attachments", "view"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        return params

    async def _response_url(self, request: web.Request) -> web.Response:
        body = json.loads(await request.text())
        self.responses.setdefault(request.match_info["name"], []).append(body)
        return web.Response(text="ok")

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        call = Call(method, params, dict(request.headers))
        # Decided on arrival, as Slack counts a call when it comes in; recorded before `of()` can see the call.
        turned_away = self._turn_away(method, params)
        if turned_away is not None:
            call.fault = turned_away.fault
        self.calls.append(call)
        if self.state.delays.get(method):
            await self._delay(self.state.delays[method])
        call.abandoned = request.transport is None or request.transport.is_closing()
        if turned_away is not None:
            return self._answer(call, turned_away.body, turned_away.status, turned_away.headers)
        limits = self.state.rate_limits.get(method)
        if limits:
            retry_after = limits.pop(0)
            call.fault = "rate_limit"
            ratelimited = {"ok": False, "error": "ratelimited"}
            return self._answer(call, ratelimited, 429, {"Retry-After": str(int(retry_after))})
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._answer(call, {"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "m_" + method.replace(".", "_"), None)
        if handler is None:
            return self._answer(call, {"ok": False, "error": "unknown_method"})
        body: dict[str, Any] = handler(params)
        return self._answer(call, body)

    async def _delay(self, seconds: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            await asyncio.sleep(seconds)
        finally:
            self._waiting.discard(task)

    def _turn_away(self, method: str, params: dict[str, Any]) -> TurnedAway | None:
        now = time.monotonic()
        with self._switches:
            for key in (method, ANY_METHOD):
                failure = self.state.failures.get(key)
                if failure is None:
                    continue
                if failure.expired(now):
                    del self.state.failures[key]
                    continue
                if failure.times is not None:
                    failure.times -= 1
                return self._failure(method, failure)
            rates = self.state.strict_rates
            if rates is not None and method in rates.methods:
                wait = rates.take((method, str(params.get("channel", ""))), now)
                if wait:
                    ratelimited = {"ok": False, "error": "ratelimited"}
                    return TurnedAway("strict_rate", 429, ratelimited, {"Retry-After": str(wait)})
        return None

    @staticmethod
    def _failure(method: str, failure: Failure) -> TurnedAway:
        if failure.error is not None:
            body: dict[str, Any] = {"ok": False, "error": failure.error}
            if failure.error == "missing_scope":
                needed = NEEDED_SCOPES.get(method, "chat:write")
                body |= {"needed": needed, "provided": ",".join(s for s in BOT_SCOPES if s != needed)}
            return TurnedAway("fail", 200, body, {})
        if failure.status == 429:
            return TurnedAway("fail", 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
        # What Slack's load balancers send when the API behind them is down: a bare HTML page.
        title = f"{failure.status} {http.HTTPStatus(failure.status).phrase}"
        page = f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        return TurnedAway("fail", failure.status, page + "</body>\r\n</html>\r\n", {})

    @staticmethod
    def _answer(
        call: Call, body: dict[str, Any] | str, status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        call.status, call.answer = status, body
        if isinstance(body, str):
            return web.Response(text=body, status=status, headers=headers, content_type="text/html")
        return web.json_response(body, status=status, headers=headers)

    def _next_ts(self) -> str:
        with self._lock:
            self._ts += 1
            return f"1763800000.{self._ts:06d}"

    def _postable(self, channel: str) -> str | None:
        if channel.startswith(("U", "W")) or channel in self.state.members_of:
            return None
        return "not_in_channel" if channel in self.state.public else "channel_not_found"

    # ------------------------------------------------------------ methods

    def m_auth_test(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://test.slack.com/",
            "team": "Test",
            "user": "relay",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": "B0BOT",
        }

    def m_chat_postMessage(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = p.get("channel", "")
        if (error := self._postable(channel)) is not None:
            return {"ok": False, "error": error}
        if not p.get("text") and not p.get("blocks"):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        message = {"type": "message", "user": BOT_USER_ID, "text": p.get("text"), "ts": ts}
        if p.get("thread_ts"):
            message["thread_ts"] = p["thread_ts"]
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def m_chat_postEphemeral(self, p: dict[str, Any]) -> dict[str, Any]:
        if (error := self._postable(p.get("channel", ""))) is not None:
            return {"ok": False, "error": error}
        return {"ok": True, "message_ts": self._next_ts()}

    def m_chat_update(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "channel": p.get("channel"), "ts": p.get("ts"), "text": p.get("text")}

    def m_conversations_join(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = p.get("channel", "")
        if channel not in self.state.public:
            return {"ok": False, "error": "method_not_supported_for_channel_type"}
        self.state.members_of.add(channel)
        return {"ok": True, "channel": {"id": channel}}

    def m_views_open(self, p: dict[str, Any]) -> dict[str, Any]:
        if not str(p.get("trigger_id", "")).strip():
            return {"ok": False, "error": "invalid_trigger_id"}
        view_id = f"V{len(self.views) + 1:08d}"
        view = {**p["view"], "id": view_id, "hash": f"{view_id}.1", "state": {"values": {}}}
        self.views[view_id] = view
        return {"ok": True, "view": view}

    def m_views_update(self, p: dict[str, Any]) -> dict[str, Any]:
        current = self.views.get(p.get("view_id", ""))
        if current is None:
            return {"ok": False, "error": "not_found"}
        if p.get("hash") and p["hash"] != current["hash"]:
            return {"ok": False, "error": "hash_conflict"}
        version = int(current["hash"].rsplit(".", 1)[1]) + 1
        view = {**p["view"], "id": current["id"], "hash": f"{current['id']}.{version}", "state": current["state"]}
        self.views[current["id"]] = view
        return {"ok": True, "view": view}

    def m_conversations_info(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = p.get("channel", "")
        if channel not in self.state.names:
            return {"ok": False, "error": "channel_not_found"}
        private = channel not in self.state.public
        return {"ok": True, "channel": {"id": channel, "name": self.state.names[channel], "is_private": private}}

    def m_chat_getPermalink(self, p: dict[str, Any]) -> dict[str, Any]:
        channel, ts = p.get("channel", ""), str(p.get("message_ts", ""))
        if channel not in self.state.names or not ts:
            return {
                "ok": False,
                "error": "channel_not_found" if channel not in self.state.names else "message_not_found",
            }
        return {
            "ok": True,
            "channel": channel,
            "permalink": f"https://test.slack.com/archives/{channel}/p{ts.replace('.', '')}",
        }

    def m_users_info(self, p: dict[str, Any]) -> dict[str, Any]:
        user = self.state.users.get(p.get("user", ""))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": user.info()}

    def m_usergroups_users_list(self, p: dict[str, Any]) -> dict[str, Any]:
        members = self.state.usergroups.get(p.get("usergroup", ""))
        if members is None:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": members}


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fakes.slack --channel C0OPS --usergroup S0SUPPORT=U1,U2``: prints ``PORT <n>``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--channel", action="append", default=[], help="a channel the bot is in")
    parser.add_argument("--usergroup", action="append", default=[], help="S…=U…,U…")
    args = parser.parse_args(argv)
    fake = FakeSlack(port=args.port)
    for channel in args.channel:
        fake.add_channel(channel)
    for group in args.usergroup:
        name, _, members = group.partition("=")
        fake.state.usergroups[name] = [m for m in members.split(",") if m]
    run_as_process(fake)


if __name__ == "__main__":
    main()
