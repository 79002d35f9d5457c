"""``/sms oncall``: who is on call for each schedule, one schedule's next shifts, and taking or giving a schedule's
on-call (people on its rotation and the policy's admins; anyone else is refused privately and nothing changes).
Answered privately through the response_url; every change announced in the schedule's ``channel``, when set."""

from __future__ import annotations

import asyncio
import logging

from slack_bolt.async_app import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.oncall import Override
from bot.slack import messages
from bot.slack.deps import Deps
from bot.slack.grammar import OnCallAsk

ANNOUNCE_WITHIN = 1.5  # seconds the announcement in the schedule's channel may take before the answer
log = logging.getLogger("bot.slack")


async def answer_oncall(
    deps: Deps, respond: AsyncRespond, client: AsyncWebClient, user_id: str, asked: OnCallAsk
) -> None:
    oncall = deps.oncall
    if oncall is None:
        await respond(text=messages.oncall_not_offered(), response_type="ephemeral")
        return
    if asked.schedule is not None and not oncall.knows(asked.schedule):
        known = list(deps.policy.schedules)
        await respond(text=messages.oncall_unknown(asked.schedule, known), response_type="ephemeral")
        return
    try:
        if asked.schedule is None:
            text, blocks = messages.oncall_board(await oncall.board())
        elif asked.change is None:
            text, blocks = messages.oncall_shifts(asked.schedule, await oncall.upcoming(asked.schedule))
        else:
            admin = await deps.admission.is_admin(user_id)
            if not await oncall.may_change(asked.schedule, user_id, admin):
                log.info("on-call %s of %s refused for %s", asked.change, asked.schedule, user_id)
                await respond(text=messages.oncall_not_allowed(asked.schedule), response_type="ephemeral")
                return
            person = asked.person if asked.change == "give" and asked.person else user_id
            override = await oncall.put(asked.schedule, person, user_id, asked.duration)
            log.info("on-call of %s: %s from now by %s", asked.schedule, person, user_id)
            try:
                async with asyncio.timeout(ANNOUNCE_WITHIN):
                    await announce(deps, client, override)
            except TimeoutError:  # the change is kept: the person hears so whatever the channel does
                log.warning("announcing an on-call change took over %.1f s: left unposted", ANNOUNCE_WITHIN)
            text = messages.oncall_changed(override)
            blocks = [messages.section(text)]
    except Exception as exc:  # Slack's look-up or the database failed: nothing changed
        log.warning("could not answer /sms oncall (%s)", type(exc).__name__)
        await respond(text=messages.oncall_unavailable(exc), response_type="ephemeral")
        return
    await respond(text=text, blocks=blocks, response_type="ephemeral", replace_original=False)


async def announce(deps: Deps, client: AsyncWebClient, override: Override) -> None:
    """The change, in the schedule's channel when it has one (joined once when the bot is not in it)."""
    channel = deps.policy.schedules[override.schedule].channel
    if channel is None:
        return
    text = messages.oncall_changed(override)
    try:
        try:
            await client.chat_postMessage(channel=channel, text=text)
        except SlackApiError as exc:
            if exc.response.get("error") != "not_in_channel":
                raise
            await client.conversations_join(channel=channel)
            await client.chat_postMessage(channel=channel, text=text)
    except SlackApiError as exc:  # the change is kept: only its announcement is lost
        log.warning("could not announce an on-call change in %s: %s", channel, exc.response.get("error"))
    except Exception as exc:  # the network, a timeout: the same (the change is kept, the person is told it was)
        log.warning("could not announce an on-call change in %s (%s)", channel, type(exc).__name__)
