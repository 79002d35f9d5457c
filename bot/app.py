"""Composition root: the one place that turns settings into a running bot.

``open_resources`` opens and checks what the bot talks to (Slack's ``auth.test``, the database and its migrations,
D7, the report secret); ``wire`` builds every part from them, with no I/O, and subscribes the parts that react to
the sending core's events (``bot.domain.events``); ``open_relay`` runs the background parts in one
``AsyncExitStack`` and stops them in the order ``Relay.background`` declares. Collaborators can be passed in (tests
pass clients pointed at loopback fakes). ``bot.serving`` runs it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped, warning_token_skipped
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from starlette.applications import Starlette

from bot.config import Settings
from bot.d7 import D7Client, DryRunGateway
from bot.d7.reports import parse_report
from bot.d7.wire import MAX_RECIPIENTS_PER_REQUEST
from bot.domain.clock import utc_now
from bot.domain.errors import ConfigError
from bot.domain.events import Billed, Bus, RequestIdKnown, SendChanged
from bot.domain.models import Organisation
from bot.domain.policy import Policy, load_policy
from bot.domain.ports import Balance, MessageGateway, SettingsStore, Steps
from bot.health import HealthCheck
from bot.metrics import Metrics
from bot.pages import action_routes
from bot.sending.admission import Admission
from bot.sending.alerts import AlertDesk
from bot.sending.balance import BalanceWatcher, Post
from bot.sending.deliveries import Deliveries
from bot.sending.handoffs import HandoffWatcher
from bot.sending.home import HomeDesk
from bot.sending.inbound import Inbox
from bot.sending.intake import Intake
from bot.sending.links import ActionLinks
from bot.sending.oncall import OnCall
from bot.sending.outbox import Outbox, new_worker_id
from bot.sending.phone_texts import PhoneTexts
from bot.sending.pipeline import SEND_RETRY, Pipeline
from bot.sending.telling import Teller
from bot.sending.verified_phones import Reminders, VerifiedPhones
from bot.sending.verifying import PhoneVerifying
from bot.slack import messages
from bot.slack.alerts import SlackMessageReader
from bot.slack.conversation import PACED_METHODS, ChannelPacer, SlackConversations
from bot.slack.deps import Deps
from bot.slack.directory import SlackDirectory
from bot.slack.handoffs import SlackHandoffNotices
from bot.slack.home import HomeTabs
from bot.slack.installation import ThisInstallationOnly
from bot.slack.listeners import register_all
from bot.slack.listeners.commands import QuickSends
from bot.slack.phones import SlackPhoneNotes
from bot.slack.retry import CappedRateLimitRetryHandler, SafeConnectionRetryHandler
from bot.slack.steps import SlackSteps
from bot.slack.verify import SlackVerifyNotes
from bot.storage import Storage
from bot.storage.journal import FileJournal
from bot.tasks import BackgroundTasks, RightOfWay
from bot.web import create_web_app

REPORT_SECRET_KEY = "d7_report_secret"  # noqa: S105 - the name of the kv row that holds it, not a secret

log = logging.getLogger("bot")

SLACK_TIMEOUT = 10  # seconds for one Slack Web API call
SLACK_RATE_LIMIT_RETRIES = 3


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
    journal: FileJournal | None = None  # D7's answers while the database does not take them
    pacer: ChannelPacer = field(default_factory=ChannelPacer)  # every post of the process, at Slack's pace


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
    inbox: Inbox | None = None  # texts phones send back (``POST /d7/inbound/<secret>``)
    handoffs: HandoffWatcher | None = None  # on-call handoffs noticed (DMs, user groups)
    quick: QuickSends | None = None  # commands that send, acked without Bolt's dispatch (HTTP and Socket Mode)

    def background(self) -> list[AbstractAsyncContextManager[Any]]:
        """The parts that run on their own, in the order they start; they stop in the reverse order: the outbox
        first (no new claims, sends in flight finish), then the balance watcher, delivery reports, and the
        listeners' tasks. The connections they use (database, D7, Slack) were opened before and close after them."""
        inbox = [self.inbox] if self.inbox is not None else []
        handoffs = [self.handoffs] if self.handoffs is not None else []
        return [self.tasks, self.deliveries, *inbox, *handoffs, self.balance, self.outbox]


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
            # A post whose connection broke after it was sent may have been carried out: not retried blindly here.
            SafeConnectionRetryHandler(unsafe=("chat.postMessage",)),
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
    try:
        journal = FileJournal.open(settings.journal)
    except OSError as exc:
        raise StartupError(f"cannot open D7_JOURNAL {settings.journal} ({type(exc).__name__}): {exc}") from None
    stack.push_async_callback(journal.aclose)  # after the outbox stopped: its last answers may go to it
    pacer = ChannelPacer(settings.slack_channel_pace)
    return Resources(slack, auth, gateway, storage, secret, report_url, journal, pacer)


