"""The compose modal as pure Block Kit builders, and the reading of its state. No I/O.

Block ids are stable, so ``views.update`` keeps what the user typed, and validation errors are keyed by them. The
sender block's id carries the via (``sender-sms``), so switching via starts the sender choice afresh.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.domain.models import Origin, Surface, Via
from bot.domain.templates import PARAM_LIMIT
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
KIND = "kind"  # WhatsApp: free text or one of the approved templates
PARAM = "param"  # a template parameter's input (block ids: param-<alias>-<index>)
FREE = "free"
TEMPLATE_OPTION = "t:"  # + alias: a template in the message type choice (an alias may be "free" too)
INPUT_ACTIONS = (VIA, NUMBERS, PEOPLE, CONTACTS, MESSAGE, KIND, PARAM)  # each of these refreshes the preview
MESSAGE_MAX = 3000  # Slack's limit for a plain_text_input

View = dict[str, Any]


def sender_block(via: Via, template: str | None = None) -> str:
    """The sender choice's block: a new id per via and per template, so a new choice starts afresh."""
    return f"sender-{via.value}" if template is None else f"sender-{via.value}-t-{template}"


def param_block(alias: str, index: int) -> str:
    return f"param-{alias}-{index}"


# A form's own response_url is used for its story only when the form was submitted within this many seconds of
# opening: the count of its 30 minutes starts at the submission, so it allows for this much more age.
FORM_RESPONSE_URL_FRESH = 300


@dataclass(frozen=True)
class ComposeContext:
    """Where the modal was opened from; kept in ``private_metadata`` (Slack's limit: 3,000 characters)."""

    surface: Surface  # COMMAND, SHORTCUT (global) or MESSAGE (the "Text this message" shortcut)
    team_id: str
    user_id: str
    channel_id: str | None = None  # None: a global shortcut, the user picks the conversation
    thread_ts: str | None = None  # the forwarded message's thread
    response_url: str | None = None
    cut_from: int | None = None  # the forwarded message's length when it did not fit the message field
    opened_at: int | None = None  # Unix seconds: when the form opened (and its own response_url was issued)

    @classmethod
    def opened_from(cls, origin: Origin) -> ComposeContext:
        """The form opened where ``origin`` is (a command in a channel, a message's thread)."""
        return cls(**asdict(origin))

    def submitted_in(self, channel_id: str, response_url: str | None = None, now: float | None = None) -> Origin:
        """Where the submitted form's story is told: the chosen conversation when the form did not know it, with
        the response_url Slack made for the pick (``response_url_enabled``) when the form had none of its own.

        The form's own response_url (from the command or message that opened it) is older than the submission its
        uses are counted from: it is kept only when the form was opened within ``FORM_RESPONSE_URL_FRESH``, which
        the count allows for (``bot.slack.conversation``)."""
        own = self.response_url
        if own and self.opened_at is not None and (now or time.time()) - self.opened_at > FORM_RESPONSE_URL_FRESH:
            own = None
        return Origin(
            surface=Surface.MODAL,
            team_id=self.team_id,
            user_id=self.user_id,
            channel_id=channel_id,
            response_url=own or response_url,
            thread_ts=self.thread_ts,
        )

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
class TemplateOption:
    """An approved WhatsApp template this user may send here."""

    alias: str
    senders: tuple[str, ...]  # the allowed senders that have it
    params: tuple[tuple[str, str], ...]  # (name, description) in order
    text: str | None  # with {{1}}… placeholders


@dataclass(frozen=True)
class ComposeForm:
    """What the modal offers."""

    context: ComposeContext
    senders: list[SenderOption]  # only those the policy allows this user here
    via: Via
    contacts: dict[str, int] = field(default_factory=dict)  # contact group → how many numbers
    text: str = ""  # prefilled message
    preview: str = ""
    templates: dict[str, TemplateOption] = field(default_factory=dict)  # alias → what it needs (WhatsApp)
    template: str | None = None  # the chosen one (None: free text)
    numbers: str = ""  # prefilled phone numbers

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
    template: str | None = None  # the chosen WhatsApp template's alias (None: free text)
    params: tuple[str, ...] = ()  # its values, in order


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _option(text: str, value: str) -> dict[str, Any]:
    return {"text": _plain(text[:75]), "value": value}


