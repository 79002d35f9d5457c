"""Composition root: the one place that turns settings into a running bot.

``open_resources`` opens and checks what the bot talks to (Slack's ``auth.test``, the database and its migrations,
D7, the report secret); ``wire`` builds every part from them, with no I/O; ``open_relay`` runs the background parts
in one ``AsyncExitStack`` and stops them in the order ``Relay.background`` declares. Collaborators can be passed
in (tests pass clients pointed at loopback fakes). ``serve`` runs it: HTTP with uvicorn, or Socket Mode (with the
same HTTP server for ``/healthz``), until SIGTERM/SIGINT, then lets sends in flight finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import uvicorn
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped, warning_token_skipped
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from starlette.applications import Starlette

from bot import __version__, logs
from bot.config import Settings
from bot.d7 import D7Client, DryRunGateway
from bot.d7.reports import parse_report
from bot.domain.clock import utc_now
from bot.domain.errors import ConfigError
from bot.domain.models import Organisation
from bot.domain.policy import Policy, load_policy
from bot.domain.ports import Balance, MessageGateway, SettingsStore, Steps
from bot.metrics import Metrics
from bot.sending.admission import Admission
from bot.sending.alerts import AlertDesk
from bot.sending.balance import BalanceWatcher, Post
from bot.sending.deliveries import Deliveries
from bot.sending.home import HomeDesk
from bot.sending.intake import Intake
from bot.sending.outbox import Outbox
from bot.sending.pipeline import SEND_RETRY, Pipeline
from bot.sending.telling import Teller
from bot.slack import messages
from bot.slack.alerts import SlackMessageReader
from bot.slack.conversation import PACED_METHODS, SlackConversations
from bot.slack.directory import SlackDirectory
from bot.slack.home import HomeTabs
from bot.slack.installation import ThisInstallationOnly
from bot.slack.listeners import Deps, register_all
from bot.slack.retry import CappedRateLimitRetryHandler
from bot.slack.steps import SlackSteps
from bot.storage import Storage
from bot.storage.engine import ping
from bot.tasks import BackgroundTasks, RightOfWay
from bot.web import create_web_app

REPORT_SECRET_KEY = "d7_report_secret"  # noqa: S105 - the name of the kv row that holds it, not a secret

log = logging.getLogger("bot")

SLACK_TIMEOUT = 10  # seconds for one Slack Web API call
SLACK_RATE_LIMIT_RETRIES = 3


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its own shutdown, which would kill us before sends in flight finish;
    ``run`` handles the signals instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _SkipTokenWarning(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment by itself, then warns that our client and authorize win."""

    _noise = frozenset({warning_client_prioritized_and_token_skipped(), warning_token_skipped()})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self._noise


class _StartupAuthorize(AsyncAuthorize):
    """Authorizes every request with the ``auth.test`` answer checked at startup.

    Bolt's single-team default calls ``auth.test`` on each request until its cache is filled, so a burst of 200
    commands made 200 ``auth.test`` calls (a rate-limited method) and slowed every ack.
    """

    def __init__(self, result: AuthorizeResult) -> None:
        self._result = result

    async def __call__(self, **_: Any) -> AuthorizeResult | None:
        return self._result


class StartupError(ConfigError):
    """The bot cannot start with these settings (Slack refused the token, Slack unreachable, ...)."""


@dataclass(frozen=True)
class Resources:
    """What the bot opens before it is wired, each checked once at startup: Slack (``auth.test``), the database
    (migrated), D7 (or the dry run), and the delivery-report address."""

    slack: AsyncWebClient
    auth: AsyncSlackResponse
    gateway: MessageGateway
    storage: Storage
    report_secret: str
    report_url: str | None


@dataclass(frozen=True)
class HealthCheck:
    """``GET /healthz``: does the database answer, how much is waiting, how much is in flight; the D7 balance as
    last read (never a reason to be unhealthy: D7 may not offer it)."""

    settings: Settings
    storage: Storage
    gateway: MessageGateway
    outbox: Outbox
    metrics: Metrics
    balance: BalanceWatcher

    async def __call__(self) -> tuple[bool, dict[str, Any]]:
        db = self.storage.database
        database = await ping(db.engine)
        backlog: int | None = None
        stuck: int | None = None
        if database:
            try:
                backlog = await self.storage.sends.backlog()
                stuck = await self.storage.sends.stuck()
                self.metrics.outbox_depth.set(backlog)
            except Exception:
                database = False
        # Reads can work while writes do not (a read-only or full disk, a lock held by another process).
        writes = "failing" if db.writes.failing else "ok" if database and await db.can_write() else "locked"
        healthy = database and writes == "ok"
        return healthy, {
            "status": "ok" if healthy else "degraded",
            "version": __version__,
            "mode": "socket" if self.settings.socket_mode else "http",
            "dry_run": self.gateway.dry_run,
            "database": "ok" if database else "unreachable",
            "database_writes": writes if database else "unknown",
            "last_write_error": db.writes.failure if db.writes.failing else None,
            "outbox_backlog": backlog,
            "sends_stuck_sending": stuck,
            "sends_in_flight": self.outbox.in_flight,
            "d7_balance": self.balance.health(),
        }


