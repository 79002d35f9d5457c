"""``/sms`` and ``/whatsapp``: record the intent, then ack (usage and syntax errors go in the ack); the outbox sends."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.request.internals import extract_enterprise_id, extract_team_id
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain import keys
from bot.domain.clock import utc_now
from bot.domain.errors import D7Error, D7NotFoundError, InputError, InvalidPhoneNumber, ServiceUnavailable
from bot.domain.inbound import OptOut, OptOutWay
from bot.domain.models import SendRequest, Via
from bot.domain.phone import parse_phone
from bot.domain.sends import Refusal, RefusalKind, SendRecord
from bot.slack import messages
from bot.slack.compose import ComposeContext
from bot.slack.deps import Deps
from bot.slack.grammar import Compose, Help, OnCallAsk, OptList, Status, parse_command
from bot.slack.installation import ThisInstallationOnly
from bot.slack.listeners.compose import open_compose
from bot.slack.listeners.ids import COMMANDS
from bot.slack.listeners.oncall import answer_oncall
from bot.slack.payloads import SlashCommand

log = logging.getLogger("bot.slack")

VIA = {"/sms": Via.SMS, "/whatsapp": Via.WHATSAPP}

Handler = Callable[..., Awaitable[None]]


def register(app: AsyncApp, deps: Deps) -> None:
    for command in COMMANDS:
        app.command(command)(make_handler(deps, VIA[command]))


def make_handler(deps: Deps, via: Via) -> Handler:
    async def handle_command(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        started = time.perf_counter()
        try:
            command = SlashCommand.model_validate(body)
        except ValidationError as exc:
            log.warning("malformed slash command payload: %s", exc.errors(include_input=False))
            await ack(text=messages.incomplete_request(), response_type="ephemeral")
            return
        try:
            parsed = parse_command(command.text)
        except InputError as exc:
            text, blocks = messages.refusal(Refusal(RefusalKind.INVALID, (str(exc),)))
            await ack(text=text, blocks=blocks, response_type="ephemeral")
            return
        if isinstance(parsed, OptList):
            await ack()  # an admin check may ask Slack: answered through the response_url
            opting = change_opt_out(deps, respond, command.user_id, parsed, f"{command.command} {parsed.word}")
            deps.tasks.spawn(opting, "opt-out")
            return
        if isinstance(parsed, OnCallAsk):
            await ack()  # the overrides are in the database and a rotation may be a user group: the response_url
            deps.tasks.spawn(answer_oncall(deps, respond, client, command.user_id, parsed), "oncall")
            return
        if isinstance(parsed, Status):
            await ack()  # the look-up calls D7: answered through the response_url
            asker = command.user_id
            deps.tasks.spawn(tell_status(deps, respond, command.team_id, asker, parsed.request_id), "status")
            return
        if isinstance(parsed, Help):
            if command.text.strip():  # "/sms help"
                policy = deps.admission.policy
                templates = messages.template_lines(policy, command.channel_id) if via is Via.WHATSAPP else []
                await ack(text=messages.usage(command.command, templates), response_type="ephemeral")
                return
            await ack()  # a bare "/sms": the compose modal
            context = ComposeContext.opened_from(command.origin())
            deps.tasks.spawn(open_compose(deps, client, command.trigger_id, context, via), "open-compose")
            return
        await record_send(deps, via, command, parsed, ack, started)

    return handle_command


async def record_send(
    deps: Deps, via: Via, command: SlashCommand, parsed: Compose, ack: AsyncAck, started: float
) -> None:
    """A command that sends: its intent kept, then acked (or "not recorded" in the ack). The outbox sends."""
    request = SendRequest(
        via=via,
        origin=command.origin(),
        recipients=parsed.recipients,
        text=parsed.text,
        idempotency_key=keys.command(command.trigger_id),
        template=parsed.template,
    )
    try:
        await deps.intake.record(request)  # the intent is durable before Slack hears back
    except Exception as exc:  # the database did not keep it in time (logged by the intake): nothing will be sent
        log.warning("could not record a %s command (%s)", command.command, type(exc).__name__)
        await ack(text=messages.cannot_record(), response_type="ephemeral")
        return
    await ack()
    deps.metrics.acks.labels("command").observe(time.perf_counter() - started)


class QuickSends:
    """The ack path of a command that sends, without Bolt's dispatch: the bulk of a burst, and two thirds of its
    acks' CPU was Bolt's generic work (a request object, a context and a Web API client built per request, every
    middleware and listener matcher, the listener's arguments found by inspection; cProfile, docs/performance.md).

    It takes a command only when it would reach ``record_send`` through Bolt, and answers it as Bolt would: over
    HTTP signed with our signing secret and fresh (``SignatureVerifier``, as Bolt's verification; Socket Mode's
    envelopes come over the app's own connection, as in Bolt); this installation's (``ThisInstallationOnly``); an
    ``/sms`` or ``/whatsapp`` command whose text is a send. Everything else (help, the compose form, status,
    opt-outs, on call, a bad signature, another workspace, a malformed payload, an SSL check) answers None and goes
    through Bolt, which answers it as before, refusals and their logs included.
    """

    def __init__(self, deps: Deps, signing_secret: str | None, installation: ThisInstallationOnly) -> None:
        self.deps = deps
        self.verifier = SignatureVerifier(signing_secret) if signing_secret else None
        self.installation = installation

    async def answer(self, body: bytes, timestamp: str | None, signature: str | None) -> BoltResponse | None:
        """An HTTP request's answer (its body as Slack posted it), or None: Bolt answers it."""
        started = time.perf_counter()
        if self.verifier is None or timestamp is None or signature is None:
            return None
        if not self.verifier.is_valid(body, timestamp, signature):
            return None
        text = body.decode("utf-8")
        if text.startswith("{") or "payload" in text:  # JSON or an interaction: what Bolt parses otherwise
            return None
        return await self.answer_command(dict(parse_qsl(text, keep_blank_values=True)), started)  # as Bolt parses

    async def answer_command(self, form: dict[str, Any], started: float | None = None) -> BoltResponse | None:
        """A slash command's answer (its fields: a form's, or a Socket Mode envelope's payload), or None."""
        started = time.perf_counter() if started is None else started
        via = VIA.get(form.get("command", ""))
        if via is None or "ssl_check" in form:
            return None
        if self.installation.foreign(extract_team_id(form) or None, extract_enterprise_id(form) or None):
            return None
        try:
            command = SlashCommand.model_validate(form)
            parsed = parse_command(command.text)
        except (ValidationError, InputError):
            return None
        if not isinstance(parsed, Compose):
            return None
        ack = AsyncAck()  # type: ignore[no-untyped-call]  # Bolt leaves its __init__ untyped
        await record_send(self.deps, via, command, parsed, ack, started)
        return ack.response


# /sms status: at most this many look-ups per person per minute (each may cost a D7 call).
STATUS_PER_MINUTE = 10


def _too_often(asked: dict[str, deque[float]], user_id: str) -> float:
    """0 when ``user_id`` may ask for a status now (counted in ``asked``), else the seconds until they may."""
    now = time.monotonic()
    times = asked.setdefault(user_id, deque())
    while times and now - times[0] >= 60:
        times.popleft()
    if len(times) >= STATUS_PER_MINUTE:
        return 60 - (now - times[0])
    times.append(now)
    if len(asked) > 10_000:  # forget the quiet ones
        for quiet in [u for u, t in asked.items() if not t]:
            del asked[quiet]
    return 0.0


async def may_see(deps: Deps, record: SendRecord, user_id: str) -> bool:
    """Who may see a send's status: its sender, the policy's admins, and members of the conversation it was sent
    from (they saw it there). A conversation whose members the bot cannot see admits nobody else."""
    if record.request.user_id == user_id or await deps.admission.is_admin(user_id):
        return True
    return await deps.directory.is_member(record.request.channel_id, user_id) is True


async def tell_status(deps: Deps, respond: AsyncRespond, team_id: str, user_id: str, request_id: str) -> None:
    """``/sms status <request_id>``: D7's per-recipient status of a send made in this workspace, for those who may
    see it (``may_see``); everyone else is told it was not found, as for an unknown request_id, and D7 is not
    asked."""
    wait = _too_often(deps.status_asked, user_id)
    if wait:
        await respond(text=messages.status_too_often(STATUS_PER_MINUTE, wait), response_type="ephemeral")
        return
    try:
        record = await deps.deliveries.find(team_id, request_id)
        if record is None or not await may_see(deps, record, user_id):
            await respond(text=messages.status_not_found(request_id), response_type="ephemeral")
            return
        report = await deps.deliveries.status(record, request_id)  # a send in several requests: the one asked
    except ServiceUnavailable as exc:
        await respond(text=messages.status_not_checked(request_id, exc), response_type="ephemeral")
        return
    except D7Error as exc:
        if isinstance(exc, D7NotFoundError):
            await respond(text=messages.status_not_found(request_id), response_type="ephemeral")
        else:
            await respond(text=messages.status_unavailable(request_id, exc), response_type="ephemeral")
        return
    text, blocks = messages.status_report(record, report, deps.policy.defaults.show_numbers)
    await respond(text=text, blocks=blocks, response_type="ephemeral", replace_original=False)


async def change_opt_out(deps: Deps, respond: AsyncRespond, user_id: str, asked: OptList, command: str) -> None:
    """``/sms optout <number>`` and ``/sms optin <number>``: the opt-out list, for the policy's admins only (anyone
    else is refused privately and nothing changes). Answered privately either way."""
    policy = deps.admission.policy
    try:
        if deps.optouts is None or not await deps.admission.is_admin(user_id):
            await respond(text=messages.opt_out_not_admin(command), response_type="ephemeral")
            return
        number = parse_phone(asked.number, policy.defaults.region)
        if asked.out:
            changed = await deps.optouts.opt_out(OptOut(number.e164, utc_now(), OptOutWay.ADMIN, user_id))
        else:
            changed = await deps.optouts.opt_in(number.e164)
    except InvalidPhoneNumber as exc:
        await respond(text=f"{exc}. {messages.opt_out_usage(command)}", response_type="ephemeral")
        return
    except Exception as exc:  # Slack's look-up or the database failed: nothing changed
        log.warning("could not change the opt-out list (%s)", type(exc).__name__)
        await respond(text=messages.opt_out_unavailable(exc), response_type="ephemeral")
        return
    shown = number.display(policy.defaults.show_numbers)
    log.info("opt-out list: %s %s by %s (changed=%s)", number.display(), "out" if asked.out else "in", user_id, changed)
    await respond(text=messages.opt_out_done(shown, asked.out, changed), response_type="ephemeral")
