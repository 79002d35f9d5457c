"""The compose modal: opened by a bare ``/sms``/``/whatsapp`` and both shortcuts, refreshed as the user types,
validated on submit with errors on the field at fault, then sent through the same durable pipeline.

Slack's windows shape it. A trigger_id is good for 3 s, so a form that needs look-ups (mentioned people's names,
the policy's user groups) opens at once with "Loading…" and is replaced by the form when they answer. A submission
is answered within 3 s, so its look-ups get a budget: past it, the form closes and the intent is recorded as it is;
the outbox checks it again anyway and tells the sender privately, in the same words, what it refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, tzinfo
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain import keys
from bot.domain.clock import utc_now
from bot.domain.errors import InputError, InvalidPhoneNumber, ServiceUnavailable
from bot.domain.models import RecipientRef, RefKind, SendRequest, Surface, Via
from bot.domain.phone import PhoneNumber, parse_phone
from bot.domain.policy import Dimension
from bot.domain.sends import SendRecord
from bot.domain.templates import Template, TemplateUse, window_closed
from bot.sending.admission import Naming
from bot.sending.problems import Part, Problem, Problems
from bot.sending.recipients import look_up_each
from bot.slack import compose, messages
from bot.slack.compose import ComposeContext, ComposeForm, ComposeValues, SenderOption, TemplateOption
from bot.slack.deps import Deps
from bot.slack.flatten import flatten, mentioned_users
from bot.slack.markup import escape
from bot.slack.payloads import BlockActions, ButtonClick, MessageShortcut, ViewSubmission

log = logging.getLogger("bot.slack")

# While "Loading…" shows: the look-ups' time before the form says why it cannot be shown (names that did not come
# back by then stay as user IDs in the text).
OPEN_LOOKUPS_WITHIN = 5.0
# A submission is answered by then (Slack gives up at 3 s); its look-ups get what the database's own deadline
# (``Intake.within``) leaves of it, and never more than SUBMIT_LOOKUPS_AT_MOST.
ANSWER_WITHIN = 2.5  # leaves half a second of Slack's 3 for the way there and back
SUBMIT_LOOKUPS_AT_MOST = 1.5

_Modal = TypeVar("_Modal", ViewSubmission, BlockActions)


async def build_view(
    deps: Deps,
    context: ComposeContext,
    via: Via | None,
    *,
    prefill: str = "",
    typed: str | None = None,
    recipients: int = 0,
    groups: frozenset[str] | None = None,
    template: str | None = None,
    params: Sequence[str] = (),
    numbers: str = "",
    typed_numbers: Sequence[str] = (),
) -> dict[str, Any]:
    """The modal for this user here, or the reason they may not send.

    ``prefill`` becomes the message's initial value (only when opening: on updates Slack keeps what was typed);
    the preview describes ``typed`` when given, else what of the prefill fits in the field. ``groups``: the user's
    policy user groups, when already looked up.
    """
    policy = deps.policy
    if groups is None:
        groups = await deps.admission.user_groups(context.user_id, context.channel_id)
    label = messages.channel_label(context.channel_id)
    offer = deps.admission.offer(context.user_id, context.channel_id, groups, label)
    if not offer.senders:
        return compose.nothing_allowed_view(context, offer.why_none)
    names = offer.senders
    senders = [SenderOption(n, policy.senders[n].via, policy.senders[n].originator) for n in names]
    vias = [v for v in Via if any(s.via is v for s in senders)]
    chosen = via if via in vias else vias[0]
    in_field = compose.fit_to_field(prefill)[0]
    templates = _template_options(deps, offer.templates, names)
    template = template if chosen is Via.WHATSAPP and template in templates else None
    if template is not None:
        preview = messages.template_preview(policy_template(deps, templates[template]), template, params, recipients)
    else:
        preview = messages.text_size(
            in_field if typed is None else typed, chosen, recipients, messages.SizeLine.PREVIEW
        )
        if chosen is Via.WHATSAPP and typed_numbers:
            preview += await _closed_windows(deps, typed_numbers)
    form = ComposeForm(
        context=context,
        senders=senders,
        via=chosen,
        contacts={name: len(members) for name, members in policy.contacts.items()},
        text=in_field,
        preview=preview,
        templates=templates,
        template=template,
        numbers=numbers,
    )
    return compose.compose_view(form)


def _template_options(deps: Deps, allowed: Mapping[str, str], senders: Sequence[str]) -> dict[str, TemplateOption]:
    """The templates this user may send here, each with the allowed senders that have it."""
    options = {}
    for alias in allowed:
        having = tuple(s for s in senders if alias in deps.policy.senders[s].templates)
        template = deps.policy.senders[having[0]].templates[alias]
        params = tuple((p.name, p.description) for p in template.params)
        options[alias] = TemplateOption(alias, having, params, template.text)
    return options


async def _sent(deps: Deps, send_id: str) -> SendRecord | None:
    """The send a button is about; None when it cannot be read (the form opens without what it would tell)."""
    try:
        return await deps.deliveries.sends.get(send_id)
    except Exception as exc:
        log.warning("could not read send_id=%s (%s)", send_id, type(exc).__name__)
        return None


def _thread_of(record: SendRecord | None) -> str | None:
    """The thread a send's story is told in; None when it has none: the form then answers in the channel."""
    return (record.placement.thread_ts or record.request.origin.thread_ts) if record is not None else None