@dataclass(frozen=True)
class Relay:
    """The running bot's parts, wired."""

    settings: Settings
    policy: Policy
    slack: AsyncWebClient
    gateway: MessageGateway
    storage: Storage
    metrics: Metrics
    tasks: BackgroundTasks
    deliveries: Deliveries
    outbox: Outbox
    balance: BalanceWatcher
    health: HealthCheck
    bolt: AsyncApp
    web: Starlette
    bot_user_id: str | None
    team_id: str | None
    right_of_way: RightOfWay

    def background(self) -> list[AbstractAsyncContextManager[Any]]:
        """The parts that run on their own, in the order they start; they stop in the reverse order: the outbox
        first (no new claims, sends in flight finish), then the balance watcher, delivery reports, and the
        listeners' tasks. The connections they use (database, D7, Slack) were opened before and close after them."""
        return [self.tasks, self.deliveries, self.balance, self.outbox]


def make_slack_client(settings: Settings) -> AsyncWebClient:
    """Slack Web API client on ``SLACK_API_URL`` with one shared connection pool; 429s are retried."""
    # slack_sdk looks this variable up on every call to warn about deprecated methods (the bot calls none): the
    # failed lookup was 7 % of the bot's CPU under a burst of commands (py-spy, bench.vs_bare_bolt).
    os.environ.setdefault("SLACKCLIENT_SKIP_DEPRECATION", "1")
    base_url = str(settings.slack_api_url)
    return AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        timeout=SLACK_TIMEOUT,
        # slack_sdk applies its timeout only to sessions it makes itself: ours carries it too (a call Slack never
        # answers otherwise waits aiohttp's 300 s).
        session=aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SLACK_TIMEOUT)),
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(),
            # Not slack_sdk's own: it raises on a Retry-After of "inf" or "nan" and sleeps as long as a huge one says.
            # Posts wait out their 429s in turn, per channel (ChannelPacer), not each on its own here.
            CappedRateLimitRetryHandler(max_retry_count=SLACK_RATE_LIMIT_RETRIES, paced=PACED_METHODS),
        ],
    )


def slack_poster(slack: AsyncWebClient) -> Post:
    """Posts a plain message in a channel (the balance watcher's warnings)."""

    async def post(channel: str, balance: Balance, low: float) -> None:
        await slack.chat_postMessage(channel=channel, text=messages.low_balance_warning(balance, low))

    return post


def make_gateway(settings: Settings) -> MessageGateway:
    if settings.d7_api_token is None:
        return DryRunGateway()
    return D7Client(settings.d7_api_token, base_url=str(settings.d7_api_url))


async def verify_slack(client: AsyncWebClient, settings: Settings) -> AsyncSlackResponse:
    """``auth.test``: a refused token or an unreachable Slack stops the bot with a clear message."""
    try:
        response = await client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error")
        raise StartupError(
            f"Slack refused SLACK_BOT_TOKEN ({error}). Copy the Bot User OAuth Token (xoxb-…) from your "
            "app's OAuth & Permissions page, and reinstall the app if it was revoked."
        ) from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise StartupError(f"cannot reach Slack at {settings.slack_api_url}: {type(exc).__name__} {exc}") from None
    return response


async def report_address(settings: Settings, kept: SettingsStore) -> tuple[str, str | None]:
    """The delivery-report secret (``D7_REPORT_SECRET``, else generated once and kept in the database, the same
    for every replica) and the ``report_url`` sends carry (None without ``PUBLIC_URL``: no reports)."""
    if settings.d7_report_secret is not None:
        secret = settings.d7_report_secret.get_secret_value()
    else:
        secret = await kept.get(REPORT_SECRET_KEY) or await kept.put_once(REPORT_SECRET_KEY, secrets.token_urlsafe(32))
    if settings.public_url is None:
        log.warning("PUBLIC_URL is not set: sends carry no report_url, so no delivery reports will arrive")
        return secret, None
    return secret, f"{str(settings.public_url).rstrip('/')}/d7/reports/{secret}"