def fit_to_field(text: str) -> tuple[str, int | None]:
    """The text as the message field holds it (Slack refuses a longer ``initial_value``), and its length when it
    had to be cut (None when it fits)."""
    if len(text) <= MESSAGE_MAX:
        return text, None
    return text[:MESSAGE_MAX], len(text)


def split_numbers(raw: str) -> list[str]:
    """Numbers typed in one field, separated by commas, semicolons or new lines (spaces stay inside numbers)."""
    return [part.strip() for part in re.split(r"[,;\n]+", raw) if part.strip()]


def nothing_allowed_view(context: ComposeContext, reason: str) -> View:
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "private_metadata": context.to_metadata(),
        "title": _plain(messages.FORM_TITLE),
        "close": _plain(messages.FORM_CLOSE),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": messages.cannot_send_here(reason)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": messages.ask_an_admin()}]},
        ],
    }


def notice_view(text: str) -> View:
    """A modal that only tells something (no form): when a shortcut's payload was unusable, or the form could not
    be prepared."""
    return {
        "type": "modal",
        "title": _plain(messages.FORM_TITLE),
        "close": _plain(messages.FORM_CLOSE),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }


def loading_view() -> View:
    """What ``views.open`` shows at once, inside the trigger's 3 seconds, while the form's look-ups run."""
    return {
        "type": "modal",
        "title": _plain(messages.FORM_TITLE),
        "close": _plain(messages.FORM_CANCEL),
        "blocks": [{"type": "section", "text": _plain(messages.loading())}],
    }


def compose_view(form: ComposeForm) -> View:
    """The modal; only what the policy allows this user is offered."""
    blocks: list[dict[str, Any]] = []
    if form.context.channel_id is None:
        blocks.append(
            {
                "type": "input",
                "block_id": CONVERSATION,
                "label": _plain(messages.FORM_CONVERSATION),
                "element": {
                    "type": "conversations_select",
                    "action_id": CONVERSATION,
                    "filter": {"include": ["public", "private"], "exclude_bot_users": True},
                    # The submission then carries a response_url for the picked conversation: the sender can be
                    # answered there privately even where the bot cannot post (a private channel it is not in).
                    "response_url_enabled": True,
                },
            }
        )
    via_options = [_option(v.label, v.value) for v in form.vias]
    blocks.append(
        {
            "type": "input",
            "block_id": VIA,
            "dispatch_action": True,
            "label": _plain(messages.FORM_VIA),
            "element": {
                "type": "static_select",
                "action_id": VIA,
                "options": via_options,
                "initial_option": _option(form.via.label, form.via.value),
            },
        }
    )
    template = form.templates.get(form.template) if form.template is not None and form.via is Via.WHATSAPP else None
    if form.via is Via.WHATSAPP and form.templates:
        kinds = [_option(messages.FORM_FREE_TEXT, FREE)]
        kinds += [
            _option(messages.form_template_option(alias), TEMPLATE_OPTION + alias)
            for alias in list(form.templates)[:99]
        ]
        picked = TEMPLATE_OPTION + template.alias if template is not None else FREE
        chosen = next((k for k in kinds if k["value"] == picked), kinds[0])
        blocks.append(
            {
                "type": "input",
                "block_id": KIND,
                "dispatch_action": True,
                "label": _plain(messages.FORM_KIND),
                "hint": _plain(messages.FORM_KIND_HINT),
                "element": {
                    "type": "static_select",
                    "action_id": KIND,
                    "options": kinds,
                    "initial_option": chosen,
                },
            }
        )
    senders = [s for s in form.senders if s.via is form.via and (template is None or s.name in template.senders)]
    sender_options = [_option(messages.form_sender_option(s.name, s.originator), s.name) for s in senders]
    blocks.append(
        {
            "type": "input",
            "block_id": sender_block(form.via, template.alias if template else None),
            "label": _plain(messages.FORM_SENDER),
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
            "label": _plain(messages.FORM_NUMBERS),
            "hint": _plain(messages.FORM_NUMBERS_HINT),
            "element": {
                "type": "plain_text_input",
                "action_id": NUMBERS,
                "placeholder": _plain(messages.FORM_NUMBERS_PLACEHOLDER),
                "dispatch_action_config": {"trigger_actions_on": ["on_character_entered"]},
                **({"initial_value": form.numbers} if form.numbers else {}),
            },
        }
    )
    blocks.append(
        {
            "type": "input",
            "block_id": PEOPLE,
            "optional": True,
            "dispatch_action": True,
            "label": _plain(messages.FORM_PEOPLE),
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
                "label": _plain(messages.FORM_CONTACTS),
                "element": {
                    "type": "multi_static_select",
                    "action_id": CONTACTS,
                    "options": [
                        _option(messages.form_contacts_option(name, n), name)
                        for name, n in list(form.contacts.items())[:100]
                    ],
                },
            }
        )
    if template is not None:
        blocks += _param_blocks(template)
    else:
        blocks.append(_message_block(form))
    blocks.append(
        {"type": "context", "block_id": PREVIEW, "elements": [{"type": "plain_text", "text": form.preview or " "}]}
    )
    blocks.append(
        {
            "type": "input",
            "block_id": WHEN,
            "optional": True,
            "label": _plain(messages.FORM_WHEN),
            "element": {"type": "datetimepicker", "action_id": WHEN},
        }
    )
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "private_metadata": form.context.to_metadata(),
        "title": _plain(messages.FORM_TITLE),
        "submit": _plain(messages.FORM_SUBMIT),
        "close": _plain(messages.FORM_CANCEL),
        "blocks": blocks,
    }