@dataclass(frozen=True)
class SendingCore:
    """The parts of ``bot.sending`` that the Slack side and the lifecycle need."""

    admission: Admission
    intake: Intake
    deliveries: Deliveries
    outbox: Outbox
    balance: BalanceWatcher
    alerts: AlertDesk
    conversations: SlackConversations
    links: ActionLinks | None = None  # alert texts' action links (None without PUBLIC_URL)
    oncall: OnCall | None = None  # who is on call for the policy's schedules (/sms oncall)
    verifying: PhoneVerifying | None = None  # "Verify my phone" (None unless defaults.verified_phones)


def wire_sending(
    settings: Settings,
    policy: Policy,
    resources: Resources,
    directory: SlackDirectory,
    metrics: Metrics,
    events: Bus,
    steps: Steps | None = None,  # workflow steps, completed with their send's outcome
    right_of_way: RightOfWay | None = None,  # Slack's requests before the outbox's work
    tasks: BackgroundTasks | None = None,  # where notes that need not hold up a send go (None: not sent)
) -> SendingCore:
    """The sending core on the opened resources: admission, alerts, telling, delivery reports, the pipeline and the
    outbox that runs it; what it tells the rest of the process goes on ``events``. No I/O."""
    storage, gateway = resources.storage, resources.gateway
    wakeup = asyncio.Event()  # set when an intent is recorded or becomes due: the outbox looks at once
    conversations = SlackConversations(resources.slack, metrics, resources.pacer)
    oncall = OnCall(policy, directory, storage.oncall)
    admission = Admission(policy, directory, storage.optouts, oncall, _verified_phones(policy, resources, tasks))
    worker = new_worker_id()  # the outbox's: the intents this process records are its own until confirmed
    intake = _intake(settings, storage, wakeup, tasks, worker)
    links = _action_links(settings, policy, resources, directory, conversations, intake)
    alerts = _alert_desk(settings, policy, resources, directory, admission, links.room if links else "")
    teller = Teller(
        sends=storage.sends, deliveries=storage.deliveries, alerts=alerts, conversations=conversations,
        show_numbers=policy.defaults.show_numbers, events=events, steps=steps,
    )  # fmt: skip
    deliveries = Deliveries(
        sends=storage.sends, reports=storage.deliveries, gateway=gateway, teller=teller, wake=wakeup.set,
        secret=resources.report_secret, parse=parse_report, reconcile_after=settings.reconcile_after,
    )  # fmt: skip
    balance = _balance_watcher(policy, resources, metrics)
    events.subscribe(RequestIdKnown, lambda e: deliveries.request_id_known(e.request_id))
    events.subscribe(Billed, lambda _: balance.soon())
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
        events=events,
        intake=intake,
        budgets=storage.budgets,
        retry=replace(SEND_RETRY, base_delay=settings.send_retry_backoff.total_seconds()),
        right_of_way=right_of_way,
        links=links,
        journal=resources.journal,
        per_request=MAX_RECIPIENTS_PER_REQUEST,
    )
    outbox = _outbox(storage, pipeline, wakeup, metrics, worker)
    verifying = _verifying(policy, resources)
    return SendingCore(admission, intake, deliveries, outbox, balance, alerts, conversations, links, oncall, verifying)


