"""Telling a request's story in Slack: refusals to the requester, a parent message, results in its thread.

Everything needed is in the stored ``Origin`` and ``Placement``, so the story continues after a restart. When the
bot cannot post in the channel it joins it if it is public; otherwise (private channel, DM) the whole story goes
to the requester privately, by the first way Slack still takes:

1. the request's ``response_url`` — Slack takes 5 posts within 30 minutes of the request, counted here;
2. ``chat.postEphemeral`` in the channel, where the bot may post;
3. the app's direct message with the requester (App Home's Messages tab), which has neither limit.

Every message fits Slack's limits (``messages``); should Slack still refuse one's blocks, its text alone is posted.
A post refused for a reason that will not change raises ``CannotTell``: the teller stops instead of retrying.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.domain.clock import Clock, utc_now
from bot.domain.delivery import RecipientDelivery
from bot.domain.errors import D7Error
from bot.domain.models import Origin, Surface
from bot.domain.ports import CannotTell, NotNow
from bot.domain.sends import NotSent, Outcome, Placement, PreparedSend, Refusal
from bot.metrics import Metrics
from bot.slack import messages
from bot.slack.compose import FORM_RESPONSE_URL_FRESH
from bot.slack.retry import retry_after_seconds

log = logging.getLogger("bot.slack")

# Errors that mean "this channel is closed to the bot", not "Slack is broken".
_CANNOT_POST = frozenset(
    {
        "not_in_channel",
        "channel_not_found",
        "is_archived",
        "restricted_action",
        "cannot_reply_to_message",
        "user_not_in_channel",
        "channel_is_archived",
        "team_access_not_granted",
    }
)
# Errors about the message itself: the same message will be refused again (its text alone may pass).
_REFUSED_MESSAGE = frozenset(
    {"invalid_blocks", "invalid_blocks_format", "msg_too_long", "invalid_arguments", "too_many_attachments"}
)
# chat.update: the message to rewrite is gone or can no longer be edited.
_CANNOT_UPDATE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed", "channel_not_found"})
# Errors that pass: the post is tried again later (by the outbox), not told privately instead.
_PASSING = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"})


def _error(exc: SlackApiError) -> str:
    return str(exc.response.get("error") or f"HTTP {exc.response.status_code}")


def closed_for_good(exc: SlackApiError) -> bool:
    """Slack refused the post for a reason that will not change: the conversation is closed to the bot, or the
    message itself is refused. Anything else (a 5xx, a 429, a missing scope or a revoked token an admin can fix)
    may work later."""
    status = int(getattr(exc.response, "status_code", 200) or 200)
    return status < 500 and status != 429 and _error(exc) in _CANNOT_POST | _REFUSED_MESSAGE


def passing(exc: BaseException) -> bool:
    """Slack failed for a reason that passes (5xx, 429, a timeout, no connection), not because of the post."""
    if not isinstance(exc, SlackApiError):
        return True
    status = int(getattr(exc.response, "status_code", 200) or 200)
    return status >= 500 or status == 429 or exc.response.get("error") in _PASSING


# Slack takes about one post a second per channel, after a short burst (docs.slack.dev, rate limits: "1 per second,
# short bursts >1 allowed"). Posts are paced ahead of that with a token bucket per channel, so a burst is told at
# Slack's own pace instead of being answered 429 and waiting out Retry-After again and again.
POSTS_PER_SECOND = 1.0
BURST = 10  # posts at once in a channel that has been quiet (what Slack lets through)
# After Slack answered 429 in a channel anyway (its burst is smaller than ours there), the burst is one post for this
# long: posts go at the channel's pace, none before the Retry-After.
CAREFUL_FOR = 60.0
# The methods the pacer paces, and how many times it tries one call that Slack answers 429 (each after its turn
# and Retry-After); the client's own 429 retries leave these methods alone.
PACED_METHODS = ("chat.postMessage", "chat.update")
PACED_ATTEMPTS = 4
# Seconds one post may wait for its turns in all; one that would wait longer is tried again when the posts ahead of
# it are gone (ChannelBusy's ``after``), freeing its worker meanwhile.
PACED_WITHIN = 30.0
# chat.update is not limited per channel but per workspace, like any Web API method of its tier (Tier 3: about 50 a
# minute, whatever the channel). Rewrites take turns in a lane of their own at that pace: a storm's result cards
# (delivery statuses) neither hold back the channels' posts nor meet the tier's 429s again and again.
UPDATES_PER_SECOND = 50 / 60
UPDATE_BURST = 20
# A rewrite does not wait for its lane: it goes now or is shown later (the teller's card retry), so a storm's
# rewrites never hold the outbox's workers that the next alerts need.
UPDATE_WITHIN = 0.0
WORKSPACE_LANES = {"chat.update": (UPDATES_PER_SECOND, UPDATE_BURST)}


@dataclass
class _Channel:
    rate: float  # posts a second; 0: not paced (only Slack's Retry-After holds the channel)
    burst: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # posts wait for their turn in order
    queued: int = 0  # posts waiting for the lock
    held_until: float = 0.0  # monotonic: Slack's Retry-After for this channel
    careful_until: float = 0.0  # monotonic: after a 429, a burst of one for a while
    tokens: float = 0.0
    filled_at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def take(self, now: float) -> float:
        """Take a post's token: 0 when taken, else the seconds until one is there."""
        if not self.rate:
            return 0.0
        room = 1.0 if now < self.careful_until else float(self.burst)
        self.tokens = min(room, self.tokens + (now - self.filled_at) * self.rate)
        self.filled_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def ahead(self, wait: float = 0.0) -> float:
        """Seconds until the posts queued now have gone, after ``wait``."""
        return wait + (self.queued / self.rate if self.rate else 1.0)


