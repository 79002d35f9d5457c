"""The compose modal as pure Block Kit builders, and the reading of its state. No I/O.

Block ids are stable, so ``views.update`` keeps what the user typed, and validation errors are keyed by them. The
sender block's id carries the via (``sender-sms``), so switching via starts the sender choice afresh.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.domain.models import Origin, Surface, Via
from bot.slack import messages

CALLBACK_ID = "compose"
CONVERSATION = "conversation"
VIA = "via"
NUMBERS = "numbers"
PEOPLE = "people"
CONTACTS = "contacts"
MESSAGE = "message"
WHEN = "when"
PREVIEW = "preview"
INPUT_ACTIONS = (VIA, NUMBERS, PEOPLE, CONTACTS, MESSAGE)  # each of these refreshes the preview
MESSAGE_MAX = 3000  # Slack's limit for a plain_text_input

View = dict[str, Any]


def sender_block(via: Via) -> str:
    return f"sender-{via.value}"


@dataclass(frozen=True)
class ComposeContext:
    """Where the modal was opened from; kept in ``private_metadata`` (Slack's limit: 3,000 characters)."""

    surface: Surface  # COMMAND, SHORTCUT (global) or MESSAGE (the "Text this message" shortcut)
    team_id: str
    user_id: str
    channel_id: str | None = None  # None: a global shortcut, the user picks the conversation
    thread_ts: str | None = None  # the forwarded message's thread
    response_url: str | None = None

    @classmethod
    def opened_from(cls, origin: Origin) -> ComposeContext:
        """The form opened where ``origin`` is (a command in a channel, a message's thread)."""
        return cls(**asdict(origin))

    def submitted_in(self, channel_id: str) -> Origin:
        """Where the submitted form's story is told: the chosen conversation when the form did not know it."""
        return Origin(**{**asdict(self), "surface": Surface.MODAL, "channel_id": channel_id})

    def to_metadata(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, separators=(",", ":"))

    @classmethod
    def from_metadata(cls, text: str) -> ComposeContext:
        """The context back from ``private_metadata``; ValueError or TypeError when it is not ours."""
        data = json.loads(text)
        if not isinstance(data, dict) or "surface" not in data:
            raise ValueError("not compose metadata")
        return cls(**{**data, "surface": Surface(data["surface"])})


@dataclass(frozen=True)
class SenderOption:
    name: str
    via: Via
    originator: str


@dataclass(frozen=True)
class ComposeForm:
    """What the modal offers."""

    context: ComposeContext
    senders: list[SenderOption]  # only those the policy allows this user here
    via: Via
    contacts: dict[str, int] = field(default_factory=dict)  # contact group → how many numbers
    text: str = ""  # prefilled message
    preview: str = ""

    @property
    def vias(self) -> list[Via]:
        return [v for v in Via if any(s.via is v for s in self.senders)]


@dataclass(frozen=True)
class ComposeValues:
    """What the user entered."""

    conversation: str | None
    via: Via | None
    sender: str | None
    numbers: list[str]
    people: list[str]
    contacts: list[str]
    text: str
    when: int | None  # unix seconds


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _option(text: str, value: str) -> dict[str, Any]:
    return {"text": _plain(text[:75]), "value": value}


def split_numbers(raw: str) -> list[str]:
    """Numbers typed in one field, separated by commas, semicolons or new lines (spaces stay inside numbers)."""
    return [part.strip() for part in re.split(r"[,;\n]+", raw) if part.strip()]


def nothing_allowed_view(context: ComposeContext, reason: str) -> View:
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "private_metadata": context.to_metadata(),
        "title": _plain("Send a text"),
        "close": _plain("Close"),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": messages.cannot_send_here(reason)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": messages.ask_an_admin()}]},
        ],
    }


def notice_view(text: str) -> View:
    """A modal that only tells something (no form): when a shortcut's payload was unusable."""
    return {
        "type": "modal",
        "title": _plain("Send a text"),
        "close": _plain("Close"),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }


def compose_view(form: ComposeForm) -> View:
    """The modal; only what the policy allows this user is offered."""
    blocks: list[dict[str, Any]] = []
    if form.context.channel_id is None:
        blocks.append(
            {
                "type": "input",
                "block_id": CONVERSATION,
                "label": _plain("Post the result in"),
                "element": {
                    "type": "conversations_select",
                    "action_id": CONVERSATION,
                    "filter": {"include": ["public", "private"], "exclude_bot_users": True},
                },
            }
        )
    via_options = [_option(v.label, v.value) for v in form.vias]
    blocks.append(
        {
            "type": "input",
            "block_id": VIA,
            "dispatch_action": True,
            "label": _plain("Send by"),
            "element": {
                "type": "static_select",
                "action_id": VIA,
                "options": via_options,
                "initial_option": _option(form.via.label, form.via.value),
            },
        }
    )
    senders = [s for s in form.senders if s.via is form.via]
    sender_options = [_option(f"{s.name} — {s.originator}", s.name) for s in senders]
    blocks.append(
        {
            "type": "input",
            "block_id": sender_block(form.via),
            "label": _plain("Sender"),
            "element": {
                "type": "static_select",
                "action_id": "sender",
                "options": sender_options,
                "initial_option": sender_options[0],
            },
        }
    )
    blocks.append(
        {
            "type": "input",
            "block_id": NUMBERS,
            "optional": True,
            "dispatch_action": True,
            "label": _plain("Phone numbers"),
            "hint": _plain("Comma separated, with country code: +14155550100, +442079460000"),
            "element": {
                "type": "plain_text_input",
                "action_id": NUMBERS,
                "placeholder": _plain("+14155550100"),
                "dispatch_action_config": {"trigger_actions_on": ["on_character_entered"]},
            },
        }
    )
    blocks.append(
        {
            "type": "input",
            "block_id": PEOPLE,
            "optional": True,
            "dispatch_action": True,
            "label": _plain("People (the phone in their Slack profile)"),
            "element": {"type": "multi_users_select", "action_id": PEOPLE},
        }
    )
    if form.contacts:
        blocks.append(
            {
                "type": "input",
                "block_id": CONTACTS,
                "optional": True,
                "dispatch_action": True,
                "label": _plain("Contact groups"),
                "element": {
                    "type": "multi_static_select",
                    "action_id": CONTACTS,
                    "options": [_option(f"{name} ({n})", name) for name, n in list(form.contacts.items())[:100]],
                },
            }
        )
    message: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": MESSAGE,
        "multiline": True,
        "max_length": MESSAGE_MAX,
        "dispatch_action_config": {"trigger_actions_on": ["on_character_entered"]},
    }
    if form.text:
        message["initial_value"] = form.text[:MESSAGE_MAX]
    blocks.append(
        {
            "type": "input",
            "block_id": MESSAGE,
            "dispatch_action": True,
            "label": _plain("Message"),
            "element": message,
        }
    )
    blocks.append(
        {"type": "context", "block_id": PREVIEW, "elements": [{"type": "plain_text", "text": form.preview or " "}]}
    )
    blocks.append(
        {
            "type": "input",
            "block_id": WHEN,
            "optional": True,
            "label": _plain("Send later (optional)"),
            "element": {"type": "datetimepicker", "action_id": WHEN},
        }
    )
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "private_metadata": form.context.to_metadata(),
        "title": _plain("Send a text"),
        "submit": _plain("Send"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }


def read_values(values: Mapping[str, Any]) -> ComposeValues:
    """The user's entries from the view's ``state.values``; missing or malformed parts read as empty."""

    def get(block: str, action: str) -> dict[str, Any]:
        found = (values.get(block) or {}).get(action)
        return found if isinstance(found, dict) else {}

    via_value = (get(VIA, VIA).get("selected_option") or {}).get("value")
    via = Via(via_value) if isinstance(via_value, str) and via_value in {v.value for v in Via} else None
    sender = None
    for v in Via:
        chosen = (get(sender_block(v), "sender").get("selected_option") or {}).get("value")
        if chosen and (via is None or v is via):
            sender = chosen
    when = get(WHEN, WHEN).get("selected_date_time")
    return ComposeValues(
        conversation=get(CONVERSATION, CONVERSATION).get("selected_conversation"),
        via=via,
        sender=sender,
        numbers=split_numbers(get(NUMBERS, NUMBERS).get("value") or ""),
        people=list(get(PEOPLE, PEOPLE).get("selected_users") or []),
        contacts=[o["value"] for o in get(CONTACTS, CONTACTS).get("selected_options") or [] if "value" in o],
        text=get(MESSAGE, MESSAGE).get("value") or "",
        when=int(when) if isinstance(when, int | float) else None,
    )
