"""Slack's Block Kit limits in one place, checked as Slack checks them, for the fake Slack and for tests.

``problems(blocks)`` and ``view_problems(view)`` list what Slack would refuse, each worded as Slack words it:
``"must be less than 3001 characters [json-pointer:/blocks/1/text/text]"``. Where slack_sdk's Block Kit models know a
block, they check it too (``Block.parse(...).to_dict()`` validates, ``View(...).to_dict()`` likewise) and report what
our table misses. Limits: https://docs.slack.dev/reference/block-kit (blocks, block elements, composition objects,
views); Slack's wording: the ``invalid_blocks`` / ``invalid_arguments`` answers quoted in the fake's docstring.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

Surface = Literal["message", "modal", "home"]

# Per message / view
MESSAGE_BLOCKS = 50
VIEW_BLOCKS = 100
MESSAGE_TEXT = 40_000  # chat.* `text` over it: msg_too_long
MESSAGE_BLOCKS_TEXT = 12_000  # all the text in a message's blocks together: msg_blocks_too_long (see blocks_text)
VIEW_BYTES = 250_000  # the view's JSON: view_too_large
# Views
VIEW_TITLE = 24  # title, submit and close
PRIVATE_METADATA = 3_000
CALLBACK_ID = 255
EXTERNAL_ID = 255
# Blocks
ID = 255  # block_id, action_id
TEXT = 3_000  # any text object, unless a smaller limit below applies (section text included)
SECTION_FIELDS = 10
FIELD_TEXT = 2_000
HEADER_TEXT = 150
MARKDOWN_TEXT = 12_000
CONTEXT_ELEMENTS = 10
ACTIONS_ELEMENTS = 25
LABEL = 2_000  # input label and hint
IMAGE_URL = 3_000
ALT_TEXT = 2_000
# Elements
BUTTON_TEXT = 75
BUTTON_VALUE = 2_000
URL = 3_000
PLACEHOLDER = 150
OPTIONS = 100  # options and option_groups of a select
OPTION_TEXT = 75  # option text and description, option group label
OPTION_VALUE = 150
INPUT_MAX_LENGTH = 3_000  # plain_text_input max_length and initial_value

VIEW_TYPES = {"modal", "home"}


def too_long(limit: int, pointer: str) -> str:
    return f"must be less than {limit + 1} characters [json-pointer:{pointer}]"


def too_many(limit: int, pointer: str) -> str:
    return f"no more than {limit} items allowed [json-pointer:{pointer}]"


def empty(pointer: str) -> str:
    return f"must be more than 0 characters [json-pointer:{pointer}]"


def problems(blocks: Any, *, surface: Surface = "message", pointer: str = "/blocks") -> list[str]:
    """What Slack would refuse in ``blocks`` posted on ``surface`` (empty: nothing)."""
    if not isinstance(blocks, list):
        return [f"must be an array [json-pointer:{pointer}]"]
    found: list[str] = []
    limit = MESSAGE_BLOCKS if surface == "message" else VIEW_BLOCKS
    if len(blocks) > limit:
        found.append(too_many(limit, pointer))
    for i, block in enumerate(blocks):
        at = f"{pointer}/{i}"
        own = _block(block, at)
        found += own or _slack_sdk_block(block, at)
    return found


def view_problems(view: Any, *, pointer: str = "/view") -> list[str]:
    """What Slack would refuse in a modal or App Home ``view`` (views.open/push/update/publish)."""
    if not isinstance(view, dict):
        return [f"must be an object [json-pointer:{pointer}]"]
    found: list[str] = []
    kind = view.get("type")
    if kind not in VIEW_TYPES:
        found.append(f"must be one of modal, home [json-pointer:{pointer}/type]")
    if kind == "modal" and not isinstance(view.get("title"), dict):
        found.append(f"missing required field: title [json-pointer:{pointer}]")
    for key in ("title", "submit", "close"):
        if key in view:
            if kind == "home":
                found.append(f"invalid additional property: {key} [json-pointer:{pointer}]")
            found += _text(view[key], f"{pointer}/{key}", VIEW_TITLE)
    found += _string(view, "private_metadata", pointer, PRIVATE_METADATA)
    found += _string(view, "callback_id", pointer, CALLBACK_ID)
    found += _string(view, "external_id", pointer, EXTERNAL_ID)
    surface: Surface = "home" if kind == "home" else "modal"
    found += problems(view.get("blocks", []), surface=surface, pointer=f"{pointer}/blocks")
    if not found:
        found += _slack_sdk_view(view, pointer)
    return found


def blocks_text(blocks: Any) -> int:
    """All the characters of every ``text`` string in ``blocks``: what Slack's undocumented cumulative limit counts.

    Slack refuses a message whose blocks hold too much text with ``msg_blocks_too_long`` (slackapi/bolt-js#2509:
    refused at ~13,300 characters; Slack's answer there: "12,000 text characters with a buffer for block
    containers"). 12,000 or fewer is always accepted."""
    return sum(len(text) for text in _texts(blocks))


def assert_valid_blocks(blocks: Any, *, surface: Surface = "message") -> None:
    """Fail the test if Slack would refuse ``blocks`` on ``surface``."""
    found = problems(blocks, surface=surface)
    if surface == "message" and blocks_text(blocks) > MESSAGE_BLOCKS_TEXT:
        found.append(f"msg_blocks_too_long: {blocks_text(blocks)} characters of text in blocks")
    assert not found, "Slack would refuse these blocks:\n" + "\n".join(found)


def assert_valid_view(view: Any) -> None:
    """Fail the test if Slack would refuse ``view``."""
    found = view_problems(view)
    if len(json.dumps(view)) > VIEW_BYTES:
        found.append("view_too_large")
    assert not found, "Slack would refuse this view:\n" + "\n".join(found)


# ------------------------------------------------------------------ blocks


def _block(block: Any, at: str) -> list[str]:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return [f"missing required field: type [json-pointer:{at}]"]
    found = _string(block, "block_id", at, ID)
    kind = block["type"]
    if kind == "section":
        if "text" not in block and "fields" not in block:
            found.append(f"missing required field: text [json-pointer:{at}]")
        if "text" in block:
            found += _text(block["text"], f"{at}/text", TEXT)
        fields = block.get("fields")
        if fields is not None:
            found += _list(fields, f"{at}/fields", SECTION_FIELDS)
            for j, item in enumerate(fields if isinstance(fields, list) else []):
                found += _text(item, f"{at}/fields/{j}", FIELD_TEXT)
        if "accessory" in block:
            found += _element(block["accessory"], f"{at}/accessory")
    elif kind == "header":
        found += _text(block.get("text"), f"{at}/text", HEADER_TEXT)
    elif kind == "markdown":
        found += _string(block, "text", at, MARKDOWN_TEXT, required=True)
    elif kind == "context":
        elements = block.get("elements")
        found += _list(elements, f"{at}/elements", CONTEXT_ELEMENTS, required=True)
        for j, element in enumerate(elements if isinstance(elements, list) else []):
            if isinstance(element, dict) and element.get("type") == "image":
                found += _image(element, f"{at}/elements/{j}")
            else:
                found += _text(element, f"{at}/elements/{j}", TEXT)
    elif kind == "actions":
        elements = block.get("elements")
        found += _list(elements, f"{at}/elements", ACTIONS_ELEMENTS, required=True)
        for j, element in enumerate(elements if isinstance(elements, list) else []):
            found += _element(element, f"{at}/elements/{j}")
    elif kind == "input":
        found += _text(block.get("label"), f"{at}/label", LABEL)
        if "hint" in block:
            found += _text(block["hint"], f"{at}/hint", LABEL)
        found += _element(block.get("element"), f"{at}/element")
    elif kind == "image":
        found += _image(block, at)
        if "title" in block:
            found += _text(block["title"], f"{at}/title", ALT_TEXT)
    # divider, rich_text and the rest: no per-block limit of their own (rich_text counts in blocks_text)
    return found


def _element(element: Any, at: str) -> list[str]:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return [f"missing required field: type [json-pointer:{at}]"]
    found = _string(element, "action_id", at, ID)
    kind = element["type"]
    if "placeholder" in element:
        found += _text(element["placeholder"], f"{at}/placeholder", PLACEHOLDER)
    if kind == "button":
        found += _text(element.get("text"), f"{at}/text", BUTTON_TEXT)
        found += _string(element, "value", at, BUTTON_VALUE)
        found += _string(element, "url", at, URL)
    elif kind == "image":
        found += _image(element, at)
    elif kind == "plain_text_input":
        found += _string(element, "initial_value", at, INPUT_MAX_LENGTH)
        if isinstance(element.get("max_length"), int) and element["max_length"] > INPUT_MAX_LENGTH:
            found.append(f"must be less than or equal to {INPUT_MAX_LENGTH} [json-pointer:{at}/max_length]")
    for key in ("options", "option_groups"):
        if key in element:
            found += _list(element[key], f"{at}/{key}", OPTIONS)
    for j, option in enumerate(element.get("options") or []):
        found += _option(option, f"{at}/options/{j}")
    for g, group in enumerate(element.get("option_groups") or []):
        found += _text(
            group.get("label") if isinstance(group, dict) else None, f"{at}/option_groups/{g}/label", OPTION_TEXT
        )
        options = group.get("options") if isinstance(group, dict) else None
        found += _list(options, f"{at}/option_groups/{g}/options", OPTIONS)
        for j, option in enumerate(options if isinstance(options, list) else []):
            found += _option(option, f"{at}/option_groups/{g}/options/{j}")
    for j, option in enumerate(element.get("initial_options") or []):
        found += _option(option, f"{at}/initial_options/{j}")
    if "initial_option" in element:
        found += _option(element["initial_option"], f"{at}/initial_option")
    return found


def _option(option: Any, at: str) -> list[str]:
    if not isinstance(option, dict):
        return [f"must be an object [json-pointer:{at}]"]
    found = _text(option.get("text"), f"{at}/text", OPTION_TEXT)
    found += _string(option, "value", at, OPTION_VALUE)
    if "description" in option:
        found += _text(option["description"], f"{at}/description", OPTION_TEXT)
    return found


def _image(image: dict[str, Any], at: str) -> list[str]:
    return _string(image, "image_url", at, IMAGE_URL) + _string(image, "alt_text", at, ALT_TEXT, required=True)


# ------------------------------------------------------------------ composition objects and strings


def _text(text: Any, at: str, limit: int) -> list[str]:
    """A text object: ``{"type": "plain_text" | "mrkdwn", "text": ...}`` of 1 to ``limit`` characters."""
    if not isinstance(text, dict):
        return [f"must be a text object [json-pointer:{at}]"]
    if text.get("type") not in ("plain_text", "mrkdwn"):
        return [f"must be one of plain_text, mrkdwn [json-pointer:{at}/type]"]
    return _string(text, "text", at, limit, required=True)


def _string(holder: dict[str, Any], key: str, at: str, limit: int, *, required: bool = False) -> list[str]:
    value = holder.get(key)
    if value is None:
        return [f"missing required field: {key} [json-pointer:{at}]"] if required else []
    if not isinstance(value, str):
        return [f"must be a string [json-pointer:{at}/{key}]"]
    if len(value) > limit:
        return [too_long(limit, f"{at}/{key}")]
    if required and not value:
        return [empty(f"{at}/{key}")]
    return []


def _list(items: Any, at: str, limit: int, *, required: bool = False) -> list[str]:
    if items is None:
        return [f"missing required field [json-pointer:{at}]"] if required else []
    if not isinstance(items, list):
        return [f"must be an array [json-pointer:{at}]"]
    return [too_many(limit, at)] if len(items) > limit else []


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                yield item
            else:
                yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


# ------------------------------------------------------------------ slack_sdk's models, a second opinion


class _Quiet(logging.Filter):
    """Drops slack_sdk's "unknown block/attribute" warnings while we validate (they would reach tests' caplog)."""

    active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.active, "on", False)