# The bot's announcement and result posts carry message metadata ``{"post": "<send_id>:<part>"}``: a post whose
# answer was lost (Slack slow, the process stopped) is looked for in the channel's history or the thread, and
# not posted again when it is there.
POST_EVENT = "d7_relay_post"
LOOK_BACK = timedelta(minutes=1)  # the channel's history is searched from this long before the request
LOOK_PAGES = 5  # pages of LOOK_LIMIT messages searched at most (1,000 messages since the request)
LOOK_LIMIT = 200


class ChannelBusy(NotNow):
    """A channel's posts are queued past what a post may wait: it is tried again when the queue ahead of it has
    gone (``after`` seconds), not after the usual backoff, so the channel keeps Slack's pace. ``method``: a method
    limited per workspace whose lane is busy (``WORKSPACE_LANES``), not the channel's posts."""

    def __init__(self, channel_id: str, after: float = 1.0, method: str | None = None) -> None:
        what = f"{method} calls" if method else "posts"
        super().__init__(f"Slack is holding {what} to {channel_id} back (rate limited); trying again later", after)


_T = TypeVar("_T")


class ChannelPacer:
    """Posts to a channel take turns at Slack's pace (``posts_per_second`` after a ``burst``), in the order they
    came, so a burst is told as fast as Slack takes it, other channels are not held up, and 429s stay rare. When
    Slack answers 429 anyway, the channel's posts wait out its ``Retry-After`` and go one at a time for a minute.
    ``run`` also waits out a post's own 429 in turn and tries it again; the client's 429 retries leave these posts
    alone (``PACED_METHODS``), as each would come back at the same instant as the others. ``posts_per_second`` 0:
    not paced ahead (a Slack-compatible API without the limit, e.g. a load test's fake); 429s are still waited out.
    One pacer serves every poster of a process: two with their own would each take Slack's whole pace.

    A method Slack limits per workspace rather than per channel (``WORKSPACE_LANES``: chat.update) takes turns in
    one lane of its own, at its tier's pace: its 429s hold that lane, never a channel's posts."""

    def __init__(self, posts_per_second: float = POSTS_PER_SECOND, burst: int = BURST) -> None:
        if posts_per_second < 0 or burst < 1:
            raise ValueError("a channel's pace is posts_per_second >= 0 (0: not paced) after a burst >= 1")
        self.posts_per_second = posts_per_second
        self.burst = burst
        self._channels: dict[str, _Channel] = {}
        self._methods: dict[str, _Channel] = {}

    async def run(
        self,
        channel_id: str,
        call: Callable[[], Awaitable[_T]],
        *,
        method: str = "chat.postMessage",
        within: float = PACED_WITHIN,
    ) -> _T:
        """``call()`` (a ``method`` call in ``channel_id``) in its turn; a 429 is waited out in turn (its
        Retry-After) and tried again. Waiting for turns has ``within`` seconds in all: past it, ``ChannelBusy``
        (the call is tried again later, and the worker is free for other channels' sends meanwhile)."""
        until = time.monotonic() + within
        for attempt in range(1, PACED_ATTEMPTS + 1):
            try:
                async with self.turn(channel_id, until, method=method):
                    return await call()
            except SlackApiError as exc:
                if exc.response.status_code != 429 or attempt == PACED_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _lane(self, channel_id: str, method: str) -> _Channel:
        """The channel's lane, or the workspace's lane of a method limited per workspace."""
        if method in WORKSPACE_LANES:
            lane = self._methods.get(method)
            if lane is None:
                rate, burst = WORKSPACE_LANES[method]
                lane = self._methods[method] = _Channel(rate if self.posts_per_second else 0.0, burst)
            return lane
        channel = self._channels.get(channel_id)
        if channel is None:
            channel = self._channels[channel_id] = _Channel(self.posts_per_second, self.burst)
        return channel

    @asynccontextmanager
    async def turn(
        self, channel_id: str, until: float | None = None, *, method: str = "chat.postMessage"
    ) -> AsyncIterator[None]:
        """The channel's turn to post; ``until`` (monotonic): give up waiting for it then (``ChannelBusy``). The
        turn is only the start: the post itself does not hold the next one back (they overlap in flight)."""
        channel = self._lane(channel_id, method)
        lane = method if method in WORKSPACE_LANES else None
        channel.queued += 1
        try:
            async with asyncio.timeout(None if until is None else max(0.0, until - time.monotonic())):
                await channel.lock.acquire()
        except TimeoutError:
            raise ChannelBusy(channel_id, channel.ahead(), lane) from None
        finally:
            channel.queued -= 1
        try:
            # A time to wait for, not an event: a 429 meanwhile (an earlier post's retry) only moves it later.
            while True:
                now = time.monotonic()
                wait = channel.held_until - now
                if wait <= 0 and (wait := channel.take(now)) <= 0:
                    break
                if until is not None and now + wait > until:
                    raise ChannelBusy(channel_id, channel.ahead(wait), lane)
                await asyncio.sleep(wait)
        finally:
            channel.lock.release()
        async with self._watching(channel):
            yield

    @staticmethod
    @asynccontextmanager
    async def _watching(channel: _Channel) -> AsyncIterator[None]:
        try:
            yield
        except SlackApiError as exc:
            if exc.response.status_code == 429:
                channel.held_until = time.monotonic() + retry_after_seconds(
                    (exc.response.headers or {}).get("Retry-After")
                )
                channel.careful_until = time.monotonic() + CAREFUL_FOR
                channel.tokens = 0.0
            raise


