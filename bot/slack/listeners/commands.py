"""``/sms`` and ``/whatsapp``: record the intent, then ack (usage and syntax errors go in the ack); the outbox sends."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.errors import InputError
from bot.domain.models import Origin, SendRequest, Via
from bot.service import Refusal, RefusalKind
from bot.slack import messages
from bot.slack.compose import ComposeContext
from bot.slack.grammar import Help, parse_command
from bot.slack.listeners import COMMANDS, Deps
from bot.slack.listeners.compose import open_compose
from bot.slack.payloads import SlashCommand

log = logging.getLogger("bot.slack")

VIA = {"/sms": Via.SMS, "/whatsapp": Via.WHATSAPP}

Handler = Callable[..., Awaitable[None]]


def register(app: AsyncApp, deps: Deps) -> None:
    for command in COMMANDS:
        app.command(command)(make_handler(deps, VIA[command]))


def make_handler(deps: Deps, via: Via) -> Handler:
    async def handle_command(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        started = time.perf_counter()
        try:
            command = SlashCommand.model_validate(body)
        except ValidationError as exc:
            log.warning("malformed slash command payload: %s", exc.errors(include_input=False))
            await ack(text="Not sent: Slack sent an incomplete request. Please try again.", response_type="ephemeral")
            return
        try:
            parsed = parse_command(command.text)
        except InputError as exc:
            text, blocks = messages.refusal(Refusal(RefusalKind.INVALID, (str(exc),)))
            await ack(text=text, blocks=blocks, response_type="ephemeral")
            return
        if isinstance(parsed, Help):
            if command.text.strip():  # "/sms help"
                await ack(text=messages.usage(command.command), response_type="ephemeral")
                return
            await ack()  # a bare "/sms": the compose modal
            context = ComposeContext(
                surface="command",
                team_id=command.team_id,
                user_id=command.user_id,
                channel_id=command.channel_id,
                response_url=command.response_url,
            )
            deps.tasks.spawn(open_compose(deps, client, command.trigger_id, context, via), "open-compose")
            return
        request = SendRequest(
            via=via,
            origin=Origin(
                surface="command",
                team_id=command.team_id,
                user_id=command.user_id,
                channel_id=command.channel_id,
                response_url=command.response_url,
            ),
            recipients=parsed.recipients,
            text=parsed.text,
            idempotency_key=f"trigger:{command.trigger_id}",
        )
        try:
            record = await deps.service.record(request)  # the intent is durable before Slack hears back
        except Exception:
            log.exception("could not record a %s command", command.command)
            await ack(text=messages.cannot_record(), response_type="ephemeral")
            return
        await ack()
        deps.metrics.acks.labels("command").observe(time.perf_counter() - started)
        if record is not None:
            deps.wake_outbox()

    return handle_command
