"""The compose modal: opened by a bare ``/sms``/``/whatsapp`` and both shortcuts, refreshed as the user types,
validated on submit with errors on the field at fault, then sent through the same durable pipeline."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.errors import InputError, ServiceUnavailable
from bot.domain.models import RecipientRef, RefKind, SendRequest, Surface, Via
from bot.domain.policy import Dimension, SendRequestFacts, allowed_senders, why_nothing_allowed
from bot.sending.admission import Resolution
from bot.slack import compose, messages
from bot.slack.compose import ComposeContext, ComposeForm, ComposeValues, SenderOption
from bot.slack.flatten import flatten, mentioned_users
from bot.slack.listeners import Deps
from bot.slack.payloads import BlockActions, MessageShortcut, ModalView, ViewSubmission

log = logging.getLogger("bot.slack")


async def build_view(
    deps: Deps,
    context: ComposeContext,
    via: Via | None,
    *,
    prefill: str = "",
    typed: str | None = None,
    recipients: int = 0,
) -> dict[str, Any]:
    """The modal for this user here, or the reason they may not send.

    ``prefill`` becomes the message's initial value (only when opening: on updates Slack keeps what was typed);
    the preview describes ``typed`` when given, else the prefill.
    """
    policy = deps.policy
    groups = await deps.admission.user_groups(context.user_id, context.channel_id)
    names = allowed_senders(policy, context.user_id, context.channel_id, groups)
    if not names:
        label = messages.channel_label(context.channel_id)
        return compose.nothing_allowed_view(context, why_nothing_allowed(policy, context.channel_id, label))
    senders = [SenderOption(n, policy.senders[n].via, policy.senders[n].originator) for n in names]
    vias = [v for v in Via if any(s.via is v for s in senders)]
    chosen = via if via in vias else vias[0]
    form = ComposeForm(
        context=context,
        senders=senders,
        via=chosen,
        contacts={name: len(numbers) for name, numbers in policy.contacts.items()},
        text=prefill,
        preview=messages.text_size(prefill if typed is None else typed, chosen, recipients, messages.SizeLine.PREVIEW),
    )
    return compose.compose_view(form)


async def open_compose(
    deps: Deps, client: AsyncWebClient, trigger_id: str, context: ComposeContext, via: Via | None, text: str = ""
) -> None:
    view = await build_view(deps, context, via, prefill=text)
    await client.views_open(trigger_id=trigger_id, view=view)


def _recipient_count(deps: Deps, values: ComposeValues) -> int:
    contacts = deps.policy.contacts
    return len(values.numbers) + len(values.people) + sum(len(contacts.get(c, [])) for c in values.contacts)


def register(app: AsyncApp, deps: Deps) -> None:
    async def refresh(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Typing or choosing: rebuild the preview (and, on a via change, the senders) without losing input."""
        await ack()  # a block action's ack carries no answer: a broken one is only logged
        modal = _read_modal(BlockActions, body)
        if modal is None:
            return
        view, context = modal
        values = compose.read_values(view.state.values)
        # No prefill: Slack keeps what was typed in blocks whose ids did not change.
        fresh = await build_view(
            deps, context, values.via, typed=values.text, recipients=_recipient_count(deps, values)
        )
        try:
            await client.views_update(view_id=view.id, hash=view.hash, view=fresh)
        except SlackApiError as exc:
            if exc.response.get("error") != "hash_conflict":  # a newer update is already on its way: fine
                raise

    for action in compose.INPUT_ACTIONS:
        app.action(action)(refresh)

    @app.view(compose.CALLBACK_ID)
    async def submit(ack: AsyncAck, body: dict[str, Any]) -> None:
        started = time.perf_counter()
        modal = _read_modal(ViewSubmission, body)
        if modal is None:
            await ack(response_action="errors", errors={compose.MESSAGE: messages.form_broken()})
            return
        view, context = modal
        values = compose.read_values(view.state.values)
        try:
            errors, request = await _check(deps, context, values, view.id)
        except ServiceUnavailable as exc:  # a look-up failed: the form stays open, nothing recorded
            log.warning("compose submission not checked: %s", exc)
            await ack(response_action="errors", errors={compose.MESSAGE: messages.form_slack_unavailable(exc)})
            return
        if errors or request is None:
            await ack(response_action="errors", errors=errors)
            return
        try:
            await deps.intake.record(request)  # durable before the modal closes
        except Exception as exc:  # the database did not keep it in time (logged by the intake): nothing will be sent
            log.warning("could not record a compose submission (%s)", type(exc).__name__)
            await ack(
                response_action="errors",
                errors={compose.MESSAGE: messages.form_cannot_record()},
            )
            return
        await ack()
        deps.metrics.acks.labels("modal").observe(time.perf_counter() - started)


def _read_modal(
    kind: type[ViewSubmission] | type[BlockActions], body: dict[str, Any]
) -> tuple[ModalView, ComposeContext] | None:
    """The compose modal in ``body`` and where it was opened; None (logged, no user text) when either is unusable."""
    try:
        view = kind.model_validate(body).view
    except ValidationError as exc:
        log.warning("malformed %s payload: %s", kind.__name__, exc.errors(include_input=False))
        return None
    try:
        return view, ComposeContext.from_metadata(view.private_metadata)
    except (ValueError, TypeError):
        log.warning("compose %s with unreadable private_metadata", "submission" if kind is ViewSubmission else "action")
        return None