# Slack's response_url: 5 posts within 30 minutes of the request. A minute of margin: a post that leaves at 29:59
# arrives after 30:00.
RESPONSE_URL_USES = 5
RESPONSE_URL_LIFE = timedelta(minutes=30)
RESPONSE_URL_MARGIN = timedelta(minutes=1)
RESPONSE_URL_TIMEOUT = 10.0  # seconds for one post to a response_url
# A submitted form's response_url may be the one of the command that opened it, issued up to this long before.
FORM_AGE = timedelta(seconds=FORM_RESPONSE_URL_FRESH)


class ResponseUrls:
    """How many times this process used each ``response_url``. In memory: after a restart (or on another
    replica) a used-up URL is refused by Slack and the requester is written to directly instead."""

    def __init__(self, clock: Clock = utc_now) -> None:
        self._clock = clock
        self._uses: dict[str, tuple[int, datetime]] = {}  # url → (posts, first seen)

    def take(self, url: str | None, received_at: datetime | None, older_by: timedelta = timedelta(0)) -> bool:
        """True (one use counted) when ``url`` may take one more post now; ``older_by``: how much earlier than
        ``received_at`` it may have been issued (a form's own response_url: when the form opened)."""
        if not url:
            return False
        now = self._clock()
        for old in [u for u, (_, seen) in self._uses.items() if now - seen > RESPONSE_URL_LIFE]:
            del self._uses[old]
        uses, seen = self._uses.get(url, (0, now))
        issued = received_at or seen
        if uses >= RESPONSE_URL_USES or now - issued >= RESPONSE_URL_LIFE - RESPONSE_URL_MARGIN - older_by:
            return False
        self._uses[url] = (uses + 1, seen)
        return True

    def used_up(self, url: str) -> None:
        """Slack refused ``url``: no more posts to it."""
        self._uses[url] = (RESPONSE_URL_USES, self._uses.get(url, (0, self._clock()))[1])


