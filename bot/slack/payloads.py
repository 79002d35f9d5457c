"""Slack payloads as typed values: raw JSON is checked here, at the edge, and nowhere else.

Each model declares only what the app reads; Slack's other fields are ignored (it adds new ones over time).
Free-form message content (text, attachments, blocks, a modal's state) stays as Slack wrote it: ``flatten`` and
``compose.read_values`` read it leniently, and alerts store it to render it later.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.domain.models import Origin, Surface


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class SlashCommand(_Payload):
    """What Slack posts for ``/sms`` and ``/whatsapp``."""

    command: str
    text: str = ""
    team_id: str = Field(min_length=1)
    user_id: str = Field(min_length=1)
    channel_id: str = Field(min_length=1)
    channel_name: str | None = None
    trigger_id: str = Field(min_length=1)
    response_url: str | None = None

    def origin(self) -> Origin:
        """Where the command was typed: its story is told there (and through its response_url)."""
        return Origin(Surface.COMMAND, self.team_id, self.user_id, self.channel_id, response_url=self.response_url)


class Ref(_Payload):
    """``{"id": "T…"}``: how interaction payloads name a team, a user or a channel."""

    id: str = Field(min_length=1)


class Trigger(_Payload):
    """What is left to answer with when the rest of an interaction payload is unusable: a modal can still open."""

    trigger_id: str = Field(min_length=1)


class GlobalShortcut(_Payload):
    """The "Send a text" global shortcut (``send_text``): from anywhere, so no channel."""

    trigger_id: str = Field(min_length=1)
    team: Ref
    user: Ref


class ShortcutTarget(_Payload):
    """Where the forwarded message sits: the result goes in its thread."""

    ts: str = Field(min_length=1)
    thread_ts: str | None = None


class MessageShortcut(_Payload):
    """The "Text this message" message shortcut (``text_this_message``) on a message in a conversation."""

    trigger_id: str = Field(min_length=1)
    team: Ref
    user: Ref
    channel: Ref
    response_url: str | None = None
    message: dict[str, Any]  # free-form: flattened as Slack wrote it
    target: ShortcutTarget  # the same message, read for where it sits

    @model_validator(mode="before")
    @classmethod
    def _read_message_twice(cls, data: Any) -> Any:
        if isinstance(data, dict) and "message" in data:
            return {**data, "target": data["message"]}
        return data

    @property
    def thread_ts(self) -> str:
        """The thread the result goes in: the message's own thread, or the one it starts."""
        return self.target.thread_ts or self.target.ts


class ViewState(_Payload):
    # block id → action id → the element's state; free-form, read leniently by ``compose.read_values``.
    values: dict[str, Any] = Field(default_factory=dict)


class ModalView(_Payload):
    """A modal as Slack sends it back: its id and hash (for ``views.update``), our metadata, what was entered."""

    id: str = Field(min_length=1)
    hash: str | None = None
    private_metadata: str = ""
    state: ViewState = Field(default_factory=ViewState)


class ResponseUrl(_Payload):
    """A response_url Slack made for the conversation picked in a modal (``response_url_enabled``)."""

    block_id: str
    action_id: str
    channel_id: str
    response_url: str = Field(min_length=1)


class ViewSubmission(_Payload):
    """The compose modal submitted (``view_submission``, callback_id ``compose``)."""

    view: ModalView
    response_urls: list[ResponseUrl] = Field(default_factory=list)

    @field_validator("response_urls", mode="before")
    @classmethod
    def _usable_response_urls(cls, value: Any) -> Any:
        # An extra the form can do without: entries Slack wrote some other way are left out, not a broken form.
        if not isinstance(value, list):
            return []
        usable = []
        for item in value:
            try:
                usable.append(ResponseUrl.model_validate(item))
            except ValidationError:
                continue
        return usable

    def response_url(self, block_id: str, channel_id: str | None) -> str | None:
        """The response_url for ``channel_id`` picked in the block ``block_id``, if Slack made one."""
        for found in self.response_urls:
            if found.block_id == block_id and found.channel_id == channel_id:
                return found.response_url
        return None


