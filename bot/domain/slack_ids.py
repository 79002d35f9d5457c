"""Slack's ID shapes, in one place: what the policy file and the workflow step accept as a conversation, channel,
user, user group or bot. (Patterns that find ``<@U…>`` markup inside a text live with the code that reads it.)"""

from __future__ import annotations

import re

CONVERSATION_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")  # a channel, a private channel or a direct message
CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{2,}$")  # a public or private channel: somewhere the bot can post
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")  # W…: a user of an Enterprise Grid organisation
USERGROUP_ID = re.compile(r"^S[A-Z0-9]{2,}$")
BOT_ID = re.compile(r"^B[A-Z0-9]{2,}$")