async def _not_reached(deps: Deps, record: SendRecord | None, user_id: str) -> list[str]:
    """The numbers a send's free WhatsApp text did not reach for a closed window, to prefill the template form:
    only for its sender (or an admin), and only the numbers they typed themselves (a profile's phone or a contact
    group's numbers are shown to them masked). Empty when the send or its statuses cannot be read."""
    if record is None:
        return []
    send_id = record.id
    try:
        if record.request.user_id != user_id and not await deps.admission.is_admin(user_id):
            return []
        statuses = await deps.deliveries.reports.statuses(send_id)
    except Exception as exc:  # the form opens without them
        log.warning("could not read who send_id=%s did not reach (%s)", send_id, type(exc).__name__)
        return []
    typed = set()
    for ref in record.request.recipients:
        if ref.kind is RefKind.NUMBER:
            with contextlib.suppress(InvalidPhoneNumber):
                typed.add(parse_phone(ref.value, deps.policy.defaults.region).e164)
    return [s.recipient for s in statuses if window_closed(s.reason) and s.recipient in typed]


async def _closed_windows(deps: Deps, typed: Sequence[str]) -> str:
    """A warning for numbers free WhatsApp text will not reach: it failed for them in the last 24 hours because
    the window was closed (nothing delivered since). Empty when none, or when the log cannot say."""
    numbers: list[PhoneNumber] = []
    for raw in typed[:50]:
        with contextlib.suppress(InvalidPhoneNumber):
            numbers.append(parse_phone(raw, deps.policy.defaults.region))
    try:
        closed = await deps.deliveries.window_closed([n.e164 for n in numbers], utc_now())
    except Exception as exc:  # only a warning: the form goes on without it
        log.warning("could not look up closed WhatsApp windows (%s)", type(exc).__name__)
        return ""
    shown = [n.display(deps.policy.defaults.show_numbers) for n in numbers if n.e164 in closed]
    return f"\n{messages.window_closed_warning(shown)}" if shown else ""


def policy_template(deps: Deps, option: TemplateOption) -> Template:
    return deps.policy.senders[option.senders[0]].templates[option.alias]


async def open_compose(
    deps: Deps,
    client: AsyncWebClient,
    trigger_id: str,
    context: ComposeContext,
    via: Via | None,
    message: Mapping[str, Any] | None = None,
    *,
    template: str | None = None,
    numbers: str = "",
) -> None:
    """Open the form within the trigger's 3 s; ``message``: the one "Text this message" prefills it with;
    ``template`` and ``numbers``: a WhatsApp template send to these numbers (offered after a closed window).

    A form that needs no look-up opens as it is. Otherwise the look-ups start, "Loading…" opens at once beside
    them, and the form (or, if Slack did not answer them, why it cannot be shown) replaces it.
    """
    context = replace(context, opened_at=int(time.time()))
    mentioned = sorted(mentioned_users(message)) if message is not None else []
    if not mentioned and not deps.admission.asks_slack(context.user_id, context.channel_id):
        await _views_open(
            client, trigger_id, await _prepared(deps, context, via, message, mentioned, template, numbers)
        )
        return
    preparing = asyncio.create_task(
        _prepared(deps, context, via, message, mentioned, template, numbers), name="prepare-compose"
    )
    try:
        opened = await _views_open(client, trigger_id, compose.loading_view())
    except BaseException:
        preparing.cancel()
        raise
    if opened is None:
        preparing.cancel()
        return
    await _views_update(client, opened, await preparing)