async def open_resources(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    gateway: MessageGateway | None = None,
    slack_client: AsyncWebClient | None = None,
) -> Resources:
    """Open and check what the bot talks to; each is closed by ``stack`` (those passed in are closed too)."""
    slack = slack_client or make_slack_client(settings)
    if slack.session is not None:
        stack.push_async_callback(slack.session.close)
    auth = await verify_slack(slack, settings)
    gateway = gateway or make_gateway(settings)
    stack.push_async_callback(gateway.aclose)
    try:
        storage = await Storage.open(settings.database_url)
    except Exception as exc:
        raise StartupError(f"cannot prepare the database ({type(exc).__name__}): {exc}") from None
    await stack.enter_async_context(storage)
    secret, report_url = await report_address(settings, storage.settings)
    return Resources(slack, auth, gateway, storage, secret, report_url)


@dataclass(frozen=True)
class SendingCore:
    """The parts of ``bot.sending`` that the Slack side and the lifecycle need."""

    admission: Admission
    intake: Intake
    deliveries: Deliveries
    outbox: Outbox
    balance: BalanceWatcher
    alerts: AlertDesk


def wire_sending(
    settings: Settings,
    policy: Policy,
    resources: Resources,
    directory: SlackDirectory,
    metrics: Metrics,
    changed: Callable[[str], None] | None = None,  # a person's send changed (their home tab refreshes)
    steps: Steps | None = None,  # workflow steps, completed with their send's outcome
    right_of_way: RightOfWay | None = None,  # Slack's requests before the outbox's work
) -> SendingCore:
    """The sending core on the opened resources: admission, alerts, telling, delivery reports, the pipeline and the
    outbox that runs it. No I/O."""
    storage, gateway = resources.storage, resources.gateway
    wakeup = asyncio.Event()  # set when an intent is recorded or becomes due: the outbox looks at once
    conversations = SlackConversations(resources.slack, metrics)
    admission = Admission(policy, directory)
    alerts = AlertDesk(
        policy=policy,
        admission=admission,
        ledger=storage.alerts,
        sends=storage.sends,
        directory=directory,
        reader=SlackMessageReader(directory),
        deadline=settings.send_retry_deadline,
        organisation=Organisation(resources.auth.get("team_id"), resources.auth.get("enterprise_id")),
    )
    teller = Teller(
        sends=storage.sends,
        deliveries=storage.deliveries,
        alerts=alerts,
        conversations=conversations,
        show_numbers=policy.defaults.show_numbers,
    )
    if changed is not None:
        teller = replace(teller, changed=changed)
    if steps is not None:
        teller = replace(teller, steps=steps)
    deliveries = Deliveries(
        sends=storage.sends,
        reports=storage.deliveries,
        gateway=gateway,
        teller=teller,
        secret=resources.report_secret,
        wake=wakeup.set,
        parse=parse_report,
        reconcile_after=settings.reconcile_after,
    )
    intake = Intake(storage.sends, settings.send_retry_deadline, wakeup.set)
    balance = BalanceWatcher(
        gateway,
        metrics,
        post=slack_poster(resources.slack),
        low=policy.defaults.low_balance,
        admin_channel=policy.defaults.admin_channel,
        settings=storage.settings,
    )
    pipeline = Pipeline(
        sends=storage.sends,
        admission=admission,
        alerts=alerts,
        teller=teller,
        gateway=gateway,
        conversations=conversations,
        metrics=metrics,
        deadline=settings.send_retry_deadline,
        report_url=resources.report_url,
        on_request_id=deliveries.request_id_known,
        abandoned=intake.abandoned,
        billed=balance.soon,
        budgets=storage.budgets,
        retry=replace(SEND_RETRY, base_delay=settings.send_retry_backoff.total_seconds()),
        give_way=(right_of_way or RightOfWay()).give_way,
    )
    outbox = Outbox(
        sends=storage.sends, pipeline=pipeline, wakeup=wakeup, metrics=metrics, single_process=storage.single_process
    )
    return SendingCore(admission, intake, deliveries, outbox, balance, alerts)


