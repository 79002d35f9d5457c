"""End-to-end harness: the real ASGI app served by uvicorn on a random loopback port, wired to the fake Slack
Web API and the fake D7, with requests signed exactly as Slack signs them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import sqlalchemy as sa
import uvicorn
from pydantic import SecretStr

from bot.app import Relay, open_relay
from bot.config import Settings
from bot.d7 import D7Client
from bot.domain.clock import utc_now
from bot.domain.ports import MessageGateway
from bot.domain.sends import CARD_EVERY, SendState
from bot.storage.engine import create_engine
from bot.storage.schema import UTCDateTime, delivery_reports, inbound, metadata, send_requests, sends
from tests.fakes.d7 import TOKEN as D7_TOKEN
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, TEAM_ID, FakeSlack

POLICY = """
version: 1
defaults: {region: US, max_segments: 3, show_numbers: masked, countries: [US, GB]}
senders:
  ops-sms:    {via: sms, originator: OpsAlert}
  support-wa: {via: whatsapp, originator: "+971501234567"}
contacts:
  oncall-db: ["+14155550100", "+14155550101"]
rules:
  - name: ops may page on-call
    slack_channels: [C0OPS, C0PRIVATE, C0NOTJOINED]
    users: ["*"]
    senders: [ops-sms]
    recipients: ["+1*", "group:oncall-db"]
    max_recipients: 5
  - name: support agents on WhatsApp
    slack_channels: [C0SUPPORT]
    users: [S0SUPPORT]
    senders: [support-wa]
    recipients: ["*"]
"""

_triggers = itertools.count(1)
_events = itertools.count(1)


def everyone_policy(
    numbers: list[str], *, show_numbers: str = "full", max_recipients: int = 1000, alerts: str = ""
) -> str:
    """A policy whose one rule lets anyone in #ops (C0OPS) text the contact group ``everyone`` (``numbers``), with no
    per-person budget (big sends are the subject, not budgets); ``alerts``: an ``alerts:`` section to add."""
    return f"""
version: 1
defaults: {{region: US, max_segments: 3, show_numbers: {show_numbers}, limits: {{per_user: none}}}}
senders:
  ops-sms: {{via: sms, originator: OpsAlert}}
contacts:
  everyone: [{", ".join(f'"{n}"' for n in numbers)}]
rules:
  - name: ops may text everyone
    slack_channels: [C0OPS]
    users: ["*"]
    senders: [ops-sms]
    recipients: ["group:everyone"]
    max_recipients: {max_recipients}
{alerts}"""


def event_callback(event: dict[str, Any], *, channel: str = "C0ALERTS", event_id: str | None = None) -> bytes:
    """The JSON body Slack posts to the Events API for one event (``event_callback``)."""
    return json.dumps(
        {
            "token": "deprecated-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": "A0APP",
            "event": {"channel": channel, "channel_type": "channel", "event_ts": event.get("ts"), **event},
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(_events):010d}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM_ID, "user_id": "U0BOT", "is_bot": True}],
        }
    ).encode()


def sign(body: bytes, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """Slack's v0 signature: HMAC-SHA256 of ``v0:{timestamp}:{body}`` with the signing secret."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def slash_command(
    command: str,
    text: str,
    *,
    user: str = "U0ALICE",
    channel: str = "C0OPS",
    response_url: str = "",
    trigger_id: str | None = None,
) -> bytes:
    """The form body Slack posts for a slash command."""
    return urlencode(
        {
            "token": "deprecated-verification-token",
            "team_id": TEAM_ID,
            "team_domain": "test",
            "channel_id": channel,
            "channel_name": channel.lower(),
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "api_app_id": "A0APP",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id or f"1337.{next(_triggers)}.abcdef",
        }
    ).encode()