async def earlier_post(
    client: AsyncWebClient, channel: str, key: str, thread_ts: str | None, since: datetime
) -> str | None:
    """The ts of the bot's earlier post that carries ``key`` (its metadata), in ``thread_ts`` or among the channel's
    messages since ``since``; None when Slack shows there is none. Raises ``SlackApiError`` when Slack cannot show
    it (the caller decides: a channel closed to the bot's reading means it is posted; Slack down means later)."""
    cursor: str | None = None
    for _ in range(LOOK_PAGES):
        if thread_ts is not None:
            response = await client.conversations_replies(
                channel=channel, ts=thread_ts, include_all_metadata=True, limit=LOOK_LIMIT, cursor=cursor
            )
        else:
            response = await client.conversations_history(
                channel=channel, oldest=f"{since.timestamp():.6f}", include_all_metadata=True, limit=LOOK_LIMIT,
                cursor=cursor,
            )  # fmt: skip
        for message in response.get("messages") or []:
            metadata = message.get("metadata") or {}
            if metadata.get("event_type") == POST_EVENT and (metadata.get("event_payload") or {}).get("post") == key:
                log.info("found the earlier post %s in %s: not posted again", key, channel)
                return str(message["ts"])
        cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
        if cursor is None:
            return None
    return None


POSTS_KEPT = 20_000  # keyed posts this process remembers (made, or with an outcome it does not know)


class Posts:
    """The keyed posts this process made (key → ts), and those Slack did not answer (it may have carried them out:
    a timeout, a dropped connection, a 5xx). A post tried again in this process is not made twice when it was
    made, and is looked for first when its outcome is unknown. Bounded; other processes look by ``careful``."""

    def __init__(self, size: int = POSTS_KEPT) -> None:
        self._size = size
        self._made: OrderedDict[str, str | None] = OrderedDict()  # None: outcome unknown

    def made(self, key: str) -> str | None:
        return self._made.get(key)

    def unknown(self, key: str) -> bool:
        return key in self._made and self._made[key] is None

    def remember(self, key: str, ts: str | None) -> None:
        self._made[key] = ts
        self._made.move_to_end(key)
        while len(self._made) > self._size:
            self._made.popitem(last=False)