async def _check(
    deps: Deps, context: ComposeContext, values: ComposeValues, view_id: str
) -> tuple[dict[str, str], SendRequest | None]:
    """Every problem, keyed by the block at fault (in the words the pipeline uses); or the request to record."""
    via = values.via or Via.SMS
    channel = context.channel_id or values.conversation
    text = values.text.strip()
    errors = _form_errors(deps, via, channel, values.sender, text)
    refs = (
        [RecipientRef(RefKind.NUMBER, n) for n in values.numbers]
        + [RecipientRef(RefKind.USER, u) for u in values.people]
        + [RecipientRef(RefKind.CONTACTS, c) for c in values.contacts]
    )
    found = await deps.admission.resolve(refs)
    errors |= _recipient_errors(found)
    schedule, problem = await _schedule(deps, context.user_id, values.when)
    errors |= problem

    if errors or channel is None:
        return errors, None
    facts = SendRequestFacts(
        user_id=context.user_id,
        channel_id=channel,
        via=via,
        recipients=found.numbers,
        sender=values.sender,
        user_groups=await deps.admission.user_groups(context.user_id, channel, via),
        channel_label=messages.form_channel_label(),
        user_label=messages.form_user_label(),
    )
    decision = deps.admission.decide(facts)
    if not decision.allowed:
        errors[_blame(deps, decision.dimension, context, via, facts, found)] = decision.reason
        return errors, None
    request = SendRequest(
        via=via,
        origin=context.submitted_in(channel),
        recipients=tuple(refs),
        text=text,
        idempotency_key=f"view:{view_id}",
        sender=values.sender,
        schedule_time=schedule,
    )
    return {}, request


def _form_errors(deps: Deps, via: Via, channel: str | None, sender: str | None, text: str) -> dict[str, str]:
    """The conversation, sender and message fields."""
    errors: dict[str, str] = {}
    if not channel:
        errors[compose.CONVERSATION] = messages.form_pick_conversation()
    if not sender:
        errors[compose.sender_block(via)] = messages.form_pick_sender()
    try:
        deps.admission.check_text(via, text)
    except InputError as exc:
        errors[compose.MESSAGE] = messages.form_text_problem(exc)
    return errors


def _recipient_errors(found: Resolution) -> dict[str, str]:
    """The recipient fields: each one's unusable entries, or that there is nobody to text."""
    errors: dict[str, str] = {}
    for kind, block in _BLOCK_OF.items():
        problems = [p.error for p in found.problems if p.ref.kind is kind]
        if problems:
            errors[block] = messages.form_recipient_problems(kind, problems)
    if not found.numbers and not found.problems:
        errors[compose.NUMBERS] = messages.form_no_recipients()
    return errors


async def _schedule(deps: Deps, user_id: str, when: int | None) -> tuple[datetime | None, dict[str, str]]:
    """The "send later" field in the user's time zone (None: now), or why that time cannot be used."""
    if when is None:
        return None, {}
    if when <= time.time() + 60:
        return None, {compose.WHEN: messages.form_time_in_the_past()}
    return datetime.fromtimestamp(when, await _user_zone(deps, user_id)), {}


_BLOCK_OF = {RefKind.NUMBER: compose.NUMBERS, RefKind.USER: compose.PEOPLE, RefKind.CONTACTS: compose.CONTACTS}


def _blame(
    deps: Deps,
    dimension: Dimension | None,
    context: ComposeContext,
    via: Via,
    facts: SendRequestFacts,
    found: Resolution,
) -> str:
    """The block of the field that made the policy say no."""
    if dimension is Dimension.CHANNEL and context.channel_id is None:
        return compose.CONVERSATION
    if dimension is Dimension.RECIPIENT:
        for number in facts.recipients:
            alone = replace(facts, recipients=[number])
            if deps.admission.decide(alone).dimension is Dimension.RECIPIENT:
                return _BLOCK_OF[found.sources[number.e164].kind]
    if dimension is Dimension.COUNT:
        return compose.NUMBERS
    return compose.sender_block(via)


async def _user_zone(deps: Deps, user_id: str) -> ZoneInfo | Any:
    try:
        tz = (await deps.directory.person(user_id)).tz
        return ZoneInfo(tz) if tz else UTC
    except (InputError, ZoneInfoNotFoundError, ValueError):
        return UTC


async def forward_message(deps: Deps, client: AsyncWebClient, shortcut: MessageShortcut) -> None:
    """ "Text this message": the modal prefilled with the message as plain text; the result goes in its thread."""
    names: dict[str, str] = {}
    for user_id in mentioned_users(shortcut.message):
        try:
            names[user_id] = (await deps.directory.person(user_id)).name
        except InputError:
            continue
    context = ComposeContext(
        surface=Surface.MESSAGE,
        team_id=shortcut.team.id,
        user_id=shortcut.user.id,
        channel_id=shortcut.channel.id,
        thread_ts=shortcut.thread_ts,
        response_url=shortcut.response_url,
    )
    text = flatten(shortcut.message, names)
    await open_compose(deps, client, shortcut.trigger_id, context, None, text)