def _param_blocks(template: TemplateOption) -> list[dict[str, Any]]:
    """One input per template parameter, in order (WhatsApp: one line, at most 1,024 characters)."""
    blocks = []
    for i, (name, description) in enumerate(template.params[:40]):
        block: dict[str, Any] = {
            "type": "input",
            "block_id": param_block(template.alias, i),
            "dispatch_action": True,
            "label": _plain(messages.form_param_label(i, name)[:2000]),
            "element": {
                "type": "plain_text_input",
                "action_id": PARAM,
                "max_length": PARAM_LIMIT,
                "dispatch_action_config": {"trigger_actions_on": ["on_character_entered"]},
            },
        }
        if description:
            block["hint"] = _plain(description[:2000])
        blocks.append(block)
    return blocks


def _message_block(form: ComposeForm) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": MESSAGE,
        "multiline": True,
        "max_length": MESSAGE_MAX,
        "dispatch_action_config": {"trigger_actions_on": ["on_character_entered"]},
    }
    if form.text:
        message["initial_value"] = fit_to_field(form.text)[0]
    message_block: dict[str, Any] = {
        "type": "input",
        "block_id": MESSAGE,
        "dispatch_action": True,
        "label": _plain(messages.FORM_MESSAGE),
        "element": message,
    }
    if form.context.cut_from is not None:
        message_block["hint"] = _plain(messages.cut_notice(form.context.cut_from, MESSAGE_MAX))
    return message_block


def read_values(values: Mapping[str, Any]) -> ComposeValues:
    """The user's entries from the view's ``state.values``; missing or malformed parts read as empty."""

    def get(block: str, action: str) -> dict[str, Any]:
        found = (values.get(block) or {}).get(action)
        return found if isinstance(found, dict) else {}

    via_value = (get(VIA, VIA).get("selected_option") or {}).get("value")
    via = Via(via_value) if isinstance(via_value, str) and via_value in {v.value for v in Via} else None
    kind = (get(KIND, KIND).get("selected_option") or {}).get("value")
    template = None
    if isinstance(kind, str) and kind.startswith(TEMPLATE_OPTION) and via is Via.WHATSAPP:
        template = kind.removeprefix(TEMPLATE_OPTION)
    sender = None
    for v in Via:
        chosen = (
            get(sender_block(v, template if v is Via.WHATSAPP else None), "sender").get("selected_option") or {}
        ).get("value")
        if chosen and (via is None or v is via):
            sender = chosen
    params: list[str] = []
    if template is not None:
        i = 0
        while param_block(template, i) in values:
            params.append(get(param_block(template, i), PARAM).get("value") or "")
            i += 1
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
        template=template,
        params=tuple(params),
    )