def triggers_in(body: bytes) -> list[str]:
    """The trigger_ids in a body Slack would post: a slash command's form, an interaction's ``payload``, or JSON."""
    text = body.decode(errors="replace")
    try:
        found: Any = json.loads(text)
    except ValueError:
        form = dict(parse_qsl(text, keep_blank_values=True))
        found = form
        if "payload" in form:
            with suppress(ValueError):
                found = [form, json.loads(form["payload"])]
    ids: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "trigger_id" and isinstance(item, str) and item:
                    ids.append(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(found)
    return ids


def issue_triggers(slack: FakeSlack, body: bytes) -> None:
    """Slack issues a trigger when it sends the interaction: tell the fake, so views.open has 3 s from now."""
    for trigger_id in triggers_in(body):
        slack.issue_trigger(trigger_id)


def global_shortcut(trigger_id: str, user: str = "U0ALICE") -> dict[str, Any]:
    """The payload of the global "Send a text" shortcut, as Slack sends it (post it with ``App.post``)."""
    return {
        "type": "shortcut",
        "callback_id": "send_text",
        "trigger_id": trigger_id,
        "team": {"id": TEAM_ID},
        "user": {"id": user},
        "api_app_id": "A0APP",
    }


def settings_for(slack: FakeSlack, d7: FakeD7 | None, policy: Path, tmp: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_APP_TOKEN": None,
        "SLACK_API_URL": slack.api_url,
        "D7_API_TOKEN": D7_TOKEN if d7 is not None else None,
        "D7_API_URL": d7.url if d7 is not None else "http://127.0.0.1:9",
        "BOT_POLICY": str(policy),
        "DATABASE_URL": f"sqlite:///{tmp / 'bot.db'}",
        "PUBLIC_URL": None,
        "HOST": "127.0.0.1",
        "PORT": 3000,
        "D7_REPORT_SECRET": None,
        "D7_JOURNAL": str(tmp / "d7-journal"),  # the app's own, also on PostgreSQL (two apps, two directories)
        **extra,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class App:
    relay: Relay
    url: str
    http: httpx.AsyncClient
    slack: FakeSlack
    d7: FakeD7 | None

    async def post(self, body: bytes, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        all_headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            **(headers if headers is not None else sign(body)),
        }
        issue_triggers(self.slack, body)
        return await self.http.post(f"{self.url}/slack/events", content=body, headers=all_headers, **kw)

    async def event(self, body: bytes, retry: int = 0) -> httpx.Response:
        """Post an Events API body as Slack does (JSON, signed; ``retry`` > 0 adds Slack's retry headers)."""
        headers = {"Content-Type": "application/json", **sign(body)}
        if retry:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        issue_triggers(self.slack, body)
        return await self.http.post(f"{self.url}/slack/events", content=body, headers=headers)

    async def command(self, command: str, text: str, **kw: Any) -> httpx.Response:
        """Post a slash command as Slack does, with a response_url of its own (named "cmd": every command's
        accepted posts are in ``slack.responses["cmd"]``; ``slack.response_urls("cmd")[-1]`` is this one's URL)."""
        kw.setdefault("response_url", self.slack.response_url("cmd"))
        return await self.post(slash_command(command, text, **kw))

    async def settle(self, seconds: float = 10.0) -> None:
        """Wait until, as seen from outside: delivery reports whose send is known are applied, the outbox has
        nothing due and nothing leased or in work, and background tasks are done."""
        async with asyncio.timeout(seconds):
            # Polled: the bot has no "quiet" signal of its own, and needs none outside tests.
            while self.relay.tasks.in_flight or self.relay.outbox.in_flight or not await self._quiet():  # noqa: ASYNC110
                await asyncio.sleep(0.005)

    async def _quiet(self) -> bool:
        now = utc_now()
        at = sa.literal(now, UTCDateTime())
        # A card rewrite held back to coalesce reports (``CARD_EVERY``) is work still to come, not a quiet bot.
        soon = sa.literal(now + CARD_EVERY, UTCDateTime())
        c = sends.c
        finished = [s.value for s in SendState if s.final]
        due = sa.or_(
            sa.and_(
                sa.or_(c.state == SendState.PENDING.value, sa.and_(c.state.in_(finished), c.posted_at.is_(None))),
                c.next_attempt_at <= at,
            ),
            sa.and_(c.card_due_at <= soon, c.posted_at.is_not(None)),
        )
        busy = sa.select(sa.func.count()).where(sa.or_(due, c.claimed_by.is_not(None)))
        r = delivery_reports.c
        later = sa.exists().where(send_requests.c.request_id == r.request_id)  # a later request of a send
        known = sa.or_(sa.exists().where(c.request_id == r.request_id), later)
        unapplied = sa.select(sa.func.count()).where(r.applied_at.is_(None), known)
        i = inbound.c  # texts phones sent back, not handled yet (or leased now)
        texts = sa.select(sa.func.count()).where(sa.or_(i.next_attempt_at <= at, i.lease_until > at))
        async with self.relay.storage.database.connect() as conn:
            return (
                (await conn.execute(busy)).scalar_one() == 0
                and (await conn.execute(unapplied)).scalar_one() == 0
                and (await conn.execute(texts)).scalar_one() == 0
            )


def no_sleep_d7(d7: FakeD7) -> D7Client:
    """A D7 client on the fake that retries at once (its own backoff is tested in test_d7_client)."""

    async def no_sleep(delay: float) -> None:
        return None

    return D7Client(SecretStr(D7_TOKEN), base_url=d7.url, sleep=no_sleep)


@contextmanager
def database_down() -> Iterator[None]:
    """Every statement on every engine fails, as when the database stops answering (SQLAlchemy's event hooks: the
    bot is not told, it finds out)."""

    def refuse(*args: Any) -> None:
        raise ConnectionRefusedError("the database is down (test)")

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", refuse)
    try:
        yield
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", refuse)


@asynccontextmanager
async def running_app(
    slack: FakeSlack,
    d7: FakeD7 | None,
    tmp: Path,
    policy: str = POLICY,
    gateway: MessageGateway | None = None,
    **extra: Any,
) -> AsyncIterator[App]:
    path = tmp / "policy.yml"
    path.write_text(policy)
    async with open_relay(settings_for(slack, d7, path, tmp, **extra), gateway=gateway) as relay:
        server = uvicorn.Server(
            uvicorn.Config(relay.web, host="127.0.0.1", port=0, log_config=None, lifespan="off", access_log=False)
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(timeout=10) as http:
            try:
                yield App(relay, f"http://127.0.0.1:{port}", http, slack, d7)
            finally:
                server.should_exit = True
                await task


async def reset_postgres(url: str) -> None:
    """Drop the bot's tables from a PostgreSQL test database, so a test or benchmark starts from nothing."""
    engine = create_engine(url)
    async with engine.begin() as conn:
        for table in [
            *(t.name for t in reversed(metadata.sorted_tables)),
            "alembic_version",
        ]:  # every table, newest too
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    await engine.dispose()
