"""The transport's error classification: only a connection that was never made counts as "not sent"."""

from __future__ import annotations

import aiohttp
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey

from bot.d7.transport import classify

KEY = ConnectionKey("d7.example", 443, True, True, None, None, None)


def wrapped(cause: BaseException) -> httpx.TransportError:
    # What httpx_aiohttp raises: its own mapping, chained to the aiohttp cause.
    exc = httpx.ConnectTimeout(str(cause))
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("cause", "connected", "expected"),
    [
        (aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "refused")), False, httpx.ConnectError),
        (aiohttp.ConnectionTimeoutError("connect"), False, httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("read"), False, httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), False, httpx.RemoteProtocolError),
        (aiohttp.ClientOSError(104, "reset"), False, httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError("short body"), True, httpx.RemoteProtocolError),
        (aiohttp.ServerDisconnectedError(), True, httpx.RemoteProtocolError),
        (aiohttp.SocketTimeoutError("read"), True, httpx.ReadTimeout),
    ],
)
def test_classify(cause: BaseException, connected: bool, expected: type[httpx.TransportError]) -> None:
    assert type(classify(wrapped(cause), connected=connected)) is expected


def test_errors_without_an_aiohttp_cause_are_kept() -> None:
    exc = httpx.ReadError("x")
    assert classify(exc, connected=True) is exc


class _ResetMidBody(httpx.AsyncByteStream):
    async def __aiter__(self):  # type: ignore[no-untyped-def]
        yield b'{"request_id": '
        raise wrapped(aiohttp.ClientOSError(104, "Connection reset by peer"))


async def test_reset_while_reading_the_answer_is_never_reported_as_a_connect_error() -> None:
    from bot.d7.transport import _ClassifiedStream

    stream = _ClassifiedStream(_ResetMidBody())

    with pytest.raises(httpx.RemoteProtocolError, match="reset"):
        async for _ in stream:
            pass
