"""Alerts as Slack posts them: which message events are alerts, and the request each one becomes.

A monitoring tool's post arrives as a ``message`` event (classic ``bot_message`` with attachments, or a modern
bot post with blocks). ``alert_request`` decides, without calling Slack (it runs before the ack), whether a rule
of the policy takes it, and builds the intent recorded under ``alert:<channel>:<ts>``, so Slack's retries and
duplicate deliveries of one message can never text twice; the listener validated the event
(``payloads.MessageEvent``) once. ``facts_of`` applies the same rules to a raw message (the CLI reads one from a
file). ``SlackMessageReader`` turns the stored message into the text the rule's template gets, at send time, with
the names of mentioned people looked up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.domain import keys
from bot.domain.alerts import (
    AlertFacts,
    Author,
    fingerprint,
    identity,
    match_alert,
    match_resolution,
    resolving_rules,
    targets_as_refs,
)
from bot.domain.models import AlertResolution, FiringAlert, Origin, RecipientRef, SendRequest, Surface
from bot.domain.policy import AlertRule, Policy
from bot.domain.ports import Directory
from bot.slack.flatten import capped, flatten, mentioned_users
from bot.slack.markup import strip_mrkdwn, to_plain_text, without_shortcodes
from bot.slack.payloads import MessageEvent
from bot.slack.reading import for_phone

log = logging.getLogger("bot.slack.alerts")

# Subtypes that are new posts; everything else (edits, deletions, joins, topic changes…) is not an alert.
NEW_POST_SUBTYPES = frozenset({None, "bot_message", "file_share", "thread_broadcast"})
# What is kept of a message to render it later (not reactions, files, edit history…).
KEPT_FIELDS = ("ts", "thread_ts", "text", "attachments", "blocks", "bot_id", "user", "username", "subtype")


def author_of(event: Mapping[str, Any]) -> Author:
    bot_id = event.get("bot_id") or (event.get("bot_profile") or {}).get("id")
    return Author(user_id=event.get("user"), bot_id=bot_id)


def is_thread_reply(event: Mapping[str, Any]) -> bool:
    """A reply seen only in its thread; one also sent to the channel (``thread_broadcast``) is a post like any."""
    thread_ts = event.get("thread_ts")
    return bool(thread_ts) and thread_ts != event.get("ts") and event.get("subtype") != "thread_broadcast"


def alert_text(message: Mapping[str, Any], names: Mapping[str, str] | None = None) -> str:
    """The message as an alert text: flattened (at most ``flatten.MAX_TEXT`` characters, cut before any pattern reads
    it), without mrkdwn marks and emoji shortcodes, lines trimmed, read as a phone should (``reading.for_phone``)."""
    return for_phone(strip_mrkdwn(without_shortcodes(flatten(message, names))))


def facts_of(event: Mapping[str, Any], channel_id: str | None = None) -> AlertFacts:
    return AlertFacts(
        channel_id=channel_id or str(event.get("channel") or ""),
        author=author_of(event),
        text=alert_text(event),
        thread_reply=is_thread_reply(event),
    )


def recipient_refs(rule: AlertRule) -> tuple[RecipientRef, ...]:
    """The rule's ``to`` (already normalised by the policy: E.164, group:NAME or S…) as recipient references."""
    return targets_as_refs(rule.to)


def alert_request(
    event: MessageEvent,
    team_id: str,
    policy: Policy,
    own_ids: frozenset[str],
) -> tuple[AlertRule, SendRequest] | None:
    """The intent this message event asks for, or None when it is not an alert for any rule.

    ``own_ids``: the bot's own user and bot IDs; its own posts (results in alert threads) never loop back.
    """
    if event.type != "message":
        return None
    if event.subtype == "message_changed":  # hidden, as Slack sends edits: only a firing post edited to resolved
        return _edited_to_resolved(event, team_id, policy, own_ids)
    if event.subtype not in NEW_POST_SUBTYPES or event.hidden:
        return None
    channel, ts = event.channel, event.ts
    if not channel or not ts:
        return None
    # The same rules as for a message read from a file, over what the validated event carries.
    seen = event.sent_fields((*KEPT_FIELDS, "bot_profile"))
    author = author_of(seen)
    if author.ids & own_ids:
        return None
    if not any(channel in rule.slack_channels for rule in policy.alerts):
        return None  # cheap exit for the channels no rule watches
    facts = facts_of(seen, channel)
    message = {k: seen[k] for k in KEPT_FIELDS if k in seen}
    title = title_of(message, facts.text)
    if (resolving := match_resolution(policy, facts, title)) is not None:
        # A reply in the alert's thread ends that alert; a top-level post ends the latest alert it is about; either
        # only when the alert's own rule takes this author's resolutions.
        thread = event.thread_ts if event.thread_ts and event.thread_ts != ts else None
        ends = keys.alert(channel, thread) if thread else None
        rules = resolving_rules(policy, facts, title)
        post = Post(team_id, channel, ts, facts.text, message, author_of(message))
        return resolving, _resolution(resolving, policy, post, keys.resolution(channel, ts), ends, rules)
    rule = match_alert(policy, facts)
    if rule is None:
        return None
    return rule, _firing(rule, policy, Post(team_id, channel, ts, facts.text, message, author), event.thread_ts, title)


