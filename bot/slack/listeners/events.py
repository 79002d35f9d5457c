"""Message events from the channels the app is in: alerts for the policy's ``alerts`` rules.

A matching post is recorded as an intent before Slack gets its answer (so a crash cannot lose it, and Slack's
retries find it recorded); the outbox does the rest. Messages that are not alerts — people talking, edits,
deletions, the bot's own results — are acknowledged quietly: answering 404 would make Slack retry them and, in
time, disable the app. If the intent cannot be recorded, the answer is an error so that Slack retries.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncApp

from bot.domain.sends import SendRecord
from bot.slack.alerts import alert_request
from bot.slack.deps import Deps
from bot.slack.payloads import MessageEvent, MessageEventCallback, ReactionCallback

log = logging.getLogger("bot.slack.events")

# Seconds an acknowledgement (✅, or a reply) may take to be recorded before the event is answered: Slack gives 3.
ACK_WITHIN = 2.0


def register(app: AsyncApp, deps: Deps) -> None:
    own_ids = frozenset(i for i in (deps.bot_user_id, deps.bot_id) if i)

    @app.event("message")
    async def on_message(body: dict[str, Any]) -> None:
        try:
            callback = MessageEventCallback.model_validate(body)
        except ValidationError as exc:
            # Not an alert this app can read: acknowledged quietly like the others (an error would make Slack retry).
            log.warning("malformed message event: %s", exc.errors(include_input=False))
            return
        found = alert_request(callback.event, callback.team_id, deps.policy, own_ids)
        if found is None:
            await _reply_acknowledges(deps, callback.event, own_ids)
            return
        rule, request = found
        record = await deps.intake.record(request)  # raises when the database is down: Slack will retry
        if record is not None:
            log.info(
                "alert recorded rule=%r send_id=%s event_id=%s",
                rule.name,
                record.id,
                callback.event_id,
                extra={"send_id": record.id},
            )

    @app.event("reaction_added")
    async def on_reaction(body: dict[str, Any]) -> None:
        """A person's ✅ (or the rule's ``ack_reactions``) on a forwarded alert acknowledges it (``ack_by``)."""
        try:
            event = ReactionCallback.model_validate(body).event
        except ValidationError:  # a reaction to a file, or a payload the app cannot read: nothing to acknowledge
            return
        user, reaction, channel, ts = event.user, event.reaction, event.item.channel, event.item.ts
        if event.item.type != "message" or user in own_ids:
            return
        if deps.alerts is None or not deps.alerts.acknowledges(channel, reaction):
            return
        await _acknowledge(deps, channel, ts, user, reaction)


async def _reply_acknowledges(deps: Deps, event: MessageEvent, own_ids: frozenset[str]) -> None:
    """A person's reply in a forwarded alert's thread may acknowledge it (``ack_by``); bots' replies, and replies
    by people of another organisation in a Slack Connect channel, do not."""
    channel, thread, user = event.channel, event.thread_ts, event.user
    alerts = deps.alerts
    if alerts is None or not channel or not thread or thread == event.ts or not user or event.bot_id:
        return
    if (
        event.subtype not in (None, "thread_broadcast")
        or user in own_ids
        or not alerts.acknowledges(channel, None)
        or (event.user_team and alerts.organisation and alerts.organisation.outside(event.user_team))
    ):
        return
    await _acknowledge(deps, channel, thread, user, None)


async def _acknowledge(deps: Deps, channel: str, ts: str, user: str, reaction: str | None) -> None:
    """Recorded within ``ACK_WITHIN`` (the note in the thread follows after the ack); past it, or when the database
    fails, the event is answered an error and Slack delivers it again, while a write still under way goes on: the
    next delivery finds it acknowledged, and its note is posted once."""
    assert deps.alerts is not None  # noqa: S101 - asked only with alerts
    # Raises when the database fails, or Slack's users.info does: Slack retries.
    writing = asyncio.ensure_future(deps.alerts.acknowledge(channel, ts, user, reaction))
    deps.tasks.spawn(_note(deps, writing, channel, ts, user), name=f"ack-note-{channel}-{ts}")
    async with asyncio.timeout(ACK_WITHIN):
        await asyncio.shield(writing)


async def _note(deps: Deps, writing: asyncio.Future[SendRecord | None], channel: str, ts: str, user: str) -> None:
    """Say in the alert's thread who acknowledged it, once the acknowledgement is written (after the event's ack)."""
    try:
        record = await writing
    except Exception:  # the event was answered an error: Slack delivers it again
        return
    if record is None:
        return  # not a forwarded alert, or acknowledged before
    log.info("alert acknowledged send_id=%s by=%s", record.id, user, extra={"send_id": record.id})
    in_thread = replace(record.request.origin, channel_id=channel, thread_ts=ts)  # where the person reacted
    try:
        await deps.conversations.open(in_thread).acknowledged(user)
    except Exception as exc:  # acknowledged all the same; only the note is missing
        log.warning("could not say in %s that an alert was acknowledged (%s)", channel, type(exc).__name__)
