"""The HTTP transport under the D7 client: httpx's API on aiohttp's connection pool.

Why: httpcore's pool assigns requests to connections in O(requests × connections); at 50 sends in flight it
spent ~75% of the client's CPU there and capped a 2-core machine at ~130 sends/s. aiohttp's pool does not.

``httpx_aiohttp`` maps every ``aiohttp.ClientConnectionError`` to ``httpx.ConnectTimeout``, including a server
that disconnects *after* receiving the request. For a send that distinction is the difference between "safe to
retry" and "may have been sent", so this transport re-classifies failures by their aiohttp cause:

- the connection was never established (refused, DNS, TLS, connect/pool timeout) → ``httpx.ConnectError`` /
  ``httpx.ConnectTimeout``: nothing was sent;
- a read timeout → ``httpx.ReadTimeout``; anything else after connecting → ``httpx.RemoteProtocolError``:
  the request may have been processed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

_NEVER_CONNECTED: tuple[type[BaseException], ...] = (aiohttp.ClientConnectorError,)


def classify(exc: httpx.TransportError, *, connected: bool) -> httpx.TransportError:
    """The httpx error that tells truthfully whether the request may have reached the server."""
    cause = exc.__cause__
    if cause is None:
        return exc
    if not connected and isinstance(cause, _NEVER_CONNECTED):
        return httpx.ConnectError(str(cause))
    if not connected and isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(cause) or "timed out connecting")
    if isinstance(cause, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(str(cause) or "timed out reading the answer")
    if isinstance(cause, aiohttp.ClientError):
        return httpx.RemoteProtocolError(str(cause) or type(cause).__name__)
    return exc


def _reraise(exc: httpx.TransportError, *, connected: bool) -> None:
    mapped = classify(exc, connected=connected)
    if mapped is exc:
        raise exc
    raise mapped from exc.__cause__


class _ClassifiedStream(httpx.AsyncByteStream):
    """The answer's body: by now the request has been sent, whatever fails."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx.TransportError as exc:
            _reraise(exc, connected=True)

    async def aclose(self) -> None:
        await self._inner.aclose()


class D7Transport(AiohttpTransport):
    """``AiohttpTransport`` whose errors say whether the request may have been sent."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except httpx.TransportError as exc:
            _reraise(exc, connected=False)
            raise  # unreachable: _reraise always raises
        if not isinstance(response.stream, httpx.AsyncByteStream):  # pragma: no cover - httpx_aiohttp streams
            return response
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_ClassifiedStream(response.stream),
            request=request,
            extensions=response.extensions,
        )
