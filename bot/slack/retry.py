"""Slack's 429s, retried after a wait that is always a finite, bounded number of seconds.

slack_sdk's ``AsyncRateLimitErrorRetryHandler`` does ``int(Retry-After)``: ``inf``, ``nan`` or ``1.5`` raised
ValueError out of the Web API call, and a huge number slept for as long as it said.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import ClientConnectorError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

# Slack asks for a second or a few (chat.postMessage allows about 1 message/s per channel). A retry waits inside
# a listener's task or the outbox's telling; past a minute, giving up and telling the error is more useful.
MAX_RETRY_AFTER = 60.0
# A Retry-After that is missing, not a number, NaN or negative: wait as Slack's usual answer would say.
UNUSABLE_RETRY_AFTER = 1.0

_RNG = random.Random()  # noqa: S311 - jitter, not cryptography

Sleep = Callable[[float], Awaitable[None]]


def _suffixes(methods: Iterable[str]) -> tuple[str, ...]:
    """What the URLs of calls to ``methods`` end with."""
    return tuple(f"/{method}" for method in methods)


def _calls(request: HttpRequest, suffixes: tuple[str, ...]) -> bool:
    """Whether ``request`` calls one of the methods ``suffixes`` names (``_suffixes``)."""
    return bool(suffixes) and request.url.endswith(suffixes)


def slack_retry_after(response: HttpResponse) -> float:
    """Seconds Slack asked to wait in a 429 a retry handler sees (see ``retry_after_seconds``)."""
    values = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), [])
    return retry_after_seconds(values[0] if values else None)


def retry_after_seconds(value: str | None) -> float:
    """A ``Retry-After`` header's seconds, capped at ``MAX_RETRY_AFTER``; ``UNUSABLE_RETRY_AFTER`` when it is not a
    usable number."""
    try:
        seconds = float(value)  # type: ignore[arg-type]  # None: TypeError, as unusable as "abc"
    except (TypeError, ValueError):
        return UNUSABLE_RETRY_AFTER
    if math.isnan(seconds) or seconds < 0:
        return UNUSABLE_RETRY_AFTER
    return min(seconds, MAX_RETRY_AFTER)


class CappedRateLimitRetryHandler(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 retry handler with the wait read by ``slack_retry_after``. Like the built-in one it adds
    up to a second of jitter, so tasks that hit the same limit do not all retry at the same instant."""

    def __init__(self, max_retry_count: int = 1, *, sleep: Sleep = asyncio.sleep, paced: Iterable[str] = ()) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._sleep = sleep
        # Methods whose 429s the caller waits out itself, in turn (the channel pacer): retried here, each waiting
        # call would come back at about the same instant and meet the limit again.
        self._paced = _suffixes(paced)

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if _calls(request, self._paced):
            return False
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        if response is None:
            # Only called after ``_can_retry_async`` said yes, which needs a 429 response.
            raise error if error is not None else RuntimeError("a rate-limit retry without a response")
        state.next_attempt_requested = True
        await self._sleep(slack_retry_after(response) + _RNG.random())
        state.increment_current_attempt()


class SafeConnectionRetryHandler(AsyncConnectionErrorRetryHandler):
    """slack_sdk's retry after a connection error, except where Slack may have carried the call out: a post whose
    connection broke after it was sent (reset, disconnected) is Slack's "outcome unknown", and retrying it here
    would post it twice (the chaos soak, seed 23: an announcement answered slowly, its connection cut, posted
    again). Those ``unsafe`` methods are retried only when the connection was never made; otherwise the error goes
    to the caller, which looks for the post before posting it again (``bot.slack.conversation.Posts``)."""

    def __init__(self, *, unsafe: Iterable[str] = ()) -> None:
        super().__init__()
        self._unsafe = _suffixes(unsafe)

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if _calls(request, self._unsafe) and not isinstance(error, ClientConnectorError):
            return False  # sent, perhaps carried out: not blindly again
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)