def _intake(
    settings: Settings, storage: Storage, wakeup: asyncio.Event, tasks: BackgroundTasks | None, worker: str
) -> Intake:
    """Where intents are recorded before the ack. With replicas (PostgreSQL) a person's intent is ``worker``'s (this
    process's outbox) until confirmed, in the background once the ack is sent; SQLite has one process, whose inserts
    never land after their deadline (``Database.insert_once``)."""
    spawn = tasks.spawn if tasks is not None else None
    recorder = None if storage.single_process else worker
    return Intake(storage.sends, settings.send_retry_deadline, wakeup.set, recorder=recorder, spawn=spawn)


def _outbox(storage: Storage, pipeline: Pipeline, wakeup: asyncio.Event, metrics: Metrics, worker: str) -> Outbox:
    """The outbox worker that runs the pipeline in this process."""
    return Outbox(
        sends=storage.sends, pipeline=pipeline, wakeup=wakeup, metrics=metrics, single_process=storage.single_process,
        worker_id=worker,
    )  # fmt: skip


def _verified_phones(policy: Policy, resources: Resources, tasks: BackgroundTasks | None) -> VerifiedPhones | None:
    """With ``defaults.verified_phones``: profile phones are texted once verified; their owners are told in their
    DM with the app how to verify (at most once an hour each, in the background)."""
    if not policy.defaults.verified_phones:
        return None
    store = resources.storage.verifications
    notes = SlackVerifyNotes(resources.slack)
    return VerifiedPhones(store, Reminders(store, notes, tasks.spawn) if tasks is not None else None)


def _verifying(policy: Policy, resources: Resources) -> PhoneVerifying | None:
    """The "Verify my phone" flow: D7 Verify texts the codes (none in a dry run: the button says so). The profile
    is read anew at each click (a directory without a cache): what is verified is the number there now."""
    if not policy.defaults.verified_phones:
        return None
    gateway = resources.gateway
    return PhoneVerifying(
        policy=policy,
        directory=SlackDirectory(resources.slack, ttl=0.0),
        store=resources.storage.verifications,
        codes=gateway if isinstance(gateway, D7Client) else None,
    )


def _action_links(
    settings: Settings,
    policy: Policy,
    resources: Resources,
    directory: SlackDirectory,
    conversations: SlackConversations,
    intake: Intake,
) -> ActionLinks | None:
    """Alert texts end with each phone's action link when there is a public address to serve its page at."""
    if settings.public_url is None:
        return None
    return ActionLinks(
        store=resources.storage.links,
        base=str(settings.public_url).rstrip("/"),
        alert_log=resources.storage.sends,
        sends=resources.storage.sends,
        conversations=conversations,
        show_numbers=policy.defaults.show_numbers,
        policy=policy,
        intake=intake,
        directory=directory,
    )


def _balance_watcher(policy: Policy, resources: Resources, metrics: Metrics) -> BalanceWatcher:
    return BalanceWatcher(
        resources.gateway,
        metrics,
        post=slack_poster(resources.slack),
        low=policy.defaults.low_balance,
        admin_channel=policy.defaults.admin_channel,
        settings=resources.storage.settings,
    )


def _alert_desk(
    settings: Settings,
    policy: Policy,
    resources: Resources,
    directory: SlackDirectory,
    admission: Admission,
    link_room: str = "",
) -> AlertDesk:
    return AlertDesk(
        policy=policy,
        admission=admission,
        ledger=resources.storage.alerts,
        sends=resources.storage.sends,
        alert_log=resources.storage.sends,
        directory=directory,
        reader=SlackMessageReader(directory),
        deadline=settings.send_retry_deadline,
        organisation=Organisation(resources.auth.get("team_id"), resources.auth.get("enterprise_id")),
        link_room=link_room,
    )


def _home_desk(settings: Settings, policy: Policy, resources: Resources, core: SendingCore) -> HomeDesk:
    return HomeDesk(
        policy=policy,
        admission=core.admission,
        sends=resources.storage.sends,
        reports=resources.storage.deliveries,
        directory=core.admission.directory,
        budgets=resources.storage.budgets,
        inbound=resources.storage.inbound,
        optouts=resources.storage.optouts,
        policy_file=str(settings.bot_policy),
        policy_loaded_at=utc_now(),
        balance=core.balance,
        oncall=core.oncall,
        verifications=resources.storage.verifications,
        verifying=core.verifying,
    )


