"""A fake Slack Web API on 127.0.0.1, as strict as Slack: the methods the bot calls, answering as Slack does,
refusing what Slack refuses, recording every call.

Point the bot's ``SLACK_API_URL`` at ``fake.api_url``. Refused as Slack refuses them, by default:

- Block Kit over a limit (``tests/blockkit.py`` has the table), on chat.postMessage / postEphemeral / update:
  ``{"ok": false, "error": "invalid_blocks", "errors": ["must be less than 3001 characters
  [json-pointer:/blocks/0/text/text]"], "response_metadata": {"messages": ["[ERROR] ..."]}}``; message ``text``
  over 40,000 characters: ``msg_too_long``; over 12,000 characters of text in all blocks: ``msg_blocks_too_long``.
  On views.open / push / update / publish: ``{"ok": false, "error": "invalid_arguments", "response_metadata":
  {"messages": ["[ERROR] must be less than 25 characters [json-pointer:/view/title/text]"]}}``.
- ``response_url``: ``fake.response_url(name)`` issues a new URL each time (on the fake's clock); each takes 5
  posts within 30 minutes. The 6th answers HTTP 404 ``used_url``, any post after 30 minutes 404 ``expired_url``,
  a URL never issued 404 ``no_service``, invalid blocks 400 ``invalid_blocks``. Accepted posts are kept in
  ``fake.responses[name]`` (every URL issued under that name, in order).
- ``trigger_id``: views.open / views.push take a trigger issued (``issue_trigger``; the test harness issues every
  trigger_id it sends) less than 3 s before, once: else ``expired_trigger_id``, ``invalid_trigger_id`` or
  ``exchanged_trigger_id``.
- Channels the bot is not in answer ``not_in_channel`` until ``conversations.join``; private ones answer
  ``channel_not_found`` and cannot be joined. A user ID as ``channel`` is the app's DM with that user (``dms()``).
- chat.postMessage about one per second per channel, bursts of 10: over it, HTTP 429 with ``Retry-After``.

Refusals are in ``fake.refused``; ``of()`` leaves them out (nothing was posted), ``attempts()`` has them.

Switched by tests (off by default): ``rate_tiers()`` (each method's Web API tier, per minute), ``latency(s)`` (every
call, or ``state.delays`` by method; a client whose timeout is shorter gives up: the call is ``abandoned``),
``fail(method, 503)`` / ``fail(method, error="missing_scope")`` (an edge error page or an ``ok: false`` answer, for
a number of calls, for some seconds, or until ``recover()``), ``refuse_connections()`` / ``accept_connections()``,
``strict_rates()`` (a stricter per-channel limit) / ``relax_rates()`` (none), ``rate_limit(method)`` (429 a number of
times). ``advance(seconds)`` moves the fake's clock (response_url and trigger windows, rate buckets).
"""

from __future__ import annotations

import asyncio
import http
import json
import math
import re
import socket
import threading
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qsl

from aiohttp import web

from tests import blockkit
from tests.fakes.server import LoopbackServer, run_as_process

BOT_TOKEN = "xoxb-test-bot-token"
APP_TOKEN = "xapp-1-A0APP-test-app-token"  # Socket Mode: apps.connections.open (``tests.fakes.socket_mode``)
SIGNING_SECRET = "test-signing-secret-8f7d6c5b"
TEAM_ID = "T0TEAM"
BOT_USER_ID = "U0BOT"

ANY_METHOD = "*"
POSTING_METHODS = ("chat.postMessage", "chat.postEphemeral", "chat.update")
VIEW_METHODS = ("views.open", "views.push", "views.update", "views.publish")
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
    "conversations.members": "channels:read",
    "users.info": "users:read",
    "usergroups.users.list": "usergroups:read",
    "usergroups.users.update": "usergroups:write",
    "conversations.history": "channels:history",
    "conversations.replies": "channels:history",
}

RESPONSE_URL_USES = 5
RESPONSE_URL_SECONDS = 30 * 60
TRIGGER_SECONDS = 3.0
# chat.postMessage: "1 per second, short bursts >1 allowed" (docs.slack.dev/apis/web-api/rate-limits); the burst
# is not documented, 10 is one real Slack tolerates.
CHANNEL_RATE = 1.0
CHANNEL_BURST = 10
# Web API tiers, requests per minute per method per workspace (docs.slack.dev/apis/web-api/rate-limits; each
# method's page names its tier). chat.postMessage is "special" (per channel, above); auth.test is not limited here.
TIERS = {1: 1, 2: 20, 3: 50, 4: 100}
METHOD_TIERS = {
    "usergroups.users.list": 2,
    "usergroups.users.update": 2,
    "conversations.history": 3,
    "conversations.replies": 3,
    "conversations.info": 3,
    "conversations.join": 3,
    "chat.update": 3,
    "conversations.open": 3,
    "users.info": 4,
    "chat.postEphemeral": 4,
    "chat.getPermalink": 4,
    "views.open": 4,
    "views.push": 4,
    "views.update": 4,
    "views.publish": 4,
    "functions.completeSuccess": 3,
    "functions.completeError": 3,
}
# The send_text step's outputs Slack checks against the manifest (output_parameters.required).
STEP_OUTPUTS = {"request_id": str, "status": str, "recipients_count": int, "segments": int}
# Answers to a call Slack refused for what it carried: nothing was posted or opened, so of() leaves them out.
REFUSALS = frozenset(
    {
        "invalid_blocks",
        "invalid_arguments",
        "msg_too_long",
        "msg_blocks_too_long",
        "view_too_large",
        "expired_trigger_id",
        "invalid_trigger_id",
        "exchanged_trigger_id",
        "user_not_in_channel",
        "function_execution_not_found",
        "execution_not_in_running_state",
        "parameter_validation_failed",
    }
)