def _digest(text: str) -> str:
    """A short fingerprint of what a note is about, for its key."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def outcome_unknown(exc: BaseException) -> bool:
    """Slack may have carried the post out although it failed here: no answer (a timeout, a dropped connection) or
    a 5xx. A 4xx or a 429 is an answer: nothing was posted."""
    if isinstance(exc, SlackApiError):
        return int(getattr(exc.response, "status_code", 200) or 200) >= 500
    return not isinstance(exc, (ChannelBusy, CannotTell))


class SlackConversations:
    """Opens the Slack conversation of a stored origin; one pacer, one response_url count and one memory of posts
    made for every channel."""

    def __init__(
        self,
        client: AsyncWebClient,
        metrics: Metrics,
        pacer: ChannelPacer | None = None,
        response_urls: ResponseUrls | None = None,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._pacer = pacer or ChannelPacer()
        self._urls = response_urls or ResponseUrls()
        self._posts = Posts()

    def open(self, origin: Origin, received_at: datetime | None = None) -> SlackConversation:
        return SlackConversation(self._client, origin, self._metrics, self._pacer, self._urls, received_at, self._posts)


class _Requester:
    """One request's origin in Slack, and how its requester is told alone (``_respond``)."""

    def __init__(
        self,
        client: AsyncWebClient,
        origin: Origin,
        metrics: Metrics,
        pacer: ChannelPacer,
        response_urls: ResponseUrls,
        received_at: datetime | None = None,
        posts: Posts | None = None,
    ) -> None:
        self._client = client
        self.origin = origin
        self._metrics = metrics
        self._pacer = pacer
        self._urls = response_urls
        self._received_at = received_at
        self._posts = posts or Posts()

    def _failed(self, method: str, exc: SlackApiError) -> str:
        error = str(exc.response.get("error") or "unknown")
        self._metrics.slack_errors.labels(method, error).inc()
        return error

    # ------------------------------------------------------------ to the requester alone

    async def _respond(self, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        """Privately to the requester: the response_url while Slack takes it, else chat.postEphemeral, else the
        app's DM with them (see the module docstring)."""
        url = self.origin.response_url
        older_by = FORM_AGE if self.origin.surface is Surface.MODAL else timedelta(0)
        if (
            url
            and self._urls.take(url, self._received_at, older_by)
            and await self._via_response_url(url, text, blocks)
        ):
            return
        try:
            await self._ephemeral(text, blocks)
            return
        except SlackApiError as exc:
            if not closed_for_good(exc):
                raise  # Slack is down, or something an admin can fix (a scope, the token): tried again later
            log.info("cannot answer in %s (%s): writing to the requester's DM", self.origin.channel_id, _error(exc))
        await self._dm(text, blocks)

    async def _via_response_url(self, url: str, text: str, blocks: list[dict[str, Any]] | None) -> bool:
        try:
            response = await AsyncWebhookClient(url, timeout=int(RESPONSE_URL_TIMEOUT)).send(
                text=text, blocks=blocks, response_type="ephemeral", replace_original=False
            )
        except Exception as exc:  # unreachable or slow: the next way is tried (the use may have counted)
            log.warning("response_url failed (%s); trying the next way", type(exc).__name__)
            return False
        if response.status_code == 200:
            return True
        self._metrics.slack_errors.labels("response_url", str(response.status_code)).inc()
        log.warning("response_url answered HTTP %s (%s); trying the next way", response.status_code, response.body)
        if response.status_code in (404, 410) or response.body in ("used_url", "expired_url", "invalid_url"):
            self._urls.used_up(url)
        return False

    async def _ephemeral(self, text: str, blocks: list[dict[str, Any]] | None) -> None:
        async def once(text: str, blocks: list[dict[str, Any]] | None) -> None:
            await self._client.chat_postEphemeral(
                channel=self.origin.channel_id, user=self.origin.user_id, text=text, blocks=blocks
            )

        await self._shorter_if_refused("chat.postEphemeral", once, text, blocks)

    async def _dm(self, text: str, blocks: list[dict[str, Any]] | None) -> None:
        """The app's DM with the requester: posting to a user ID writes in App Home's Messages tab."""
        where = messages.dm_note(self.origin.channel_id)

        async def once(text: str, blocks: list[dict[str, Any]] | None) -> None:
            await self._pacer.run(
                self.origin.user_id,
                lambda: self._client.chat_postMessage(
                    channel=self.origin.user_id,
                    text=text,
                    blocks=[messages.context(where), *(blocks or [messages.section(text)])],
                    unfurl_links=False,
                    unfurl_media=False,
                ),
            )

        try:
            await self._shorter_if_refused("chat.postMessage", once, text, blocks)
        except SlackApiError as exc:
            if not closed_for_good(exc):
                raise
            raise CannotTell(f"cannot write to {self.origin.user_id}'s DM either ({_error(exc)})") from exc

    async def _shorter_if_refused(self, method: str, post: Any, text: str, blocks: list[dict[str, Any]] | None) -> Any:
        """``post(text, blocks)``; when Slack refuses the message itself, once more with its text alone."""
        try:
            return await post(text, blocks)
        except SlackApiError as exc:
            error = self._failed(method, exc)
            if error not in _REFUSED_MESSAGE or blocks is None:
                raise
            log.error(
                "Slack refused a message in %s (%s: %s); posting its text alone",
                self.origin.channel_id,
                error,
                exc.response.get("errors") or exc.response.get("response_metadata"),
            )
        return await post(*messages.plain(text))


class SlackConversation(_Requester):
    """The ``Conversation`` of one request, whichever surface it came from: in the channel and its threads, or
    privately to the requester (``_Requester``) when the channel is closed to the bot."""

    @property
    def _alert(self) -> bool:
        return self.origin.surface.is_alert

    def _about(self, what: str) -> str:
        """The key of a note about the conversation's own alert (one of each per alert)."""
        return f"{self.origin.channel_id}/{self.origin.thread_ts}:{what}"

    async def refuse(self, refusal: Refusal, careful: bool = False) -> None:
        text, blocks = messages.refusal(refusal, alert=self._alert)
        if self._alert:
            which = _digest(text)  # the same refusal, in the same thread
            await self._reply(Placement(self.origin.thread_ts), text, blocks, self._about(f"refused:{which}"), careful)
            return
        await self._respond(text, blocks)

    async def not_sent(self, send: PreparedSend, placement: Placement, why: NotSent, careful: bool = False) -> None:
        await self._reply(placement, *messages.alert_not_sent(send, why), f"{send.send_id}:result", careful)

    async def _post(
        self,
        text: str,
        blocks: list[dict[str, Any]] | None,
        thread_ts: str | None,
        key: str | None = None,
        careful: bool = False,
    ) -> str:
        """Post in the channel (in ``thread_ts``); ``key``: what the post is (``<send>:announcement``, …), carried
        as message metadata so that a post whose answer was lost can be found before it is posted again: when this
        process made it, it is not made again; when its outcome is unknown here, or ``careful`` (another process
        may have made it), it is looked for first."""
        if key is None:
            return await self._posting(text, blocks, thread_ts, None)
        if (made := self._posts.made(key)) is not None:
            log.info("the post %s was made before in %s: not posted again", key, self.origin.channel_id)
            return made
        if (careful or self._posts.unknown(key)) and (found := await self._earlier(key, thread_ts)) is not None:
            self._posts.remember(key, found)
            return found
        try:
            ts = await self._posting(text, blocks, thread_ts, key)
        except Exception as exc:
            if outcome_unknown(exc):
                self._posts.remember(key, None)
            raise
        self._posts.remember(key, ts)
        return ts

    async def _posting(
        self, text: str, blocks: list[dict[str, Any]] | None, thread_ts: str | None, key: str | None
    ) -> str:
        metadata = {"event_type": POST_EVENT, "event_payload": {"post": key}} if key is not None else None

        async def once(text: str, blocks: list[dict[str, Any]] | None) -> str:
            response = await self._pacer.run(
                self.origin.channel_id,
                lambda: self._client.chat_postMessage(
                    channel=self.origin.channel_id,
                    text=text,
                    blocks=blocks,
                    thread_ts=thread_ts,
                    unfurl_links=False,
                    unfurl_media=False,
                    metadata=metadata,
                ),
            )
            return str(response["ts"])

        ts: str = await self._shorter_if_refused("chat.postMessage", once, text, blocks)
        return ts

    async def _join(self) -> bool:
        try:
            await self._client.conversations_join(channel=self.origin.channel_id)
        except SlackApiError as exc:
            log.info("cannot join %s: %s", self.origin.channel_id, self._failed("conversations.join", exc))
            return False
        log.info("joined %s to post a send's result", self.origin.channel_id)
        return True

    async def _earlier(self, key: str, thread_ts: str | None) -> str | None:
        since = (self._received_at or utc_now()) - LOOK_BACK
        try:
            return await earlier_post(self._client, self.origin.channel_id, key, thread_ts, since)
        except SlackApiError as exc:
            error = self._failed("conversations.replies" if thread_ts else "conversations.history", exc)
            if passing(exc):
                raise
            log.info("cannot look for the earlier post %s in %s (%s): posting it", key, self.origin.channel_id, error)
        return None

    async def announce(self, send: PreparedSend, careful: bool = False) -> Placement:
        text, blocks = messages.announcement(send)
        in_thread = self.origin.thread_ts  # a shortcut or an alert: the story goes in that message's thread
        key = f"{send.send_id}:announcement"
        try:
            ts = await self._post(text, blocks, in_thread, key, careful)
            return Placement(in_thread or ts)
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error not in _CANNOT_POST:
                raise
        if error == "not_in_channel" and await self._join():
            ts = await self._post(text, blocks, in_thread, key)
            return Placement(in_thread or ts)
        await self._respond(text, [messages.section(messages.cannot_post_here(self.origin.channel_id)), *blocks])
        return Placement(None, private=True)

    async def _reply(
        self,
        placement: Placement,
        text: str,
        blocks: list[dict[str, Any]] | None,
        key: str | None = None,
        careful: bool = False,
    ) -> str | None:
        """Post in the thread (the message's ts), or tell the requester privately (None).

        Alerts have nobody to tell privately: their story is always in the alert's thread, and when that thread is
        closed to the bot for good, ``CannotTell``.
        """
        if self._alert:
            try:
                return await self._post(text, blocks, placement.thread_ts or self.origin.thread_ts, key, careful)
            except SlackApiError as exc:
                if not closed_for_good(exc):
                    raise
                raise CannotTell(f"cannot reply in {self.origin.channel_id} ({_error(exc)})") from exc
        if not placement.private and placement.thread_ts is not None:
            try:
                return await self._post(text, blocks, placement.thread_ts, key, careful)
            except SlackApiError as exc:
                if passing(exc):
                    raise  # Slack is down or busy: the thread gets it when Slack is back, not a private note now
                log.warning("cannot reply in thread: %s; telling the requester instead", _error(exc))
        await self._respond(text, blocks)
        return None

    async def retrying(self, send: PreparedSend, placement: Placement, error: D7Error) -> None:
        await self._reply(placement, messages.retrying(error), None, f"{send.send_id}:retrying")

    def _card(
        self, send: PreparedSend, outcome: Outcome, statuses: Sequence[RecipientDelivery]
    ) -> tuple[str, list[dict[str, Any]]]:
        if self._alert:
            return messages.alert_outcome(send, outcome, statuses)
        return messages.outcome(send, outcome, statuses)

    async def finish(
        self,
        send: PreparedSend,
        placement: Placement,
        outcome: Outcome,
        statuses: Sequence[RecipientDelivery] = (),
        careful: bool = False,
    ) -> str | None:
        return await self._reply(placement, *self._card(send, outcome, statuses), f"{send.send_id}:result", careful)

    async def update_card(
        self,
        send: PreparedSend,
        result_ts: str,
        outcome: Outcome,
        statuses: Sequence[RecipientDelivery],
    ) -> None:
        """The result message, rewritten in place with each recipient's latest delivery status."""

        async def once(text: str, blocks: list[dict[str, Any]] | None) -> None:
            await self._pacer.run(
                self.origin.channel_id,
                lambda: self._client.chat_update(
                    channel=self.origin.channel_id, ts=result_ts, text=text, blocks=blocks
                ),
                method="chat.update",
                within=UPDATE_WITHIN,
            )

        try:
            await self._shorter_if_refused("chat.update", once, *self._card(send, outcome, statuses))
        except SlackApiError as exc:
            if closed_for_good(exc) or _error(exc) in _CANNOT_UPDATE:
                raise CannotTell(f"cannot rewrite the result message ({_error(exc)})") from exc
            raise

    async def undelivered(
        self,
        send: PreparedSend,
        placement: Placement,
        failures: Sequence[RecipientDelivery],
        templates: Sequence[str] = (),
        careful: bool = False,
    ) -> None:
        text, blocks = messages.undelivered_blocks(send, failures, templates)
        which = _digest("\n".join(sorted(f.recipient for f in failures)))
        await self._reply(placement, text, blocks, f"{send.send_id}:undelivered:{which}", careful)

    async def acknowledged(self, user_id: str) -> None:
        text = messages.acknowledged(user_id)
        await self._reply(Placement(self.origin.thread_ts), text, None, self._about("acknowledged"))

    async def acknowledged_by_phone(self, phone: str, name: str | None, careful: bool = False) -> None:
        text = messages.acknowledged_by_phone(phone, name)
        await self._reply(Placement(self.origin.thread_ts), text, None, self._about("acknowledged"), careful)

    async def resolved_by_phone(self, phone: str, name: str | None) -> None:
        text = messages.resolved_by_phone(phone, name)
        await self._reply(Placement(self.origin.thread_ts), text, None, self._about("resolved"))

    async def points_to(self, send: PreparedSend, thread_ts: str) -> None:
        text = messages.resolves_alert(send, self.origin.channel_id, thread_ts)
        await self._reply(Placement(self.origin.thread_ts), text, [messages.section(text)], f"{send.send_id}:points")

    async def still_unknown(self, send: PreparedSend, placement: Placement, created_at: datetime) -> None:
        """Once per send, and looked for first: its reconciliation may have been written or not after the post."""
        text = messages.unknown_note(send, created_at)
        await self._reply(placement, text, [messages.section(text)], f"{send.send_id}:unknown", careful=True)