def wire(settings: Settings, policy: Policy, resources: Resources) -> Relay:
    """Build every part from the opened resources. No I/O: nothing runs until the relay's background parts are
    entered."""
    slack, auth = resources.slack, resources.auth
    metrics = Metrics()
    tasks = BackgroundTasks()
    directory = SlackDirectory(slack)
    home = HomeTabs(slack, tasks, settings=resources.storage.settings)
    steps = SlackSteps(slack)
    right_of_way = RightOfWay()
    core = wire_sending(
        settings, policy, resources, directory, metrics, changed=home.changed, steps=steps, right_of_way=right_of_way
    )
    home.desk = HomeDesk(
        policy=policy,
        admission=core.admission,
        sends=resources.storage.sends,
        reports=resources.storage.deliveries,
        directory=directory,
        budgets=resources.storage.budgets,
        policy_file=str(settings.bot_policy),
        policy_loaded_at=utc_now(),
        balance=core.balance.health,
    )
    bolt = make_bolt(settings, slack, auth)
    deps = Deps(
        policy=policy,
        admission=core.admission,
        intake=core.intake,
        directory=directory,
        tasks=tasks,
        deliveries=core.deliveries,
        metrics=metrics,
        bot_user_id=auth.get("user_id"),
        bot_id=auth.get("bot_id"),
        home=home,
        steps=steps,
        alerts=core.alerts,
    )
    register_all(bolt, deps)
    health = HealthCheck(settings, resources.storage, resources.gateway, core.outbox, metrics, core.balance)
    bolt_over_http = None if settings.socket_mode else bolt
    deliveries = core.deliveries
    web = create_web_app(
        bolt_over_http, health, metrics, reports=deliveries, right_of_way=None if settings.socket_mode else right_of_way
    )
    return Relay(
        settings=settings,
        policy=policy,
        slack=slack,
        gateway=resources.gateway,
        storage=resources.storage,
        metrics=metrics,
        tasks=tasks,
        deliveries=deliveries,
        outbox=core.outbox,
        balance=core.balance,
        health=health,
        bolt=bolt,
        web=web,
        bot_user_id=auth.get("user_id"),
        team_id=auth.get("team_id"),
        right_of_way=right_of_way,
    )


def make_bolt(settings: Settings, slack: AsyncWebClient, auth: AsyncSlackResponse) -> AsyncApp:
    signing_secret = settings.slack_signing_secret
    bolt_log = logging.getLogger("bot.bolt")
    if not any(isinstance(f, _SkipTokenWarning) for f in bolt_log.filters):
        bolt_log.addFilter(_SkipTokenWarning())
    app = AsyncApp(
        client=slack,
        signing_secret=signing_secret.get_secret_value() if signing_secret else "",
        request_verification_enabled=not settings.socket_mode,
        # Listeners ack and hand slow work to background tasks, so they return at once; running them inline
        # spares Bolt's default of polling for the ack every 10 ms (11.8 ms per ack measured, 0.33 ms without).
        process_before_response=True,
        authorize=_StartupAuthorize(  # type: ignore[arg-type]  # Bolt accepts an AsyncAuthorize instance
            AuthorizeResult.from_auth_test_response(bot_token=slack.token, auth_test_response=auth)
        ),
        logger=bolt_log,
    )
    # Every install of the app shares the signing secret: another workspace's signed requests are refused.
    app.use(
        ThisInstallationOnly(auth.get("team_id"), auth.get("enterprise_id"), bool(auth.get("is_enterprise_install")))
    )
    return app


@asynccontextmanager
async def open_relay(
    settings: Settings,
    *,
    policy: Policy | None = None,
    gateway: MessageGateway | None = None,
    slack_client: AsyncWebClient | None = None,
) -> AsyncIterator[Relay]:
    """The bot, running (outbox, delivery reports, background tasks) until the block ends; then stopped in the
    order ``Relay.background`` declares and every connection closed. Must run in the event loop that serves it."""
    policy = policy or load_policy(settings.bot_policy)
    async with AsyncExitStack() as stack:
        relay = wire(
            settings, policy, await open_resources(settings, stack, gateway=gateway, slack_client=slack_client)
        )
        for part in relay.background():
            await stack.enter_async_context(part)
        yield relay


def make_socket_handler(relay: Relay) -> AsyncSocketModeHandler | None:
    """The Socket Mode connection (aiohttp) when ``SLACK_APP_TOKEN`` is set; None in HTTP mode."""
    token = relay.settings.slack_app_token
    if token is None:
        return None
    return _SlackFirstSocket(relay.bolt, token.get_secret_value(), right_of_way=relay.right_of_way)


class _SlackFirstSocket(AsyncSocketModeHandler):
    """Socket Mode's envelopes, like HTTP requests (``web.SlackFirst``), go before background work until acked."""

    def __init__(self, app: AsyncApp, app_token: str, *, right_of_way: RightOfWay) -> None:
        self.right_of_way = right_of_way
        super().__init__(app, app_token)

    async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        answered = self.right_of_way.arrived()
        try:
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
