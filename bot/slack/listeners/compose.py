"""The compose modal: opened by a bare ``/sms``/``/whatsapp`` and both shortcuts, refreshed as the user types,
validated on submit with errors on the field at fault, then sent through the same durable pipeline."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.errors import InputError
from bot.domain.models import Origin, RecipientRef, RefKind, SendRequest, Surface, Via
from bot.domain.policy import Dimension, SendRequestFacts, allowed_senders, why_nothing_allowed
from bot.sending.admission import Resolution
from bot.slack import compose, messages
from bot.slack.compose import ComposeContext, ComposeForm, ComposeValues, SenderOption
from bot.slack.flatten import flatten, mentioned_users
from bot.slack.listeners import Deps

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
    groups = await deps.admission.user_groups(context.user_id)
    names = allowed_senders(policy, context.user_id, context.channel_id, groups)
    if not names:
        label = f"<#{context.channel_id}>" if context.channel_id else ""
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
        preview=compose.preview_text(prefill if typed is None else typed, chosen, recipients),
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
        await ack()
        view = body.get("view") or {}
        try:
            context = ComposeContext.from_metadata(view.get("private_metadata") or "")
        except (ValueError, TypeError):
            log.warning("compose action with unreadable private_metadata")
            return
        values = compose.read_values(view)
        # No prefill: Slack keeps what was typed in blocks whose ids did not change.
        fresh = await build_view(
            deps, context, values.via, typed=values.text, recipients=_recipient_count(deps, values)
        )
        try:
            await client.views_update(view_id=view.get("id"), hash=view.get("hash"), view=fresh)
        except SlackApiError as exc:
            if exc.response.get("error") != "hash_conflict":  # a newer update is already on its way: fine
                raise

    for action in compose.INPUT_ACTIONS:
        app.action(action)(refresh)

    @app.view(compose.CALLBACK_ID)
    async def submit(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            context = ComposeContext.from_metadata(view.get("private_metadata") or "")
        except (ValueError, TypeError):
            await ack(response_action="errors", errors={compose.MESSAGE: messages.form_broken()})
            return
        values = compose.read_values(view)
        errors, request = await _check(deps, context, values, str(view.get("id")))
        if errors or request is None:
            await ack(response_action="errors", errors=errors)
            return
        try:
            await deps.intake.record(request)  # durable before the modal closes
        except Exception:
            log.exception("could not record a compose submission")
            await ack(
                response_action="errors",
                errors={compose.MESSAGE: messages.form_cannot_record()},
            )
            return
        await ack()
        deps.metrics.acks.labels("modal").observe(time.perf_counter() - started)


async def _check(
    deps: Deps, context: ComposeContext, values: ComposeValues, view_id: str
) -> tuple[dict[str, str], SendRequest | None]:
    """Every problem, keyed by the block at fault (in the words the pipeline uses); or the request to record."""
    errors: dict[str, str] = {}
    via = values.via or Via.SMS
    channel = context.channel_id or values.conversation
    if not channel:
        errors[compose.CONVERSATION] = messages.form_pick_conversation()
    if not values.sender:
        errors[compose.sender_block(via)] = messages.form_pick_sender()
    text = values.text.strip()
    try:
        deps.admission.check_text(via, text)
    except InputError as exc:
        errors[compose.MESSAGE] = messages.form_text_problem(exc)

    refs = (
        [RecipientRef(RefKind.NUMBER, n) for n in values.numbers]
        + [RecipientRef(RefKind.USER, u) for u in values.people]
        + [RecipientRef(RefKind.CONTACTS, c) for c in values.contacts]
    )
    found = await deps.admission.resolve(refs)
    for kind, block in _BLOCK_OF.items():
        problems = [p.error for p in found.problems if p.ref.kind is kind]
        if problems:
            errors[block] = messages.form_recipient_problems(kind, problems)
    if not found.numbers and not found.problems:
        errors[compose.NUMBERS] = messages.form_no_recipients()

    schedule: datetime | None = None
    if values.when is not None:
        if values.when <= time.time() + 60:
            errors[compose.WHEN] = messages.form_time_in_the_past()
        else:
            schedule = datetime.fromtimestamp(values.when, await _user_zone(deps, context.user_id))

    if errors or channel is None:
        return errors, None
    facts = SendRequestFacts(
        user_id=context.user_id,
        channel_id=channel,
        via=via,
        recipients=found.numbers,
        sender=values.sender,
        user_groups=await deps.admission.user_groups(context.user_id),
        channel_label="this conversation",
        user_label="your account",
    )
    decision = deps.admission.decide(facts)
    if not decision.allowed:
        errors[_blame(deps, decision.dimension, context, via, facts, found)] = decision.reason
        return errors, None
    request = SendRequest(
        via=via,
        origin=Origin(
            surface=Surface.MODAL,
            team_id=context.team_id,
            user_id=context.user_id,
            channel_id=channel,
            response_url=context.response_url,
            thread_ts=context.thread_ts,
        ),
        recipients=tuple(refs),
        text=text,
        idempotency_key=f"view:{view_id}",
        sender=values.sender,
        schedule_time=schedule,
    )
    return {}, request


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


async def forward_message(deps: Deps, client: AsyncWebClient, body: dict[str, Any]) -> None:
    """ "Text this message": the modal prefilled with the message as plain text; the result goes in its thread."""
    message = body.get("message") or {}
    names: dict[str, str] = {}
    for user_id in mentioned_users(message):
        try:
            names[user_id] = (await deps.directory.person(user_id)).name
        except InputError:
            continue
    context = ComposeContext(
        surface=Surface.MESSAGE,
        team_id=(body.get("team") or {}).get("id", ""),
        user_id=(body.get("user") or {}).get("id", ""),
        channel_id=(body.get("channel") or {}).get("id"),
        thread_ts=message.get("thread_ts") or message.get("ts"),
        response_url=body.get("response_url"),
    )
    await open_compose(deps, client, body["trigger_id"], context, None, flatten(message, names))