class ClickedAction(_Payload):
    action_id: str
    value: str = ""


class ClickedIn(_Payload):
    ts: str = Field(min_length=1)
    thread_ts: str | None = None


class ButtonClick(_Payload):
    """A button on one of the bot's messages (``block_actions`` from a message, not a modal). On an ephemeral
    message (what only its requester sees, when the bot could not post in the channel) Slack sends no ``message``."""

    trigger_id: str = Field(min_length=1)
    team: Ref
    user: Ref
    channel: Ref
    message: ClickedIn | None = None
    actions: list[ClickedAction] = Field(min_length=1)
    response_url: str | None = None

    @property
    def thread_ts(self) -> str | None:
        """The thread of the message clicked in (None: an ephemeral message, which has none of its own)."""
        return (self.message.thread_ts or self.message.ts) if self.message is not None else None


class BlockActions(_Payload):
    """Typing or choosing in the compose modal (``block_actions`` from a ``dispatch_action`` input)."""

    view: ModalView


class BotProfile(_Payload):
    id: str | None = None


class MessageEvent(_Payload):
    """A ``message`` event: any post, edit or deletion in a conversation the app is in. Most are not alerts."""

    type: str = ""
    subtype: str | None = None
    hidden: bool = False
    channel: str | None = None
    ts: str | None = None
    thread_ts: str | None = None
    user: str | None = None
    user_team: str | None = None  # the author's workspace: another one's in a Slack Connect channel
    bot_id: str | None = None
    bot_profile: BotProfile | None = None
    username: str | None = None
    # Free-form content, as Slack wrote it: flattened into an alert's text and kept to render it at send time.
    text: str | None = None
    attachments: list[dict[str, Any]] | None = None
    blocks: list[dict[str, Any]] | None = None
    message: dict[str, Any] | None = None  # message_changed: the message as it is now
    previous_message: dict[str, Any] | None = None  # message_changed: as it was

    def sent_fields(self, names: Iterable[str]) -> dict[str, Any]:
        """The named fields that Slack sent (those it left out stay out), as plain JSON values, in ``names``' order."""
        sent = self.model_dump(exclude_unset=True)
        return {name: sent[name] for name in names if name in sent}


class MessageEventCallback(_Payload):
    """The Events API envelope (``event_callback``) around a ``message`` event."""

    team_id: str = ""
    event_id: str | None = None
    event: MessageEvent


class ReactedItem(_Payload):
    """What a reaction was added to: a message (``type: message``) in a channel."""

    type: str = "message"
    channel: str = Field(min_length=1)
    ts: str = Field(min_length=1)


class ReactionAdded(_Payload):
    """A ``reaction_added`` event: ``user`` added ``reaction`` (an emoji's name) to ``item``."""

    user: str = Field(min_length=1)
    reaction: str = Field(min_length=1)
    item: ReactedItem


class ReactionCallback(_Payload):
    """The Events API envelope around a ``reaction_added`` event."""

    event: ReactionAdded


class HomeOpened(_Payload):
    """An ``app_home_opened`` event: ``tab`` is ``home`` (or absent, from older clients) or ``messages``."""

    user: str = Field(min_length=1)
    tab: str | None = None


class HomeOpenedCallback(_Payload):
    event: HomeOpened


class HomeButtonClick(_Payload):
    """The App Home's "Send a text…" button (``block_actions`` from the Home tab: no channel, no message)."""

    trigger_id: str = Field(min_length=1)
    team: Ref
    user: Ref


class CodeSubmission(_Payload):
    """The "Verify your phone" modal submitted (``view_submission``): who submitted it (Slack signs it) and the form."""

    user: Ref
    view: ModalView


class StepExecuted(_Payload):
    """A ``function_executed`` event for the app's workflow step: its inputs stay as Slack sent them, read (and
    refused with a reason the workflow shows) by ``steps.step_request``."""

    function_execution_id: str = Field(min_length=1)
    workflow_execution_id: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)


class StepCallback(_Payload):
    """The Events API envelope around a ``function_executed`` event."""

    team_id: str = ""
    event: StepExecuted
