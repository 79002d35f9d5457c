"""Approved WhatsApp templates: what the policy says about each, how a send fills one in, and WhatsApp's rules for
its parameters.

WhatsApp delivers free-form text only inside the 24-hour customer-service window (the person wrote to the business
number in the last 24 hours); anything the business starts needs a template Meta approved. D7 sends one as
``content: {message_type: "TEMPLATE", template: {template_id, language, body_parameter_values: {"0": …}}}``: the
values fill the template's ``{{1}}``, ``{{2}}``… in order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from bot.domain import patterns

PARAM_LIMIT = 1024  # characters in one body parameter (Meta's limit)
_PLACEHOLDER = re.compile(r"\{\{\s*(\d+)\s*\}\}")
_SPACES = patterns.compile(r" {5,}")  # over alert text too: linear time (RE2)
_PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(?:_[A-Z]{2})?$")
# D7's reason when Meta refused free text outside the 24-hour window: its code 131047, "Re-engagement message".
_WINDOW_CLOSED = re.compile(r"\b131047\b|re-?engagement|24[- ]?hours? (?:have )?passed", re.IGNORECASE)

TemplateId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=512)]


class TemplateParam(BaseModel):
    """One body parameter: a short name (``title``) and what to put in it, for the form and ``help``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _PARAM_NAME.match(value):
            raise ValueError(f"'{value}' is not a parameter name (lower-case letters, digits and _)")
        return value


class Template(BaseModel):
    """An approved template a WhatsApp sender may use: D7's ``template_id``, its ``language``, its body parameters
    in order and (for a faithful preview) its text with ``{{1}}``… placeholders."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template_id: TemplateId
    language: str
    params: list[TemplateParam] = Field(default_factory=list)
    text: str | None = None

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, value: Any) -> Any:
        """``[title, link]`` or ``[{name: title, description: "…"}]``, or ``{title: "…", link: "…"}``."""
        if isinstance(value, dict):
            return [{"name": k, "description": v or ""} for k, v in value.items()]
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        if not _LANGUAGE.match(value):
            raise ValueError(f"'{value}' is not a WhatsApp language code (en, en_US, pt_BR)")
        return value

    @model_validator(mode="after")
    def _placeholders(self) -> Template:
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError("two parameters have the same name")
        if self.text is not None:
            found = sorted({int(n) for n in _PLACEHOLDER.findall(self.text)})
            wanted = list(range(1, len(self.params) + 1))
            if found != wanted:
                shown = ", ".join("{{" + str(n) + "}}" for n in wanted) or "none"
                raise ValueError(f"text must use the placeholders {shown}, one for each of params")
        return self

    def render(self, values: Sequence[str], alias: str) -> str:
        """The text the phone shows: ``text`` filled in, or (without ``text``) the alias and the values."""
        if self.text is None:
            return f"[{alias}] " + " | ".join(values)
        return _PLACEHOLDER.sub(lambda m: values[int(m.group(1)) - 1], self.text)


@dataclass(frozen=True)
class TemplateUse:
    """A send of template ``alias`` (as the policy names it) with these parameter values, in order."""

    alias: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class OutgoingTemplate:
    """What D7 needs: the template's id, its language and the values in order."""

    template_id: str
    language: str
    values: tuple[str, ...]

    def body_parameter_values(self) -> dict[str, str]:
        return {str(i): v for i, v in enumerate(self.values)}


def param_problem(name: str, value: str) -> str | None:
    """Why WhatsApp would refuse ``value`` as a body parameter, naming the parameter; None when it is fine."""
    if not value.strip():
        return f"the template parameter '{name}' is empty"
    if "\n" in value or "\r" in value or "\t" in value:
        return f"the template parameter '{name}' has a line break or tab; WhatsApp allows neither in a parameter"
    if _SPACES.search(value):
        return f"the template parameter '{name}' has more than 4 spaces in a row; WhatsApp allows at most 4"
    if len(value) > PARAM_LIMIT:
        return f"the template parameter '{name}' has {len(value)} characters; WhatsApp allows at most {PARAM_LIMIT}"
    return None


def fit_param(value: str, limit: int = PARAM_LIMIT) -> str:
    """``value`` made a valid parameter (for alerts: their text is not typed for WhatsApp): line breaks and tabs as
    spaces, at most 4 spaces in a row, cut to ``limit`` characters with "…"; "-" when nothing is left."""
    flat = " ".join(value.replace("\r", " ").replace("\t", " ").split("\n"))
    flat = _SPACES.sub(lambda m: "    ", flat).strip()
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return flat or "-"


def window_closed(reason: str | None) -> bool:
    """Whether a failed WhatsApp message failed because the person had not written in the last 24 hours."""
    return bool(reason and _WINDOW_CLOSED.search(reason))