@dataclass(frozen=True)
class Post:
    """The message an intent comes from: where, when, as read (``text``) and as kept (``message``)."""

    team_id: str
    channel: str
    ts: str
    text: str
    message: dict[str, Any]
    author: Author

    def origin(self, surface: Surface, thread_ts: str | None) -> Origin:
        return Origin(
            surface=surface,
            team_id=self.team_id,
            user_id=self.author.bot_id or self.author.user_id or "unknown",
            channel_id=self.channel,
            thread_ts=thread_ts or self.ts,  # the result goes in the alert's thread
        )


def _firing(rule: AlertRule, policy: Policy, post: Post, thread_ts: str | None, title: str) -> SendRequest:
    """The intent of a firing alert: the rule's phones, under the key of the post."""
    return SendRequest(
        via=policy.senders[rule.sender].via,
        origin=post.origin(Surface.ALERT, thread_ts),
        recipients=recipient_refs(rule),
        text=post.text,
        idempotency_key=keys.alert(post.channel, post.ts),
        sender=rule.sender,
        alert=FiringAlert(
            rule=rule.name,
            fingerprint=fingerprint(rule.name, post.text),
            message=post.message,
            identity=identity(title),
        ),
    )


def _resolution(
    rule: AlertRule, policy: Policy, post: Post, key: str, ends: str | None, rules: tuple[str, ...]
) -> SendRequest:
    """The intent of a resolving post: "RESOLVED" to the phones that got the alert it ends (``ends``: that alert's
    key, when known; else found by title when checked), which must be an alert of one of ``rules`` (those that take
    the post's author's resolutions)."""
    return SendRequest(
        via=policy.senders[rule.sender].via,
        origin=post.origin(Surface.RESOLVED, post.message.get("thread_ts")),
        recipients=(),
        text=post.text,
        idempotency_key=key,
        sender=rule.sender,
        alert=AlertResolution(
            rule=rule.name,
            message=post.message,
            identity=identity(title_of(post.message, post.text)),
            resolves=ends,
            rules=rules,
        ),
    )


def _edited_to_resolved(
    event: MessageEvent, team_id: str, policy: Policy, own_ids: frozenset[str]
) -> tuple[AlertRule, SendRequest] | None:
    """A firing post edited into a resolved one (``message_changed``): it resolves the alert it was."""
    edited, channel = event.message or {}, event.channel
    ts = edited.get("ts")
    if not channel or not isinstance(ts, str) or not any(channel in r.slack_channels for r in policy.alerts):
        return None
    seen = {k: edited[k] for k in (*KEPT_FIELDS, "bot_profile") if k in edited}
    if author_of(seen).ids & own_ids:
        return None
    facts = facts_of(seen, channel)
    title = title_of(seen, facts.text)
    rule = match_resolution(policy, facts, title)
    if rule is None:
        return None
    # Slack also sends message_changed for unfurls, reply counts and re-edits: only a post that said something else
    # before (a firing alert) and says resolved now ends one.
    before = event.previous_message or {}
    if before:
        earlier = {k: before[k] for k in (*KEPT_FIELDS, "bot_profile") if k in before}
        was = facts_of(earlier, channel)
        if match_resolution(policy, was, title_of(earlier, was.text)):
            return None
    message = {k: seen[k] for k in KEPT_FIELDS if k in seen}
    rules = resolving_rules(policy, facts, title)
    alert_key = keys.alert(channel, ts)
    post = Post(team_id, channel, ts, facts.text, message, author_of(message))
    return rule, _resolution(rule, policy, post, keys.edited_resolution(alert_key), alert_key, rules)


def title_of(message: Mapping[str, Any], text: str) -> str:
    """The alert's title: its first attachment's title, else its (or an attachment's) header block, else the first
    line of ``text`` (the message as ``alert_text`` read it)."""
    attachments = [a for a in message.get("attachments") or [] if isinstance(a, Mapping)]
    for attachment in attachments:
        if attachment.get("title"):
            return _title(str(attachment["title"]))
    for holder in (message, *attachments):
        for block in holder.get("blocks") or []:
            if isinstance(block, Mapping) and block.get("type") == "header" and isinstance(block.get("text"), Mapping):
                return _title(str(block["text"].get("text", "")))
    return text.splitlines()[0].strip() if text else ""


def _title(raw: str) -> str:
    return strip_mrkdwn(without_shortcodes(to_plain_text(capped(raw)))).strip()


class SlackMessageReader:
    """``MessageReader`` for Slack messages: flattened text with mentioned people's names."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    async def read(self, message: Mapping[str, Any]) -> tuple[str, str]:
        names: dict[str, str] = {}
        for user_id in sorted(mentioned_users(message)):
            try:
                names[user_id] = (await self._directory.person(user_id)).name
            except Exception as exc:  # shown as @U…: a missing name must not stop an alert
                log.warning("no name for %s in an alert: %s", user_id, exc)
        text = alert_text(message, names)
        return text, title_of(message, text)
