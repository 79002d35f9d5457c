"""The Workflow Builder step "Send a text with D7" (a custom step: ``function_executed`` events for ``send_text``).

``step_request`` turns the step's inputs into the same ``SendRequest`` a command builds (the runner as the user,
the chosen channel as the channel), keyed by the ``function_execution_id`` so that Slack's redeliveries send once.
The runner is the one input the workflow's author cannot type: a ``slack#/types/user_context`` (or the interactor
of a ``slack#/types/interactivity``), which only Slack fills in with the person who ran the workflow. A user ID the
author picked would let anyone who builds workflows send as anyone the policy trusts.
``SlackSteps`` completes the step (``functions.completeSuccess`` / ``functions.completeError``) when the outbox knows
the send's outcome; a step Slack says is no longer running was completed before (a retried telling) or timed out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain import keys
from bot.domain.errors import InputError
from bot.domain.models import Origin, RecipientRef, RefKind, SendRequest, Surface, Via
from bot.domain.slack_ids import CHANNEL_ID, USER_ID
from bot.domain.templates import TemplateUse
from bot.slack import messages
from bot.slack.markup import to_plain_text
from bot.slack.payloads import StepExecuted

log = logging.getLogger("bot.slack")

CALLBACK_ID = "send_text"  # the function's callback_id in manifest.yml
_GONE = frozenset({"execution_not_in_running_state", "function_execution_not_found"})
# Answers that will not change by asking again: logged as errors, and the result is still posted in the channel.
_FOR_GOOD = frozenset(
    {"parameter_validation_failed", "invalid_arguments", "invalid_auth", "not_authed", "account_inactive"}
)
_SPLIT = re.compile(r"[\s,;]+")
_LIST = re.compile(r"[,;\n]+")  # phone numbers: "+1 415 555 0100, +44 20 7946 0000" (spaces stay inside one)


def _words(value: Any, split: re.Pattern[str] = _SPLIT) -> list[str]:
    """A text input split (by default on commas, semicolons and spaces), or an array input as it is."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [w.strip() for w in split.split(str(value)) if w.strip()]


def step_request(event: StepExecuted, team_id: str) -> SendRequest:
    """The step's inputs as a request; ``InputError`` naming the input that is missing or wrong."""
    execution_id, inputs = event.function_execution_id, event.inputs
    raw_via = str(inputs.get("via") or "sms").strip().lower()
    if raw_via not in {v.value for v in Via}:
        raise InputError(messages.step_bad_via(raw_via))
    channel = str(inputs.get("channel") or "")
    if not CHANNEL_ID.match(channel):
        raise InputError(messages.step_no_channel())
    runner = runner_of(inputs)
    refs = [RecipientRef(RefKind.NUMBER, n) for n in _words(inputs.get("numbers"), _LIST)]
    people = _words(inputs.get("people"))
    if wrong := [u for u in people if not USER_ID.match(u)]:
        raise InputError(messages.step_not_people(wrong[0]))
    refs += [RecipientRef(RefKind.USER, u) for u in people]
    refs += [RecipientRef(RefKind.CONTACTS, g.removeprefix("group:")) for g in _words(inputs.get("contact_groups"))]
    if not refs:
        raise InputError(messages.step_nobody())
    template = None
    alias = str(inputs.get("template") or "").strip()
    message = str(inputs.get("message") or "").strip()
    if alias:
        values = inputs.get("template_values")
        parts = [str(v).strip() for v in values] if isinstance(values, list) else str(values or "").split("|")
        template = TemplateUse(alias, tuple(p.strip() for p in parts if p.strip() or len(parts) > 1))
        message = " | ".join((f"template:{alias}", *template.values))
    elif not message:
        raise InputError(messages.step_empty())
    sender = str(inputs.get("sender") or "").strip() or None
    return SendRequest(
        via=Via(raw_via),
        origin=Origin(Surface.WORKFLOW, team_id, runner, channel),
        recipients=tuple(dict.fromkeys(refs)),
        text=message,
        idempotency_key=keys.step(execution_id),
        sender=sender,
        template=template,
        step=execution_id,
        workflow=event.workflow_execution_id[:64] if event.workflow_execution_id else None,
    )


def runner_of(inputs: Mapping[str, Any]) -> str:
    """The person who ran the workflow, as Slack vouches for them; ``InputError`` when the step has no such input."""
    context = inputs.get("runner")
    if context is None:  # a step wired to a click's interactivity instead
        context = next(
            (
                v["interactor"]
                for v in inputs.values()
                if isinstance(v, Mapping) and isinstance(v.get("interactor"), Mapping)
            ),
            None,
        )
    if isinstance(context, Mapping):
        user, secret = context.get("id"), context.get("secret")
        if isinstance(user, str) and USER_ID.match(user) and isinstance(secret, str) and secret:
            return user
    if isinstance(context, str):
        raise InputError(messages.step_runner_typed())
    raise InputError(messages.step_no_runner())


class SlackSteps:
    """``Steps`` on Slack's Web API (the bot token: completing the app's own steps needs no scope)."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def complete(self, execution_id: str, outputs: Mapping[str, Any]) -> None:
        try:
            await self._client.functions_completeSuccess(function_execution_id=execution_id, outputs=dict(outputs))
        except SlackApiError as exc:
            self._unless_gone(exc, execution_id)

    async def fail(self, execution_id: str, error: str) -> None:
        plain = to_plain_text(error).replace("*", "").replace("`", "")[:1000]  # Workflow Builder shows plain text
        try:
            await self._client.functions_completeError(function_execution_id=execution_id, error=plain)
        except SlackApiError as exc:
            self._unless_gone(exc, execution_id)

    @staticmethod
    def _unless_gone(exc: SlackApiError, execution_id: str) -> None:
        error = exc.response.get("error")
        if error in _GONE:  # completed before (a retried telling), or Slack gave up on the step (timed out)
            log.warning("workflow step %s was not running any more (%s): not completed now", execution_id, error)
            return
        if error in _FOR_GOOD:
            log.error("workflow step %s cannot be completed (%s); its result is still posted", execution_id, error)
            return
        raise exc  # Slack failing or rate-limiting: telling is tried again
