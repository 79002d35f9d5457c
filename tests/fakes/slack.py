"""A fake Slack Web API on 127.0.0.1: the methods the bot calls, answering as Slack does, recording every call.

Point the bot's ``SLACK_API_URL`` at ``fake.api_url``. Channels the bot is not in answer ``not_in_channel``
until ``conversations.join``; private ones answer ``channel_not_found`` and cannot be joined. ``response_url``
posts go to ``fake.response_url(name)`` and are recorded in ``fake.responses``. ``rate_limit`` makes a method
answer 429 with ``Retry-After`` a number of times.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.server import LoopbackServer, run_as_process

BOT_TOKEN = "xoxb-test-bot-token"
SIGNING_SECRET = "test-signing-secret-8f7d6c5b"
TEAM_ID = "T0TEAM"
BOT_USER_ID = "U0BOT"


@dataclass
class Call:
    method: str
    params: dict[str, Any]
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

    def of(self, method: str) -> list[dict[str, Any]]:
        """Parameters of every call to ``method``, in order."""
        return [c.params for c in self.calls if c.method == method]

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
        self.calls.append(Call(method, params, dict(request.headers)))
        if self.state.delays.get(method):
            await asyncio.sleep(self.state.delays[method])
        limits = self.state.rate_limits.get(method)
        if limits:
            retry_after = limits.pop(0)
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": str(int(retry_after))}
            )
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        body: dict[str, Any] = handler(params)
        return web.json_response(body)

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
