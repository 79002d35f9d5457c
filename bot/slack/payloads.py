"""Slack payloads as typed values: raw JSON is checked here, at the edge, and nowhere else."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
