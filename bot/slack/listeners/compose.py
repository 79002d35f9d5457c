"""The compose modal: opened by a bare ``/sms``/``/whatsapp`` and both shortcuts, refreshed as the user types,
validated on submit with errors on the field at fault, then sent through the same durable pipeline."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.errors import InputError, InvalidPhoneNumber, MessageTooLong
from bot.domain.models import Origin, RecipientRef, RefKind, SendRequest, Via
from bot.domain.phone import PhoneNumber, parse_phone
from bot.domain.policy import SendRequestFacts, allowed_senders, evaluate, why_nothing_allowed
from bot.service import check_length, phone_of
from bot.slack import compose
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
    policy = deps.service.policy
    groups = await deps.service.user_groups(context.user_id)
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
    contacts = deps.service.policy.contacts
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
            await ack(
                response_action="errors", errors={compose.MESSAGE: "This form is broken; close it and start again."}
            )
            return
        values = compose.read_values(view)
        errors, request = await _check(deps, context, values, str(view.get("id")))
        if errors or request is None:
            await ack(response_action="errors", errors=errors)
            return
        try:
            record = await deps.service.record(request)  # durable before the modal closes
        except Exception:
            log.exception("could not record a compose submission")
            await ack(
                response_action="errors",
                errors={
                    compose.MESSAGE: "The bot could not record this (its database is not answering). Nothing was sent."
                },
            )
            return
        await ack()
        deps.metrics.acks.labels("modal").observe(time.perf_counter() - started)
        if record is not None:
            deps.wake_outbox()


async def _check(
    deps: Deps, context: ComposeContext, values: ComposeValues, view_id: str
) -> tuple[dict[str, str], SendRequest | None]:
    """Every problem, keyed by the block at fault; or the request to record."""
    policy = deps.service.policy
    region = policy.defaults.region
    errors: dict[str, str] = {}
    via = values.via or Via.SMS
    channel = context.channel_id or values.conversation
    if not channel:
        errors[compose.CONVERSATION] = "Pick the conversation where the result is posted."
    if not values.sender:
        errors[compose.sender_block(via)] = "Pick a sender."

    text = values.text.strip()
    if not text:
        errors[compose.MESSAGE] = "Write a message."
    else:
        try:
            check_length(via, text, policy.defaults.max_segments)
        except MessageTooLong as exc:
            errors[compose.MESSAGE] = (
                f"This needs {exc.segments} SMS segments ({exc.encoding}); the limit is {exc.max_segments}. Shorten it."
            )
        except InputError as exc:
            errors[compose.MESSAGE] = f"{str(exc)[:1].upper()}{str(exc)[1:]}."

    sources: dict[str, str] = {}  # E.164 → the block it came from
    bad_numbers = []
    for raw in values.numbers:
        try:
            sources.setdefault(parse_phone(raw, region).e164, compose.NUMBERS)
        except InvalidPhoneNumber as exc:
            bad_numbers.append(f"'{raw}' ({exc.reason})")
    if bad_numbers:
        errors[compose.NUMBERS] = "Not valid phone numbers: " + ", ".join(bad_numbers)
    no_phone = []
    for user_id in values.people:
        try:
            number = phone_of(await deps.service.directory.person(user_id), region)
        except InputError as exc:
            no_phone.append(str(exc))
            continue
        sources.setdefault(number.e164, compose.PEOPLE)
    if no_phone:
        errors[compose.PEOPLE] = "No usable phone: " + "; ".join(no_phone)
    for group in values.contacts:
        if group not in policy.contacts:
            errors[compose.CONTACTS] = f"The contact group '{group}' no longer exists."
            continue
        for number in policy.contact_numbers(group):
            sources.setdefault(number.e164, compose.CONTACTS)
    if not sources and not (bad_numbers or no_phone) and compose.CONTACTS not in errors:
        errors[compose.NUMBERS] = "Add at least one recipient: phone numbers, people or a contact group."

    schedule: datetime | None = None
    if values.when is not None:
        if values.when <= time.time() + 60:
            errors[compose.WHEN] = "That time is in the past. Pick a later time, or leave it empty to send now."
        else:
            schedule = datetime.fromtimestamp(values.when, await _user_zone(deps, context.user_id))

    if errors or channel is None:
        return errors, None
    numbers = [PhoneNumber(n) for n in sources]
    facts = SendRequestFacts(
        user_id=context.user_id,
        channel_id=channel,
        via=via,
        recipients=numbers,
        sender=values.sender,
        user_groups=await deps.service.user_groups(context.user_id),
        channel_label="this conversation",
        user_label="your account",
    )
    decision = evaluate(policy, facts)
    if not decision.allowed:
        errors[_blame(decision.dimension, context, via, policy, facts, sources)] = decision.reason
        return errors, None
    refs = (
        [RecipientRef(RefKind.NUMBER, n) for n in values.numbers]
        + [RecipientRef(RefKind.USER, u) for u in values.people]
        + [RecipientRef(RefKind.CONTACTS, c) for c in values.contacts]
    )
    request = SendRequest(
        via=via,
        origin=Origin(
            surface="modal",
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


def _blame(
    dimension: str | None,
    context: ComposeContext,
    via: Via,
    policy: Any,
    facts: SendRequestFacts,
    sources: dict[str, str],
) -> str:
    """The block of the field that made the policy say no."""
    if dimension == "channel" and context.channel_id is None:
        return compose.CONVERSATION
    if dimension == "recipient":
        for number in facts.recipients:
            alone = SendRequestFacts(**{**facts.__dict__, "recipients": [number]})
            if evaluate(policy, alone).dimension == "recipient":
                return sources.get(number.e164, compose.NUMBERS)
    if dimension == "count":
        return compose.NUMBERS
    return compose.sender_block(via)


async def _user_zone(deps: Deps, user_id: str) -> ZoneInfo | Any:
    try:
        tz = (await deps.service.directory.person(user_id)).tz
        return ZoneInfo(tz) if tz else UTC
    except (InputError, ZoneInfoNotFoundError, ValueError):
        return UTC


async def forward_message(deps: Deps, client: AsyncWebClient, body: dict[str, Any]) -> None:
    """ "Text this message": the modal prefilled with the message as plain text; the result goes in its thread."""
    message = body.get("message") or {}
    names: dict[str, str] = {}
    for user_id in mentioned_users(message):
        try:
            names[user_id] = (await deps.service.directory.person(user_id)).name
        except InputError:
            continue
    context = ComposeContext(
        surface="message",
        team_id=(body.get("team") or {}).get("id", ""),
        user_id=(body.get("user") or {}).get("id", ""),
        channel_id=(body.get("channel") or {}).get("id"),
        thread_ts=message.get("thread_ts") or message.get("ts"),
        response_url=body.get("response_url"),
    )
    await open_compose(deps, client, body["trigger_id"], context, None, flatten(message, names))