async def _views_open(client: AsyncWebClient, trigger_id: str, view: dict[str, Any]) -> dict[str, Any] | None:
    """The opened view (its id and hash); None, logged, when Slack refused it (an expired trigger: nobody to tell)."""
    try:
        response = await client.views_open(trigger_id=trigger_id, view=view)
    except SlackApiError as exc:
        log.warning("the compose form did not open: %s", exc.response.get("error"))
        return None
    opened: dict[str, Any] = response["view"]
    return opened


async def _views_update(client: AsyncWebClient, opened: dict[str, Any], view: dict[str, Any]) -> None:
    """Replace the loading view; if Slack refuses the form itself, say so there rather than leave "Loading…"."""
    try:
        await client.views_update(view_id=opened["id"], hash=opened.get("hash"), view=view)
        return
    except SlackApiError as exc:
        error = exc.response.get("error")
        if error == "not_found":  # closed while loading: nothing left to show
            log.info("the compose form was closed before it was ready")
            return
        log.warning("the compose form could not replace its loading view: %s", error)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:  # no answer: once more, with the notice
        log.warning("the compose form could not replace its loading view: %s", type(exc).__name__)
    try:
        await client.views_update(view_id=opened["id"], view=compose.notice_view(messages.form_went_wrong()))
    except (SlackApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("the compose form's loading view could not be replaced at all (%s)", type(exc).__name__)


async def _prepared(
    deps: Deps,
    context: ComposeContext,
    via: Via | None,
    message: Mapping[str, Any] | None,
    mentioned: Sequence[str],
    template: str | None = None,
    numbers: str = "",
) -> dict[str, Any]:
    """The form, its look-ups made at once and within OPEN_LOOKUPS_WITHIN; or the notice that says why not."""
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OPEN_LOOKUPS_WITHIN
        names: dict[str, str] = {}
        naming = asyncio.create_task(_fill_names(deps, mentioned, names)) if mentioned else None
        try:
            async with asyncio.timeout_at(deadline):
                groups = await deps.admission.user_groups(context.user_id, context.channel_id)
            if naming is not None:
                await asyncio.wait({naming}, timeout=max(0.0, deadline - loop.time()))
                if not naming.done():  # the names still missing stay as user IDs
                    log.warning("%d mentioned people's names not looked up in time", len(mentioned) - len(names))
        finally:
            if naming is not None:
                naming.cancel()
        if message is not None:
            text, cut_from = compose.fit_to_field(flatten(message, names))
            context = replace(context, cut_from=cut_from)
        else:
            text = ""
        count = len(compose.split_numbers(numbers))
        return await build_view(
            deps, context, via, prefill=text, groups=groups, template=template, numbers=numbers, recipients=count
        )
    except ServiceUnavailable as exc:
        log.warning("compose form not prepared: %s", exc)
        return compose.notice_view(messages.cannot_show_form(escape(str(exc))))
    except TimeoutError:
        log.warning("compose form not prepared: Slack's look-ups took over %.0fs", OPEN_LOOKUPS_WITHIN)
        return compose.notice_view(messages.cannot_show_form(messages.slack_too_slow()))
    except Exception:
        log.exception("compose form not prepared")
        return compose.notice_view(messages.form_went_wrong())


async def _fill_names(deps: Deps, user_ids: Sequence[str], names: dict[str, str]) -> None:
    """Names of mentioned people into ``names`` as they come (a look-up that fails leaves that one out)."""

    async def name(user_id: str) -> None:
        names[user_id] = (await deps.directory.person(user_id)).name

    answers = await look_up_each(user_ids, name)
    failed = [a for a in answers if isinstance(a, Exception) and not isinstance(a, InputError)]
    if failed:
        log.warning("%d mentioned people's names not looked up: %s", len(failed), failed[0])


def _recipient_count(deps: Deps, values: ComposeValues) -> int:
    contacts = deps.policy.contacts
    return len(values.numbers) + len(values.people) + sum(len(contacts.get(c, [])) for c in values.contacts)


def register(app: AsyncApp, deps: Deps) -> None:
    async def refresh(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Typing or choosing: rebuild the preview (and, on a via change, the senders) without losing input."""
        await ack()  # a block action's ack carries no answer: a broken one is only logged
        await _refresh(deps, body, client)

    async def template_instead(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        await _template_instead(deps, body, client)

    async def submit(ack: AsyncAck, body: dict[str, Any]) -> None:
        await _submit(deps, ack, body)

    for action in compose.INPUT_ACTIONS:
        app.action(action)(refresh)
    app.action(messages.TEMPLATE_INSTEAD)(template_instead)
    app.view(compose.CALLBACK_ID)(submit)


async def _refresh(deps: Deps, body: dict[str, Any], client: AsyncWebClient) -> None:
    modal = _read_modal(BlockActions, body)
    if modal is None:
        return
    action, context = modal
    view = action.view
    values = compose.read_values(view.state.values)
    # No prefill: Slack keeps what was typed in blocks whose ids did not change.
    fresh = await build_view(
        deps,
        context,
        values.via,
        typed=values.text,
        recipients=_recipient_count(deps, values),
        template=values.template,
        params=values.params,
        typed_numbers=values.numbers,
    )
    try:
        await client.views_update(view_id=view.id, hash=view.hash, view=fresh)
    except SlackApiError as exc:
        if exc.response.get("error") != "hash_conflict":  # a newer update is already on its way: fine
            raise


async def _template_instead(deps: Deps, body: dict[str, Any], client: AsyncWebClient) -> None:
    """ "Send a template…" under a closed-window failure: the form for a WhatsApp template send to those not
    reached, answering in the same thread (whoever clicks sends as themselves, under the policy)."""
    try:
        click = ButtonClick.model_validate(body)
        offer = json.loads(click.actions[0].value)
        send_id, template = str(offer["id"]), str(offer["t"])
    except (ValidationError, ValueError, KeyError, TypeError) as exc:
        log.warning("malformed template_instead click: %s", type(exc).__name__)
        return
    record = await _sent(deps, send_id)
    numbers = await _not_reached(deps, record, click.user.id)
    # Answered where the send's story is: its channel and thread, wherever the button was (its thread, an ephemeral
    # message, which has no thread, or the app's DM, whose channel no rule names); as clicked when it is unknown.
    channel, thread = click.channel.id, click.thread_ts
    if record is not None and record.request.origin.channel_id:
        channel, thread = record.request.origin.channel_id, _thread_of(record)
    context = ComposeContext(
        surface=Surface.MESSAGE,
        team_id=click.team.id,
        user_id=click.user.id,
        channel_id=channel,
        thread_ts=thread,
        response_url=click.response_url,
    )
    await open_compose(
        deps, client, click.trigger_id, context, Via.WHATSAPP, template=template, numbers=", ".join(numbers)
    )


async def _submit(deps: Deps, ack: AsyncAck, body: dict[str, Any]) -> None:
    """The form sent: its problems on their fields (the form stays open, nothing is recorded), or the request
    recorded before the form closes."""
    started = time.perf_counter()
    modal = _read_modal(ViewSubmission, body)
    if modal is None:
        await ack(response_action="errors", errors={compose.MESSAGE: messages.form_broken()})
        return
    submission, context = modal
    view = submission.view
    values = compose.read_values(view.state.values)
    # Only a form that did not know its conversation has the picker, and so a response_url for the pick.
    picked = None if context.channel_id else submission.response_url(compose.CONVERSATION, values.conversation)
    try:
        errors, request = await _check(deps, context, values, view.id, picked, _lookups_budget(deps))
    except ServiceUnavailable as exc:  # Slack answered that it failed: the form stays open, nothing recorded
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
        await ack(response_action="errors", errors={compose.MESSAGE: messages.form_cannot_record()})
        return
    await ack()
    deps.metrics.acks.labels("modal").observe(time.perf_counter() - started)


def _lookups_budget(deps: Deps) -> float:
    """Seconds a submission's look-ups get: what the database's deadline leaves of the answer's, at most 1.5 s."""
    return max(0.2, min(SUBMIT_LOOKUPS_AT_MOST, ANSWER_WITHIN - deps.intake.within))


def _read_modal(kind: type[_Modal], body: dict[str, Any]) -> tuple[_Modal, ComposeContext] | None:
    """The compose modal's payload and where it was opened; None (logged, no user text) when either is unusable."""
    try:
        payload = kind.model_validate(body)
    except ValidationError as exc:
        log.warning("malformed %s payload: %s", kind.__name__, exc.errors(include_input=False))
        return None
    try:
        return payload, ComposeContext.from_metadata(payload.view.private_metadata)
    except (ValueError, TypeError):
        log.warning("compose %s with unreadable private_metadata", "submission" if kind is ViewSubmission else "action")
        return None


async def _check(
    deps: Deps,
    context: ComposeContext,
    values: ComposeValues,
    view_id: str,
    response_url: str | None,
    within: float,
) -> tuple[dict[str, str], SendRequest | None]:
    """Every problem, keyed by the block at fault (in the words the outbox uses); or the request to record.

    The form's own fields first (the conversation, the sender, the time), then ``Admission.check`` of the request
    within ``within`` seconds, the user's time zone asked beside it. When Slack has not answered by then, the form
    is answered with the problems found without look-ups, or, if there are none, by recording the request as it
    is. The outbox checks every request again before sending, and tells the sender privately what it refuses (the
    look-ups meanwhile go on, and their answers are cached for it).
    """
    via = values.via or Via.SMS
    channel = context.channel_id or values.conversation
    errors = _form_errors(values, via, channel)
    if channel is None:
        return errors, None
    request = _request(context, values, channel, response_url, view_id)
    naming = Naming(messages.form_channel_label(), messages.form_user_label())
    # A form opened in a conversation was opened by one of its members; a picked one is looked up.
    member = True if context.channel_id else None
    checked, zone = await asyncio.gather(
        deps.admission.check(request, within=within, naming=naming, member=member),
        _user_zone(deps, context.user_id, values.when, within),
    )
    if isinstance(checked, Problems):
        for block, problem in _field_errors(checked, context, via, values.template).items():
            errors.setdefault(block, problem)
        if errors or checked.in_time:
            return errors, None
        log.warning("compose submission recorded unchecked: Slack's look-ups took over %.1fs", within)
    elif errors:
        return errors, None
    if request.schedule_time is not None:  # the instant the user picked; the zone only says how it is written
        request = replace(request, schedule_time=request.schedule_time.astimezone(zone))
    return {}, request


def _request(
    context: ComposeContext,
    values: ComposeValues,
    channel: str,
    response_url: str | None,
    view_id: str,
) -> SendRequest:
    """The request the form describes; a time to send it in UTC (the user's zone is asked beside the check)."""
    text, template = values.text.strip(), None
    if values.template is not None:
        template = TemplateUse(values.template, tuple(v.strip() for v in values.params))
        text = " | ".join((f"template:{template.alias}", *template.values))  # the outbox fills it in
    refs = (
        [RecipientRef(RefKind.NUMBER, n) for n in values.numbers]
        + [RecipientRef(RefKind.USER, u) for u in values.people]
        + [RecipientRef(RefKind.CONTACTS, c) for c in values.contacts]
    )
    return SendRequest(
        via=values.via or Via.SMS,
        origin=context.submitted_in(channel, response_url),
        recipients=tuple(refs),
        text=text,
        template=template,
        idempotency_key=keys.form(view_id),
        sender=values.sender,
        schedule_time=None if values.when is None else datetime.fromtimestamp(values.when, UTC),
    )


def _form_errors(values: ComposeValues, via: Via, channel: str | None) -> dict[str, str]:
    """What only the form asks: a conversation and a sender picked, and a time to send that has not passed (or
    is about to)."""
    errors: dict[str, str] = {}
    if not channel:
        errors[compose.CONVERSATION] = messages.form_pick_conversation()
    if not values.sender:
        errors[compose.sender_block(via, values.template)] = messages.form_pick_sender()
    if values.when is not None and values.when <= time.time() + 60:
        errors[compose.WHEN] = messages.form_time_in_the_past()
    return errors


_BLOCK_OF = {RefKind.NUMBER: compose.NUMBERS, RefKind.USER: compose.PEOPLE, RefKind.CONTACTS: compose.CONTACTS}


def _field_errors(problems: Problems, context: ComposeContext, via: Via, template: str | None) -> dict[str, str]:
    """Each problem on the block of the field at fault (the first one a field gets is shown), in the form's own
    words where it has them; a recipient field's unusable entries together."""
    unusable: dict[RefKind, list[InputError]] = {}
    for problem in problems.found:
        if problem.part is Part.RECIPIENT and problem.ref is not None and problem.error is not None:
            unusable.setdefault(problem.ref.kind, []).append(problem.error)
    errors: dict[str, str] = {}
    for problem in problems.found:
        if problem.part is Part.RECIPIENT and problem.ref is not None and problem.ref.kind in unusable:
            kind = problem.ref.kind
            errors.setdefault(
                _BLOCK_OF.get(kind, compose.PEOPLE), messages.form_recipient_problems(kind, unusable[kind])
            )
        else:
            errors.setdefault(*_on_field(problem, context, via, template))
    return errors


def _on_field(problem: Problem, context: ComposeContext, via: Via, template: str | None) -> tuple[str, str]:
    """The block ``problem`` is shown on, and its words there."""
    if problem.part is Part.TEXT and problem.error is not None:
        return compose.MESSAGE, messages.form_text_problem(problem.error)
    if problem.part is Part.PARAMETER and template is not None and problem.index is not None:
        return compose.param_block(template, problem.index), problem.text
    if problem.part is Part.TEMPLATE:
        return compose.KIND, problem.text
    if problem.part is Part.RECIPIENTS:
        return compose.NUMBERS, messages.form_no_recipients()
    if problem.part is Part.CHANNEL:
        return compose.CONVERSATION, messages.form_not_a_member()
    return _blame(problem, context, via, template), problem.text


def _blame(problem: Problem, context: ComposeContext, via: Via, template: str | None) -> str:
    """The block of the field that made the policy say no."""
    if problem.dimension is Dimension.CHANNEL and context.channel_id is None:
        return compose.CONVERSATION
    if problem.dimension is Dimension.RECIPIENT and problem.ref is not None:
        return _BLOCK_OF.get(problem.ref.kind, compose.NUMBERS)
    if problem.dimension is Dimension.COUNT:
        return compose.NUMBERS
    if problem.dimension is Dimension.TEMPLATE:
        return compose.KIND
    return compose.sender_block(via, template)


async def _user_zone(deps: Deps, user_id: str, when: int | None, within: float) -> tzinfo:
    """The user's time zone from their profile, for a time they picked; UTC when none was picked, or when Slack
    cannot say within ``within`` seconds (the instant stays the same)."""
    if when is None:
        return UTC
    try:
        async with asyncio.timeout(within):
            tz = (await deps.directory.person(user_id)).tz
        return ZoneInfo(tz) if tz else UTC
    except (InputError, ServiceUnavailable, ZoneInfoNotFoundError, ValueError, TimeoutError):
        return UTC


async def forward_message(deps: Deps, client: AsyncWebClient, shortcut: MessageShortcut) -> None:
    """ "Text this message": the modal prefilled with the message as plain text; the result goes in its thread."""
    context = ComposeContext(
        surface=Surface.MESSAGE,
        team_id=shortcut.team.id,
        user_id=shortcut.user.id,
        channel_id=shortcut.channel.id,
        thread_ts=shortcut.thread_ts,
        response_url=shortcut.response_url,
    )
    await open_compose(deps, client, shortcut.trigger_id, context, None, shortcut.message)