Fault = Literal["fail", "rate_limit", "strict_rate", "tier_rate", "refused"]
"""Why a call was not done: a switch answered instead of the method (``fail()``, ``rate_limit()``, the per-channel
limit, ``rate_tiers()``), or the method refused what the call carried (``refused``)."""
TURNED_AWAY: frozenset[Fault | None] = frozenset({"fail", "strict_rate", "tier_rate", "refused"})


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    fault: Fault | None = None  # the switch that answered instead of the method, or "refused"
    status: int | None = None  # HTTP status answered; None while the answer waits (state.delays) or never came
    answer: dict[str, Any] | str | None = None  # the JSON body answered, or the HTML of an edge error page
    abandoned: bool = False  # the client had hung up (timed out) before the answer was ready

    @property
    def ok(self) -> bool:
        return self.status == 200 and isinstance(self.answer, dict) and self.answer.get("ok") is True


@dataclass
class Refusal:
    """A call or response_url post Slack would refuse, with Slack's answer."""

    where: str  # the method, or "response_url:<name>"
    params: dict[str, Any]
    status: int
    error: str
    messages: list[str] = field(default_factory=list)  # the json-pointer messages, for Block Kit refusals


@dataclass
class Failure:
    """What ``fail()`` answers, and for how long: the next ``times`` calls and/or until ``until`` (fake clock)."""

    status: int
    error: str | None
    times: int | None
    until: float | None

    def expired(self, now: float) -> bool:
        return (self.times is not None and self.times <= 0) or (self.until is not None and now >= self.until)


@dataclass
class Bucket:
    """A token bucket per key: ``burst`` calls at once, then ``per_second``."""

    per_second: float
    burst: float
    buckets: dict[Any, tuple[float, float]] = field(default_factory=dict)  # key → (tokens, at)

    def take(self, key: Any, now: float) -> int:
        """0 when the call may go through (it spends a token), else the whole seconds to wait (``Retry-After``)."""
        tokens, at = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.per_second)
        if tokens >= 1:
            self.buckets[key] = (tokens - 1, now)
            return 0
        self.buckets[key] = (tokens, now)
        return max(1, math.ceil((1 - tokens) / self.per_second))


@dataclass
class StrictRates(Bucket):
    """The per-channel limit: a bucket per (method, channel) for each of ``methods``."""

    methods: frozenset[str] = frozenset()


@dataclass
class TierRates:
    """``rate_tiers()``: a bucket per method, a minute's worth of calls at once, then the tier's rate."""

    scale: float = 1.0
    buckets: dict[str, Bucket] = field(default_factory=dict)

    def take(self, method: str, now: float) -> int:
        tier = METHOD_TIERS.get(method)
        if tier is None:
            return 0
        per_minute = TIERS[tier] * self.scale
        bucket = self.buckets.setdefault(method, Bucket(per_minute / 60, max(1.0, per_minute)))
        return bucket.take(method, now)


class TurnedAway(NamedTuple):
    """The answer a switch gives instead of the method's."""

    fault: Fault
    status: int
    body: dict[str, Any] | str
    headers: dict[str, str]


@dataclass
class ResponseUrl:
    """One response_url Slack issued: 5 posts within 30 minutes."""

    name: str
    issued_at: float
    posts: list[dict[str, Any]] = field(default_factory=list)  # accepted


@dataclass
class Trigger:
    issued_at: float
    exchanged: bool = False


@dataclass
class User:
    id: str
    name: str
    phone: str = ""
    tz: str = "America/Los_Angeles"
    is_bot: bool = False
    deleted: bool = False
    team_id: str = TEAM_ID  # another workspace's: a person of another organisation (Slack Connect)
    enterprise_id: str | None = None  # their Enterprise Grid org: users.info then has ``enterprise_user``

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "id": self.id,
            "team_id": self.team_id,
            "name": self.name,
            "deleted": self.deleted,
            "is_bot": self.is_bot,
            "tz": self.tz,
            "profile": {"real_name": self.name.title(), "display_name": self.name, "phone": self.phone},
        }
        if self.enterprise_id is not None:
            info["enterprise_user"] = {
                "id": self.id,
                "enterprise_id": self.enterprise_id,
                "enterprise_name": self.enterprise_id.lower(),
                "is_admin": False,
                "is_owner": False,
                "teams": [self.team_id],
            }
        return info