def wire(settings: Settings, policy: Policy, resources: Resources) -> Relay:
    """Build every part from the opened resources. No I/O: nothing runs until the relay's background parts are
    entered."""
    slack, auth = resources.slack, resources.auth
    metrics = Metrics()
    tasks = BackgroundTasks()
    events = Bus()
    directory = SlackDirectory(slack)
    steps = SlackSteps(slack)
    right_of_way = RightOfWay()
    core = wire_sending(settings, policy, resources, directory, metrics, events, steps, right_of_way, tasks)
    home = HomeTabs(
        slack, tasks, settings=resources.storage.settings, desk=_home_desk(settings, policy, resources, core)
    )
    events.subscribe(SendChanged, lambda e: home.changed(e.user_id))
    bolt = make_bolt(settings, slack, auth)
    deps = Deps(policy, core.admission, core.intake, directory, tasks, core.deliveries, metrics, core.conversations)
    ours = replace(deps, bot_user_id=auth.get("user_id"), bot_id=auth.get("bot_id"), home=home, steps=steps)
    inbox = _inbox(policy, resources, core, home)
    oncall = core.admission.recipients.oncall
    ours = replace(ours, verifying=core.verifying)
    listening = replace(ours, alerts=core.alerts, optouts=inbox.texts.optouts, inbound=inbox.log, oncall=oncall)
    register_all(bolt, listening)
    storage = resources.storage
    health = HealthCheck(
        settings, storage.database, storage.sends, resources.gateway, core.outbox, metrics, core.balance
    )
    bolt_over_http = None if settings.socket_mode else bolt
    quick = _quick_sends(settings, auth, listening)
    web = create_web_app(
        bolt_over_http,
        health,
        metrics,
        reports=core.deliveries,
        right_of_way=None if settings.socket_mode else right_of_way,
        inbound=inbox,
        pages=action_routes(core.links) if core.links is not None else (),
        quick=None if settings.socket_mode else quick,
    )
    return Relay(
        settings=settings,
        policy=policy,
        slack=slack,
        gateway=resources.gateway,
        storage=resources.storage,
        metrics=metrics,
        tasks=tasks,
        deliveries=core.deliveries,
        outbox=core.outbox,
        balance=core.balance,
        health=health,
        bolt=bolt,
        web=web,
        bot_user_id=auth.get("user_id"),
        team_id=auth.get("team_id"),
        right_of_way=right_of_way,
        inbox=inbox,
        handoffs=_handoffs(policy, resources, core),
        quick=quick,
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


def _quick_sends(settings: Settings, auth: AsyncSlackResponse, deps: Deps) -> QuickSends:
    """Commands that send, acked without Bolt's dispatch (the same checks, the same answer)."""
    secret = settings.slack_signing_secret
    installation = ThisInstallationOnly(
        auth.get("team_id"), auth.get("enterprise_id"), bool(auth.get("is_enterprise_install"))
    )
    return QuickSends(deps, secret.get_secret_value() if secret else None, installation)


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


def _handoffs(policy: Policy, resources: Resources, core: SendingCore) -> HandoffWatcher | None:
    """On-call handoffs noticed in Slack (a DM, a user group kept equal), for schedules that ask for it."""
    if core.oncall is None:
        return None
    return HandoffWatcher(policy, core.oncall, resources.storage.handoffs, SlackHandoffNotices(resources.slack))


def _inbox(policy: Policy, resources: Resources, core: SendingCore, home: HomeTabs) -> Inbox:
    """Texts phones send back, at ``/d7/inbound/<secret>`` (the delivery reports' secret)."""
    storage = resources.storage
    texts = PhoneTexts(
        policy=policy,
        optouts=storage.optouts,
        history=storage.sends,
        sends=storage.sends,
        alert_log=storage.sends,
        intake=core.intake,
        notes=SlackPhoneNotes(resources.slack, resources.pacer),
        conversations=core.conversations,
        settings=storage.settings,
        team_id=resources.auth.get("team_id") or "",
        bot_user_id=resources.auth.get("user_id") or "",
        changed=home.changed,
    )
    return Inbox(log=storage.inbound, texts=texts, secret=resources.report_secret)
