"""Verified phones in Slack: the App Home section with **Verify my phone**, the modal the code is typed in (pure
Block Kit builders, within Slack's view limits), their words, and the private note that tells a person texts skip
their unverified phone (``VerifyNotes``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.clock import utc_now
from bot.domain.phone import NumberDisplay, PhoneNumber
from bot.domain.verification import BLOCK_FOR, MAX_WRONG_CODES, minutes_until
from bot.sending.verifying import CodeSent, PhoneStatus, Started, Stop, Verified
from bot.slack.markup import escape
from bot.slack.messages import Block, context, section

VERIFY_BUTTON = "verify_phone"  # App Home: texts a code and opens the modal
CODE_CALLBACK = "verify_phone_code"  # the modal's submission
CODE_BLOCK = "code"
CODE_ACTION = "code"

TITLE = "Verify your phone"
BUTTON = "Verify my phone"
LOADING = ":hourglass_flowing_sand: Reading your Slack profile and texting you a code…"
CHECKING = ":hourglass_flowing_sand: Checking the code with D7…"
WENT_WRONG = "Something went wrong on the bot's side: nothing was verified. Try again in a few minutes."
HOW_TO_VERIFY = (
    ":iphone: An alert or on-call text skipped your phone: this relay texts a phone number from a Slack profile only "
    "once its owner verified it. Open the app's *Home* tab and click *Verify my phone*: you get a code by SMS to "
    "type in, and texts reach you from then on."
)

BLOCKING = f"{MAX_WRONG_CODES} wrong codes in a row block trying for {int(BLOCK_FOR.total_seconds() // 60)} minutes."

View = dict[str, Any]


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def home_blocks(status: PhoneStatus, show: NumberDisplay, now: datetime | None = None) -> list[Block]:
    """App Home's "Your phone": verified or not (with the button), or why there is nothing to verify."""
    if status.phone is not None and status.verified:
        return [section(f"*Your phone*\n:white_check_mark: Your phone {status.phone.display(show)} is verified.")]
    if status.phone is None:
        line = f":warning: {escape(status.problem or '')} Alerts and on-call texts cannot reach you until then."
    else:
        line = (
            f":warning: Your phone {status.phone.display(show)} is not verified: alerts and on-call texts skip it "
            "until you verify it."
        )
    if status.blocked_until is not None:
        minutes = minutes_until(status.blocked_until, now or utc_now())
        line += f" Too many wrong codes: try again in {minutes} minute{'s' if minutes != 1 else ''}."
    block = section(f"*Your phone*\n{line}")
    block["accessory"] = {"type": "button", "action_id": VERIFY_BUTTON, "text": _plain(BUTTON), "style": "primary"}
    return [block]


def loading_view() -> View:
    """Opened at the click, inside the trigger's 3 seconds, while the profile is read and D7 texts the code."""
    return notice_view(LOADING)


def notice_view(text: str) -> View:
    """A modal that only tells something (``text``: mrkdwn, already escaped where it quotes anyone)."""
    return {"type": "modal", "title": _plain(TITLE), "close": _plain("Close"), "blocks": [section(text)]}


def code_view(phone: PhoneNumber, expires_at: datetime, show: NumberDisplay, *, again: bool = False) -> View:
    """Where the code texted to ``phone`` is typed. The metadata carries what the form shows (to show it again after
    a slow check), never who verifies or what: that is the submitter, and the number the code went to."""
    shown = phone.display(show)
    when = f"<!date^{int(expires_at.timestamp())}^{{time}}|{expires_at.strftime('%H:%M UTC')}>"
    said = f"We texted a code to {shown} a moment ago" if again else f"We texted a code to {shown}"
    return {
        "type": "modal",
        "callback_id": CODE_CALLBACK,
        "title": _plain(TITLE),
        "submit": _plain("Verify"),
        "close": _plain("Cancel"),
        "private_metadata": json.dumps({"phone": phone.e164, "expires": int(expires_at.timestamp())}),
        "blocks": [
            section(f"{said}. Type it below; it works until {when}."),
            {
                "type": "input",
                "block_id": CODE_BLOCK,
                "label": _plain("Code from the text"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": CODE_ACTION,
                    "min_length": 4,
                    "max_length": 12,
                    "placeholder": _plain("123456"),
                },
            },
            context(BLOCKING),
        ],
    }


def code_view_again(private_metadata: str, show: NumberDisplay, error: str) -> View:
    """The code's form again after a check answered too late for Slack's 3 seconds, with why the code was not
    accepted (then Slack's field errors cannot be used); a notice when the metadata cannot be read."""
    try:
        meta = json.loads(private_metadata)
        phone, expires = PhoneNumber(str(meta["phone"])), datetime.fromtimestamp(int(meta["expires"]), UTC)
    except (ValueError, KeyError, TypeError, OverflowError, OSError):
        return notice_view(f":x: {escape(error)} Click *{BUTTON}* on the app's Home tab to try again.")
    view = code_view(phone, expires, show)
    view["blocks"].insert(1, context(f":x: {escape(error)}"))
    return view


def verified_view(verified: Verified, show: NumberDisplay) -> View:
    shown = verified.phone.display(show)
    if verified.before:
        return notice_view(f":white_check_mark: Your phone {shown} is already verified.")
    return notice_view(f":white_check_mark: Your phone {shown} is verified: alerts and on-call texts reach it now.")


def started_view(started: Started, show: NumberDisplay) -> View:
    """What replaces the loading view after the click."""
    if isinstance(started, CodeSent):
        return code_view(started.phone, started.expires_at, show, again=started.again)
    if isinstance(started, Verified):
        return verified_view(started, show)
    return stopped_view(started)


def stopped_view(stop: Stop) -> View:
    return notice_view(f":no_entry: {escape(stop.words)}")


class SlackVerifyNotes:
    """``VerifyNotes`` in the person's DM with the app (its Messages tab)."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def how_to_verify(self, user_id: str) -> None:
        await self._client.chat_postMessage(channel=user_id, text=HOW_TO_VERIFY, blocks=[section(HOW_TO_VERIFY)])