def _default_rates() -> StrictRates:
    return StrictRates(CHANNEL_RATE, CHANNEL_BURST, methods=frozenset({"chat.postMessage"}))


@dataclass
class FakeSlackState:
    users: dict[str, User] = field(default_factory=dict)
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    members_of: set[str] = field(default_factory=set)  # channels the bot is in
    public: set[str] = field(default_factory=set)  # channels it may join
    names: dict[str, str] = field(default_factory=dict)  # channel ID → name (conversations.info)
    channel_users: dict[str, set[str]] = field(default_factory=dict)  # channel → its people, where a test says
    app_dms: set[str] = field(default_factory=set)  # the app's DMs (D…) Slack has answered with so far
    rate_limits: dict[str, list[float]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)  # seconds before answering, by method
    latency: float = 0.0  # seconds before answering any call without a delay of its own
    failures: dict[str, Failure] = field(default_factory=dict)  # by method, or ANY_METHOD
    strict_rates: StrictRates | None = field(default_factory=_default_rates)
    tiers: TierRates | None = None
    scopes: set[str] = field(default_factory=lambda: set(BOT_SCOPES))  # granted at install (see ``grant``)
    # Seconds before answering a call that was carried out at once, by method: Slack did it, the answer is late.
    answer_after: dict[str, float] = field(default_factory=dict)