_QUIET = _Quiet()
for _name in (
    "slack_sdk.models",
    "slack_sdk.models.blocks.blocks",
    "slack_sdk.models.blocks.block_elements",
    "slack_sdk.models.blocks.basic_components",
    "slack_sdk.models.views",
):
    logging.getLogger(_name).addFilter(_QUIET)


@contextmanager
def _quiet() -> Iterator[None]:
    _Quiet.active.on = True
    try:
        yield
    finally:
        _Quiet.active.on = False


def _slack_sdk_block(block: Any, at: str) -> list[str]:
    """slack_sdk's validators, for a block our table found nothing in. A block type or detail slack_sdk does not
    know (it skips unknown blocks, and may trip over newer rich_text shapes) is left to our checks alone."""
    with _quiet():
        try:
            parsed = Block.parse(block)
            if parsed is not None:
                parsed.to_dict()  # validates the block and everything in it
        except SlackObjectFormationError as exc:
            return [f"{exc} (slack_sdk) [json-pointer:{at}]"]
        except (TypeError, KeyError, AttributeError, ValueError):
            return []
    return []


def _slack_sdk_view(view: dict[str, Any], at: str) -> list[str]:
    fields = {k: v for k, v in view.items() if k not in ("id", "hash", "state", "team_id", "app_id", "bot_id")}
    with _quiet():
        try:
            View(**fields).to_dict()
        except SlackObjectFormationError as exc:
            return [f"{exc} (slack_sdk) [json-pointer:{at}]"]
        except (TypeError, KeyError, AttributeError, ValueError):
            return []
    return []
