"""**Verify my phone** on App Home, and the modal its code is typed in (``defaults.verified_phones``).

The click opens a modal at once (a trigger_id is good for 3 s; D7 may take longer to text the code), which the code's
form replaces when D7 answers. A submission is answered within Slack's 3 s: a wrong code as an error on the code's
field; a check D7 has not answered by then turns the form into "Checking…", which the outcome replaces. Who verifies
is the Slack user who clicked or submitted, as Slack signed it; nothing in the form says who or which phone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.sending.verifying import Checked, PhoneVerifying, Stop, TryAgain, Verified
from bot.slack import verify
from bot.slack.deps import Deps
from bot.slack.payloads import CodeSubmission, HomeButtonClick

log = logging.getLogger("bot.slack")

ANSWER_WITHIN = 2.0  # seconds a submission waits for D7's check before it answers "Checking…" (Slack gives 3)
_SLACK_FAILED = (SlackApiError, aiohttp.ClientError, TimeoutError, OSError)


def register(app: AsyncApp, deps: Deps, verifying: PhoneVerifying) -> None:
    @app.action(verify.VERIFY_BUTTON)
    async def clicked(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        try:
            click = HomeButtonClick.model_validate(body)
        except ValidationError as exc:
            log.warning("malformed %s click: %s", verify.VERIFY_BUTTON, exc.errors(include_input=False))
            return
        deps.tasks.spawn(start(deps, verifying, client, click.trigger_id, click.user.id), "verify-phone")

    @app.view(verify.CODE_CALLBACK)
    async def submitted(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await submit(deps, verifying, ack, body, client)


async def start(deps: Deps, verifying: PhoneVerifying, client: AsyncWebClient, trigger_id: str, user_id: str) -> None:
    """Open the modal first, then text the code and show its form (or why not) in it."""
    try:
        opened = (await client.views_open(trigger_id=trigger_id, view=verify.loading_view()))["view"]
    except _SLACK_FAILED as exc:  # an expired trigger: nobody to tell, and nothing was texted
        log.warning("the verify modal did not open (%s)", _why(exc))
        return
    try:
        view = verify.started_view(await verifying.start(user_id), deps.policy.defaults.show_numbers)
    except Exception as exc:
        log.warning("verifying the phone of %s failed (%s)", user_id, type(exc).__name__)
        view = verify.stopped_view(Stop(verify.WENT_WRONG))
    await _update(client, str(opened["id"]), view)


async def submit(
    deps: Deps, verifying: PhoneVerifying, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient
) -> None:
    try:
        form = CodeSubmission.model_validate(body)
    except ValidationError as exc:
        log.warning("malformed %s submission: %s", verify.CODE_CALLBACK, exc.errors(include_input=False))
        await ack(response_action="errors", errors={verify.CODE_BLOCK: verify.WENT_WRONG})
        return
    typed = _typed(form.view.state.values)
    checking = asyncio.create_task(verifying.confirm(form.user.id, typed), name="verify-code")
    done, _ = await asyncio.wait({checking}, timeout=ANSWER_WITHIN)
    if not done:  # D7 is slow: the form says so now, and shows the outcome when it comes
        await ack(response_action="update", view=verify.notice_view(verify.CHECKING))
        later = _later(deps, checking, client, form)
        deps.tasks.spawn(later, "verify-code-later")
        return
    checked = _outcome(checking, form.user.id)
    if isinstance(checked, TryAgain):
        await ack(response_action="errors", errors={verify.CODE_BLOCK: checked.words})
        return
    await ack(response_action="update", view=_view(deps, checked))
    _refresh_home(deps, form.user.id, checked)


async def _later(deps: Deps, checking: asyncio.Task[Checked], client: AsyncWebClient, form: CodeSubmission) -> None:
    await asyncio.wait({checking})
    checked = _outcome(checking, form.user.id)
    show = deps.policy.defaults.show_numbers
    if isinstance(checked, TryAgain):
        view = verify.code_view_again(form.view.private_metadata, show, checked.words)
    else:
        view = _view(deps, checked)
    await _update(client, form.view.id, view)
    _refresh_home(deps, form.user.id, checked)


def _outcome(checking: asyncio.Task[Checked], user_id: str) -> Checked:
    """The check's outcome; a failure of the bot's own (the database) in plain words, nothing verified."""
    try:
        return checking.result()
    except Exception as exc:
        log.warning("checking the code of %s failed (%s)", user_id, type(exc).__name__)
        return Stop(verify.WENT_WRONG)


def _view(deps: Deps, checked: Verified | Stop) -> verify.View:
    if isinstance(checked, Verified):
        return verify.verified_view(checked, deps.policy.defaults.show_numbers)
    return verify.stopped_view(checked)


def _refresh_home(deps: Deps, user_id: str, checked: Checked) -> None:
    """The Home tab shows the phone verified (or the block) without being opened again."""
    if deps.home is not None and not isinstance(checked, TryAgain):
        deps.home.changed(user_id)


def _typed(values: dict[str, Any]) -> str:
    """The code as typed, read leniently (Slack's state as it wrote it)."""
    element = (values.get(verify.CODE_BLOCK) or {}).get(verify.CODE_ACTION) or {}
    value = element.get("value") if isinstance(element, dict) else None
    return value if isinstance(value, str) else ""


async def _update(client: AsyncWebClient, view_id: str, view: verify.View) -> None:
    try:
        await client.views_update(view_id=view_id, view=view)
    except _SLACK_FAILED as exc:  # closed meanwhile (not_found), or Slack down: the Home tab still tells
        log.warning("the verify modal could not be updated (%s)", _why(exc))


def _why(exc: BaseException) -> str:
    return str(exc.response.get("error")) if isinstance(exc, SlackApiError) else type(exc).__name__