class FakeSlack(LoopbackServer):
    """See the module docstring. ``issue_on_first_use``: a response_url or trigger_id the fake never issued is
    issued when first used (for a fake run as its own process, where nothing can call ``response_url()``)."""

    def __init__(
        self, *, token: str = BOT_TOKEN, host: str = "127.0.0.1", port: int = 0, issue_on_first_use: bool = False
    ) -> None:
        super().__init__(host=host, port=port)
        self.token = token
        self.issue_on_first_use = issue_on_first_use
        self.state = FakeSlackState()
        self.calls: list[Call] = []
        self.responses: dict[str, list[dict[str, Any]]] = {}  # accepted response_url posts, by name
        self.refused: list[Refusal] = []
        self.views: dict[str, dict[str, Any]] = {}
        self.socket_mode_url: str | None = None  # what apps.connections.open answers (``tests.fakes.socket_mode``)
        self.homes: dict[str, dict[str, Any]] = {}  # App Home tab view, by user
        # Messages the bot posted, by channel, as conversations.history and .replies give them back.
        self.messages: dict[str, list[dict[str, Any]]] = {}
        # Workflow steps running (function_execution_id → "running" / "completed"), as ``run_step`` started them.
        self.steps: dict[str, str] = {}
        self._response_urls: dict[str, ResponseUrl] = {}  # by path
        self._triggers: dict[str, Trigger] = {}
        self._offset = 0.0  # advance()
        self._ts = 0
        self._issued = 0
        self._lock = threading.Lock()
        self._switches = threading.Lock()  # failures and rates: set by the test's thread, read by the fake's
        # Only touched in the fake's own loop:
        self._waiting: set[asyncio.Task[Any]] = set()  # handlers waiting out a delay, cancelled at stop
        self._placeholder: socket.socket | None = None  # holds the port while nothing listens on it
        self._reopen: asyncio.TimerHandle | None = None
        self._reopening: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ control

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def now(self) -> float:
        """The fake's clock: monotonic time, plus every ``advance()``."""
        return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward: response_urls and triggers age, rate buckets refill, ``fail(seconds=)``
        windows pass. Real time keeps running too."""
        if seconds < 0:
            raise ValueError("the fake's clock only moves forward")
        with self._switches:
            self._offset += seconds

    def response_url(self, name: str) -> str:
        """Issue a new response_url now (5 posts within 30 minutes); its accepted posts go to ``responses[name]``."""
        with self._lock:
            self._issued += 1
            path = f"/response/{name}/{self._issued}"
            self._response_urls[path] = ResponseUrl(name, self.now())
        return f"{self.url}{path}"

    def response_urls(self, name: str) -> list[str]:
        """Every URL issued under ``name``, in order."""
        return [f"{self.url}{path}" for path, issued in self._response_urls.items() if issued.name == name]

    def posts_to(self, url: str) -> list[dict[str, Any]]:
        """The posts one response_url accepted."""
        issued = self._response_urls.get(url.removeprefix(self.url))
        return [] if issued is None else list(issued.posts)

    def issue_trigger(self, trigger_id: str) -> None:
        """Slack sent an interaction carrying ``trigger_id`` now: views.open/push may use it once, within 3 s."""
        with self._lock:
            self._triggers[trigger_id] = Trigger(self.now())

    def add_user(self, user_id: str, name: str, phone: str = "", **kwargs: Any) -> User:
        user = User(user_id, name, phone, **kwargs)
        self.state.users[user_id] = user
        return user

    def add_channel(
        self,
        channel_id: str,
        *,
        member: bool = True,
        public: bool = True,
        name: str = "",
        users: Iterable[str] | None = None,
    ) -> None:
        """``users``: the people in the channel; given, chat.postEphemeral to anyone else is ``user_not_in_channel``."""
        self.state.names[channel_id] = name or channel_id.lower()
        if member:
            self.state.members_of.add(channel_id)
        if public:
            self.state.public.add(channel_id)
        if users is not None:
            self.state.channel_users[channel_id] = set(users)

    def dms(self, user_id: str) -> list[dict[str, Any]]:
        """What the app posted to ``user_id`` in its DM (the App Home messages tab), in order."""
        channels = {user_id, dm_channel(user_id)}
        return [c.params for c in self.attempts("chat.postMessage") if c.ok and c.params.get("channel") in channels]

    def grant(self, *scopes: str) -> None:
        """The app was (re)installed with these scopes besides the manifest's."""
        self.state.scopes.update(scopes)

    def rate_limit(self, method: str, times: int = 1, retry_after: float = 1) -> None:
        self.state.rate_limits.setdefault(method, []).extend([retry_after] * times)

    def latency(self, seconds: float) -> None:
        """Answer every call (and response_url post) after ``seconds``; ``state.delays[method]`` overrides it."""
        self.state.latency = seconds

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
        until = None if seconds is None else self.now() + seconds
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
        """Limit each of ``methods`` per channel more strictly than the default (chat.postMessage, bursts of 10):
        ``burst`` calls at once, then ``per_channel_per_second``. Over it: HTTP 429, ``Retry-After`` in whole
        seconds, and nothing is posted."""
        if per_channel_per_second <= 0 or burst < 1:
            raise ValueError("strict_rates() needs a positive rate and a burst of at least 1")
        with self._switches:
            self.state.strict_rates = StrictRates(per_channel_per_second, burst, methods=frozenset(methods))

    def relax_rates(self) -> None:
        """No per-channel limit at all (not even the default one). A test about something else than Slack's pace
        also relaxes the bot's own pacing (the ``unpaced`` fixture: ``SLACK_CHANNEL_PACE=0``)."""
        with self._switches:
            self.state.strict_rates = None

    def rate_tiers(self, on: bool = True, *, scale: float = 1.0) -> None:
        """Limit each method to its Web API tier (``METHOD_TIERS``): a minute's worth at once, then the tier's rate
        (``scale`` multiplies it). Over it: HTTP 429 with ``Retry-After``, nothing done."""
        with self._switches:
            self.state.tiers = TierRates(scale) if on else None

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
        """Parameters of every call to ``method``, in order, as Slack took them in: calls turned away (``fail()``,
        the rate limits) or refused for what they carried (``refused``) are left out (see ``attempts``);
        ``rate_limit()``'s 429s and calls still waiting out a delay are in, as they always were."""
        return [c.params for c in self.calls if c.method == method and c.fault not in TURNED_AWAY]

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
                raise AssertionError(
                    f"{method} called {len(self.of(method))} times, expected {count}; refused: {self.refused}; "
                    f"calls: {self.calls}"
                )
            await asyncio.sleep(0.01)
        return self.of(method)

    # ------------------------------------------------------------ server

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{path:.*}", self._response_url)
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
        for key in ("blocks", "attachments", "view", "metadata"):
            if isinstance(params.get(key), str) and params[key]:
                params[key] = json.loads(params[key])
        return params

    async def _response_url(self, request: web.Request) -> web.Response:
        arrived = self.now()
        raw = await request.text()
        if self.state.latency:
            await self._delay(self.state.latency)
        path = request.path
        issued = self._response_urls.get(path)
        if issued is None and self.issue_on_first_use:
            issued = self._response_urls[path] = ResponseUrl(path.split("/")[2], arrived)
        name = issued.name if issued is not None else path.removeprefix("/response/")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._refuse_post(name, {"raw": raw}, 400, "invalid_payload")
        if not isinstance(body, dict):
            return self._refuse_post(name, {"raw": raw}, 400, "invalid_payload")
        if issued is None:
            return self._refuse_post(name, body, 404, "no_service")
        if arrived - issued.issued_at > RESPONSE_URL_SECONDS:
            return self._refuse_post(name, body, 404, "expired_url")
        if len(issued.posts) >= RESPONSE_URL_USES:
            return self._refuse_post(name, body, 404, "used_url")
        if not body.get("text") and not body.get("blocks") and not body.get("delete_original"):
            return self._refuse_post(name, body, 400, "no_text")
        refused = self._message_refusal(body)
        if refused is not None:
            return self._refuse_post(name, body, 400, refused["error"], refused.get("errors", []))
        issued.posts.append(body)
        self.responses.setdefault(issued.name, []).append(body)
        return web.Response(text="ok")

    def _refuse_post(
        self, name: str, body: dict[str, Any], status: int, error: str, messages: list[str] | None = None
    ) -> web.Response:
        """A response_url post refused as Slack's hooks refuse them: an HTTP error status and the error as text."""
        self.refused.append(Refusal(f"response_url:{name}", body, status, error, messages or []))
        return web.Response(text=error, status=status)

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        call = Call(method, params, dict(request.headers))
        # Decided on arrival, as Slack decides when a call comes in; recorded before `of()` can see the call.
        now = self.now()
        authorized = request.headers.get("Authorization") == f"Bearer {self.token}"
        if method == "apps.connections.open":  # the app-level token's only method
            authorized = request.headers.get("Authorization") == f"Bearer {APP_TOKEN}"
        turned_away = self._turn_away(method, params, now)
        refused = None if turned_away is not None or not authorized else self._refusal(method, params, now)
        if turned_away is not None:
            call.fault = turned_away.fault
        elif refused is not None:
            call.fault = "refused"
            messages = refused.get("errors") or refused.get("response_metadata", {}).get("messages", [])
            self.refused.append(Refusal(method, params, 200, refused["error"], list(messages)))
        self.calls.append(call)
        delay = self.state.delays.get(method, self.state.latency)
        if delay:
            await self._delay(delay)
        call.abandoned = request.transport is None or request.transport.is_closing()
        if turned_away is not None:
            return self._answer(call, turned_away.body, turned_away.status, turned_away.headers)
        limits = self.state.rate_limits.get(method)
        if limits:
            retry_after = limits.pop(0)
            call.fault = "rate_limit"
            ratelimited = {"ok": False, "error": "ratelimited"}
            return self._answer(call, ratelimited, 429, {"Retry-After": str(int(retry_after))})
        if not authorized:
            return self._answer(call, {"ok": False, "error": "invalid_auth"})
        if refused is not None:
            return self._answer(call, refused)
        handler = getattr(self, "m_" + method.replace(".", "_"), None)
        if handler is None:
            return self._answer(call, {"ok": False, "error": "unknown_method"})
        body: dict[str, Any] = handler(params)
        late = self.state.answer_after.get(method)
        if late:  # carried out already: only the answer waits (a client that gives up never learns it happened)
            await self._delay(late)
            call.abandoned = request.transport is None or request.transport.is_closing()
        return self._answer(call, body)

    async def _delay(self, seconds: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            await asyncio.sleep(seconds)
        finally:
            self._waiting.discard(task)

    def _turn_away(self, method: str, params: dict[str, Any], now: float) -> TurnedAway | None:
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
            ratelimited = {"ok": False, "error": "ratelimited"}
            rates = self.state.strict_rates
            if rates is not None and method in rates.methods:
                wait = rates.take((method, str(params.get("channel", ""))), now)
                if wait:
                    return TurnedAway("strict_rate", 429, ratelimited, {"Retry-After": str(wait)})
            if self.state.tiers is not None:
                wait = self.state.tiers.take(method, now)
                if wait:
                    return TurnedAway("tier_rate", 429, ratelimited, {"Retry-After": str(wait)})
        return None

    def _refusal(self, method: str, params: dict[str, Any], now: float) -> dict[str, Any] | None:
        """Slack's answer to a call it refuses for what it carries (Block Kit, length, trigger), or None."""
        if method in POSTING_METHODS:
            refused = self._message_refusal(params)
            if refused is None and method == "chat.postEphemeral":
                people = self.state.channel_users.get(str(params.get("channel", "")))
                if people is not None and params.get("user") not in people:
                    refused = {"ok": False, "error": "user_not_in_channel"}
            return refused
        if method not in VIEW_METHODS:
            return None
        view = params.get("view")
        found = blockkit.view_problems(view)
        if found:
            schema = "[ERROR] failed to match all allowed schemas [json-pointer:/view]"
            messages = [schema, *(f"[ERROR] {m}" for m in found)]
            return {"ok": False, "error": "invalid_arguments", "response_metadata": {"messages": messages}}
        if len(json.dumps(view)) > blockkit.VIEW_BYTES:
            return {"ok": False, "error": "view_too_large"}
        if method in ("views.open", "views.push"):
            error = self._exchange(str(params.get("trigger_id", "")).strip(), now)
            if error is not None:
                return {"ok": False, "error": error}
        return None

    @staticmethod
    def _message_refusal(params: dict[str, Any]) -> dict[str, Any] | None:
        text = params.get("text")
        if isinstance(text, str) and len(text) > blockkit.MESSAGE_TEXT:
            return {"ok": False, "error": "msg_too_long"}
        if "blocks" not in params:
            return None
        found = blockkit.problems(params["blocks"], surface="message")
        if found:
            messages = [f"[ERROR] {m}" for m in found]
            return {
                "ok": False,
                "error": "invalid_blocks",
                "errors": found,
                "response_metadata": {"messages": messages},
            }
        if blockkit.blocks_text(params["blocks"]) > blockkit.MESSAGE_BLOCKS_TEXT:
            return {"ok": False, "error": "msg_blocks_too_long"}
        return None

    def _exchange(self, trigger_id: str, now: float) -> str | None:
        """Use a trigger for views.open/push: None, or why Slack refuses it."""
        with self._lock:
            trigger = self._triggers.get(trigger_id)
            if trigger is None and trigger_id and self.issue_on_first_use:
                trigger = self._triggers[trigger_id] = Trigger(now)
            if trigger is None:
                return "invalid_trigger_id"
            if now - trigger.issued_at > TRIGGER_SECONDS:
                return "expired_trigger_id"
            if trigger.exchanged:
                return "exchanged_trigger_id"
            trigger.exchanged = True
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
        """A message ts as Slack makes them: the wall-clock time it was posted (microseconds), each one later than
        the one before (conversations.history's ``oldest`` compares with it)."""
        with self._lock:
            micros = max(int((time.time() + self._offset) * 1_000_000), self._ts + 1)
            self._ts = micros
            return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _refused(self, channel: str, *, post: bool) -> str | None:
        """Why Slack refuses the bot a conversation (None: it may), to ``post`` in it or else to read its history.

        Channels need the bot in them. The app may post in its own DM with a person (their user ID, or the D… Slack
        answers for it); a DM between people the app is not part of is closed to it, as a private channel it was
        not invited to. Reading any DM needs ``im:history``, which the manifest does not ask for."""
        if not post and (channel.startswith("D") or is_user(channel)):
            return "missing_scope"
        if channel in self.state.members_of or (post and (is_user(channel) or channel in self.state.app_dms)):
            return None
        return "not_in_channel" if channel in self.state.public else "channel_not_found"

    # ------------------------------------------------------------ methods

    def m_apps_connections_open(self, p: dict[str, Any]) -> dict[str, Any]:
        """Socket Mode: where to connect (``socket_mode_url``: a ``tests.fakes.socket_mode`` server)."""
        if self.socket_mode_url is None:
            return {"ok": False, "error": "not_allowed_token_type"}
        return {"ok": True, "url": self.socket_mode_url}

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
        if (error := self._refused(channel, post=True)) is not None:
            return {"ok": False, "error": error}
        if not p.get("text") and not p.get("blocks"):
            return {"ok": False, "error": "no_text"}
        metadata = p.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or not re.fullmatch(r"[A-Za-z0-9_.]{1,255}", str(metadata.get("event_type", "")))
            or not isinstance(metadata.get("event_payload"), dict)
        ):
            return {"ok": False, "error": "invalid_metadata_format"}
        ts = self._next_ts()
        message = {"type": "message", "user": BOT_USER_ID, "text": p.get("text"), "ts": ts}
        if p.get("thread_ts"):
            message["thread_ts"] = p["thread_ts"]
        stored = dict(message, metadata=metadata) if metadata is not None else dict(message)
        with self._lock:
            self.messages.setdefault(dm_channel(channel) if is_user(channel) else channel, []).append(stored)
        # Posting to a user ID posts in the app's DM with them: Slack answers with that DM's channel ID.
        if is_user(channel):
            self.state.app_dms.add(dm_channel(channel))
        return {
            "ok": True,
            "channel": dm_channel(channel) if is_user(channel) else channel,
            "ts": ts,
            "message": message,
        }

    def m_chat_postEphemeral(self, p: dict[str, Any]) -> dict[str, Any]:
        if (error := self._refused(p.get("channel", ""), post=True)) is not None:
            return {"ok": False, "error": error}
        return {"ok": True, "message_ts": self._next_ts()}

    def m_chat_update(self, p: dict[str, Any]) -> dict[str, Any]:
        if (error := self._refused(p.get("channel", ""), post=True)) is not None:
            return {"ok": False, "error": error}
        return {"ok": True, "channel": p.get("channel"), "ts": p.get("ts"), "text": p.get("text")}

    def m_conversations_join(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = p.get("channel", "")
        if channel not in self.state.public:
            return {"ok": False, "error": "method_not_supported_for_channel_type"}
        self.state.members_of.add(channel)
        return {"ok": True, "channel": {"id": channel}}

    def m_conversations_open(self, p: dict[str, Any]) -> dict[str, Any]:
        users = [u for u in str(p.get("users", "")).split(",") if u]
        if len(users) != 1 or users[0] not in self.state.users:
            return {"ok": False, "error": "user_not_found"}
        self.state.app_dms.add(dm_channel(users[0]))
        return {"ok": True, "channel": {"id": dm_channel(users[0])}}

    def m_views_open(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "view": self._new_view(p["view"])}

    def m_views_push(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "view": self._new_view(p["view"])}

    def m_views_update(self, p: dict[str, Any]) -> dict[str, Any]:
        current = self.views.get(p.get("view_id", ""))
        if current is None and p.get("external_id"):
            current = next((v for v in self.views.values() if v.get("external_id") == p["external_id"]), None)
        if current is None:
            return {"ok": False, "error": "not_found"}
        if p.get("hash") and p["hash"] != current["hash"]:
            return {"ok": False, "error": "hash_conflict"}
        version = int(current["hash"].rsplit(".", 1)[1]) + 1
        view = {**p["view"], "id": current["id"], "hash": f"{current['id']}.{version}", "state": current["state"]}
        self.views[current["id"]] = view
        return {"ok": True, "view": view}

    def run_step(self, execution_id: str) -> None:
        """A workflow reached the app's step: it runs until completed once."""
        self.steps[execution_id] = "running"

    def _complete_step(self, p: dict[str, Any]) -> dict[str, Any] | None:
        state = self.steps.get(str(p.get("function_execution_id", "")))
        if state is None:
            return {"ok": False, "error": "function_execution_not_found"}
        if state != "running":
            return {"ok": False, "error": "execution_not_in_running_state"}
        return None

    def m_functions_completeSuccess(self, p: dict[str, Any]) -> dict[str, Any]:
        if (refused := self._complete_step(p)) is not None:
            return refused
        outputs = p.get("outputs")
        if isinstance(outputs, str):
            outputs = json.loads(outputs)
        if not isinstance(outputs, dict) or any(not isinstance(outputs.get(k), t) for k, t in STEP_OUTPUTS.items()):
            return {"ok": False, "error": "parameter_validation_failed"}
        self.steps[p["function_execution_id"]] = "completed"
        return {"ok": True}

    def m_functions_completeError(self, p: dict[str, Any]) -> dict[str, Any]:
        if (refused := self._complete_step(p)) is not None:
            return refused
        if not str(p.get("error") or "").strip():
            return {"ok": False, "error": "invalid_arguments"}
        self.steps[p["function_execution_id"]] = "completed"
        return {"ok": True}

    def m_views_publish(self, p: dict[str, Any]) -> dict[str, Any]:
        user = str(p.get("user_id", ""))
        if user not in self.state.users:
            return {"ok": False, "error": "invalid_arguments"}
        current = self.homes.get(user)
        if current is not None and p.get("hash") and p["hash"] != current["hash"]:
            return {"ok": False, "error": "hash_conflict"}
        view_id = current["id"] if current is not None else f"VH{len(self.homes) + 1:07d}"
        version = 1 if current is None else int(current["hash"].rsplit(".", 1)[1]) + 1
        self.homes[user] = {**p["view"], "id": view_id, "hash": f"{view_id}.{version}"}
        return {"ok": True, "view": self.homes[user]}

    def _new_view(self, view: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            view_id = f"V{len(self.views) + 1:08d}"
            opened = {**view, "id": view_id, "hash": f"{view_id}.1", "state": {"values": {}}}
            self.views[view_id] = opened
        return opened

    def m_conversations_info(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = p.get("channel", "")
        if channel not in self.state.names:
            return {"ok": False, "error": "channel_not_found"}
        private = channel not in self.state.public
        return {"ok": True, "channel": {"id": channel, "name": self.state.names[channel], "is_private": private}}

    def m_conversations_members(self, p: dict[str, Any]) -> dict[str, Any]:
        """A channel's members, a page at a time (``limit``, ``cursor``). A private channel the bot is not in is
        ``channel_not_found`` to it; a channel given ``users`` has those, any other channel every user added."""
        channel = p.get("channel", "")
        if channel not in self.state.names or (
            channel not in self.state.public and channel not in self.state.members_of
        ):
            return {"ok": False, "error": "channel_not_found"}
        members = sorted(self.state.channel_users.get(channel, set(self.state.users)))
        limit = max(1, min(int(p.get("limit") or 100), 1000))
        start = int(p.get("cursor") or 0)
        page, rest = members[start : start + limit], members[start + limit :]
        return {"ok": True, "members": page, "response_metadata": {"next_cursor": str(start + limit) if rest else ""}}

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

    def posted_ts(self, index: int = 0) -> str:
        """The ts Slack gave the ``index``-th message the bot posted (in any channel), as the bot was answered."""
        with self._lock:
            kept = sorted((m["ts"] for messages in self.messages.values() for m in messages), key=float)
        return kept[index]

    def _shown(self, message: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
        shown = {k: v for k, v in message.items() if k != "metadata"}
        if message.get("metadata") is not None and str(p.get("include_all_metadata", "")).lower() in ("1", "true"):
            shown["metadata"] = message["metadata"]
        return shown

    @staticmethod
    def _page(found: list[dict[str, Any]], p: dict[str, Any]) -> dict[str, Any]:
        limit = max(1, min(int(p.get("limit") or 100), 999))
        start = int(p.get("cursor") or 0)
        page, more = found[start : start + limit], start + limit < len(found)
        return {
            "ok": True,
            "messages": page,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def m_conversations_history(self, p: dict[str, Any]) -> dict[str, Any]:
        """The channel's top-level messages the bot posted, newest first, after ``oldest`` (exclusive)."""
        channel = p.get("channel", "")
        if (error := self._refused(channel, post=False)) is not None:
            return {"ok": False, "error": error} | ({"needed": "im:history"} if error == "missing_scope" else {})
        oldest, latest = float(p.get("oldest") or 0), float(p.get("latest") or "inf")
        with self._lock:
            kept = list(self.messages.get(channel, []))
        top = [m for m in kept if m.get("thread_ts") in (None, m["ts"]) and oldest < float(m["ts"]) < latest]
        return self._page([self._shown(m, p) for m in reversed(top)], p)

    def m_conversations_replies(self, p: dict[str, Any]) -> dict[str, Any]:
        """A thread: its parent (when the bot posted it) and the bot's replies, oldest first."""
        channel, ts = p.get("channel", ""), p.get("ts", "")
        if (error := self._refused(channel, post=False)) is not None:
            return {"ok": False, "error": error} | ({"needed": "im:history"} if error == "missing_scope" else {})
        if not ts:
            return {"ok": False, "error": "invalid_arguments"}
        with self._lock:
            kept = list(self.messages.get(channel, []))
        thread = [m for m in kept if m["ts"] == ts or m.get("thread_ts") == ts]
        if not thread:
            return {"ok": False, "error": "thread_not_found"}
        return self._page([self._shown(m, p) for m in thread], p)

    def m_usergroups_users_update(self, p: dict[str, Any]) -> dict[str, Any]:
        """Replace a user group's members (``users``: a comma-separated list, or a list as slack_sdk sends JSON);
        needs ``usergroups:write``, which the manifest asks for only as a comment (see ``grant``)."""
        if "usergroups:write" not in self.state.scopes:
            provided = ",".join(sorted(self.state.scopes))
            return {"ok": False, "error": "missing_scope", "needed": "usergroups:write", "provided": provided}
        group = p.get("usergroup", "")
        if group not in self.state.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        raw = p.get("users")
        users = raw if isinstance(raw, list) else [u for u in str(raw or "").split(",") if u]
        if not users:
            return {"ok": False, "error": "invalid_arguments"}
        if any(u not in self.state.users for u in users):
            return {"ok": False, "error": "invalid_users"}
        self.state.usergroups[group] = list(users)
        return {"ok": True, "usergroup": {"id": group, "users": list(users), "user_count": len(users)}}

    def m_usergroups_users_list(self, p: dict[str, Any]) -> dict[str, Any]:
        members = self.state.usergroups.get(p.get("usergroup", ""))
        if members is None:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": members}


def is_user(channel: str) -> bool:
    return channel.startswith(("U", "W"))


def dm_channel(user_id: str) -> str:
    """The ID of the app's DM with ``user_id``, as Slack answers it (``D…``)."""
    return "D" + user_id[1:]


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fakes.slack --channel C0OPS --usergroup S0SUPPORT=U1,U2``: prints ``PORT <n>``.

    Run as its own process nothing can call ``response_url()`` or ``issue_trigger()``: a response_url or trigger
    is issued when first used, then holds to Slack's limits."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--channel", action="append", default=[], help="a channel the bot is in")
    parser.add_argument("--usergroup", action="append", default=[], help="S…=U…,U…")
    parser.add_argument(
        "--no-channel-limit",
        action="store_true",
        help="take any number of posts per channel (benchmarks measuring the bot, not Slack's ~1 post/s)",
    )
    parser.add_argument("--socket-mode-url", help="what apps.connections.open answers (a Socket Mode server's ws://)")
    args = parser.parse_args(argv)
    fake = FakeSlack(port=args.port, issue_on_first_use=True)
    fake.socket_mode_url = args.socket_mode_url
    if args.no_channel_limit:
        fake.relax_rates()
    for channel in args.channel:
        fake.add_channel(channel)
    for group in args.usergroup:
        name, _, members = group.partition("=")
        fake.state.usergroups[name] = [m for m in members.split(",") if m]
    run_as_process(fake)


if __name__ == "__main__":
    main()
