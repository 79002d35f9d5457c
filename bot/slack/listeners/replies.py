"""**Reply…** under a phone's reply: the compose form for that number, answering in that thread. Whoever clicks sends
as themselves: the policy still decides when the form is submitted."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.models import Surface, Via
from bot.domain.phone import NumberDisplay
from bot.domain.sends import SendRecord
from bot.slack import messages
from bot.slack.compose import ComposeContext
from bot.slack.deps import Deps
from bot.slack.listeners.compose import open_compose
from bot.slack.payloads import ButtonClick

LOOK_UP_WITHIN = 1.5  # seconds for the reply, its send and who may see the number; the form opens regardless
log = logging.getLogger("bot.slack")


def register(app: AsyncApp, deps: Deps) -> None:
    async def reply(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        await open_reply(deps, body, client)

    app.action(messages.REPLY_BUTTON)(reply)


async def open_reply(deps: Deps, body: dict[str, Any], client: AsyncWebClient) -> None:
    """The form opens within the trigger's 3 s, in the thread the reply was posted in, prefilled with the number
    for whoever may see it (``_may_see_number``), with the via of the send it answers."""
    try:
        click = ButtonClick.model_validate(body)
    except ValidationError as exc:
        log.warning("malformed reply click: %s", exc.errors(include_input=False))
        return
    phone: str | None = None
    send: SendRecord | None = None
    try:
        async with asyncio.timeout(LOOK_UP_WITHIN):  # the trigger expires 3 s after the click: the form first
            record = await deps.inbound.get(click.actions[0].value) if deps.inbound is not None else None
            if record is not None and record.send_id is not None:
                send = await deps.deliveries.sends.get(record.send_id)
            if record is not None and await _may_see_number(deps, send, click.user.id):
                phone = record.phone
    except Exception as exc:  # the form opens without the number
        log.warning("could not read the reply behind a Reply… click (%s)", type(exc).__name__)
    context = ComposeContext(
        surface=Surface.MESSAGE,
        team_id=click.team.id,
        user_id=click.user.id,
        channel_id=click.channel.id,
        thread_ts=click.thread_ts,
        response_url=click.response_url,
    )
    via: Via | None = send.request.via if send is not None else None
    await open_compose(deps, client, click.trigger_id, context, via, numbers=phone or "")


async def _may_see_number(deps: Deps, send: SendRecord | None, user_id: str) -> bool:
    """Whether the form may show the phone's full number to this person: numbers are shown in full anyway, or they
    sent what it answers (they named it), or they are an admin."""
    if deps.policy.defaults.show_numbers is NumberDisplay.FULL:
        return True
    if send is not None and send.request.user_id == user_id:
        return True
    return await deps.admission.is_admin(user_id)
