"""The D7 client against the fake D7 server on loopback: exact bodies, error mapping, retry rules."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from pydantic import SecretStr

from bot.d7 import D7Client, DryRunGateway
from bot.domain.errors import (
    D7AuthError,
    D7Error,
    D7InsufficientCreditError,
    D7InvalidOriginatorError,
    D7NotFoundError,
    D7OutcomeUnknownError,
    D7RateLimitedError,
    D7UnavailableError,
    D7ValidationError,
    FieldError,
)
from bot.domain.models import OutgoingText, SendStatus, Via
from bot.domain.ports import Balance
from bot.domain.retry import RetryPolicy
from tests.conftest import Sleeps, timeout
from tests.fakes.d7 import TOKEN, FakeD7, Reply

SMS = "/messages/v1/send"
WA = "/whatsapp/v2/send"
ALICE = "+14155550100"
BOB = "+14155550101"
WA_SENDER = "+971501234567"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- bodies on the wire


async def test_send_sms_single_recipient_sends_exact_body(d7: D7Client, fake_d7: FakeD7) -> None:
    result = await d7.send_sms([ALICE], "Disk full on db-1", originator="OpsAlert")

    assert fake_d7.bodies(SMS) == [
        {
            "messages": [
                {
                    "channel": "sms",
                    "recipients": [ALICE],
                    "content": "Disk full on db-1",
                    "msg_type": "text",
                    "data_coding": "text",
                }
            ],
            "message_globals": {"originator": "OpsAlert"},
        }
    ]
    request = fake_d7.requests[0]
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert result.status is SendStatus.ACCEPTED
    assert result.request_id in fake_d7.sends
    assert result.created_at is not None
    assert not result.dry_run


async def test_send_sms_several_recipients_go_in_one_message_object(d7: D7Client, fake_d7: FakeD7) -> None:
    await d7.send_sms([ALICE, BOB], "db-1 down", originator="OpsAlert", report_url="https://bot.example/d7/r/s3")

    assert fake_d7.bodies(SMS) == [
        {
            "messages": [
                {
                    "channel": "sms",
                    "recipients": [ALICE, BOB],
                    "content": "db-1 down",
                    "msg_type": "text",
                    "data_coding": "text",
                }
            ],
            "message_globals": {"originator": "OpsAlert", "report_url": "https://bot.example/d7/r/s3"},
        }
    ]


@pytest.mark.parametrize(
    ("content", "data_coding"),
    [
        ("plain ascii", "text"),
        ("Prix: 10€ {ok}", "text"),  # extension characters are still GSM-7
        ("Grüße aus Köln", "text"),  # ü, ö are in the GSM basic table; ß too
        ("Привет", "unicode"),
        ("deploy done 🚀", "unicode"),
        ("“curly quotes”", "unicode"),
    ],
)
async def test_send_sms_data_coding_follows_our_encoder(
    d7: D7Client, fake_d7: FakeD7, content: str, data_coding: str
) -> None:
    await d7.send_sms([ALICE], content)

    (body,) = fake_d7.bodies(SMS)
    assert body["messages"][0]["data_coding"] == data_coding
    assert body["messages"][0]["content"] == content
    assert "message_globals" not in body


async def test_send_sms_scheduled_puts_schedule_time_in_message_globals(d7: D7Client, fake_d7: FakeD7) -> None:
    when = datetime(2026, 11, 23, 9, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))

    await d7.send_sms([ALICE], "maintenance at 10:00", originator="OpsAlert", schedule_time=when)

    (body,) = fake_d7.bodies(SMS)
    assert body["message_globals"] == {"originator": "OpsAlert", "schedule_time": "2026-11-23T09:30+05:30"}
    assert "schedule_time" not in body["messages"][0]


async def test_send_sms_negative_utc_offset_is_formatted_with_minus(d7: D7Client, fake_d7: FakeD7) -> None:
    when = datetime(2026, 1, 2, 3, 4, tzinfo=timezone(timedelta(hours=-8)))

    await d7.send_sms([ALICE], "x", schedule_time=when)

    assert fake_d7.bodies(SMS)[0]["message_globals"] == {"schedule_time": "2026-01-02T03:04-08:00"}


async def test_send_sms_naive_schedule_time_is_refused_before_sending(d7: D7Client, fake_d7: FakeD7) -> None:
    with pytest.raises(ValueError, match="time zone"):
        await d7.send_sms([ALICE], "x", schedule_time=datetime(2026, 1, 2, 3, 4))

    assert fake_d7.requests == []


@pytest.mark.parametrize("recipients", [[], ["4155550100"], ["+1 415 555 0100"], ["+0123456"]])
async def test_send_sms_refuses_non_e164_recipients_before_sending(
    d7: D7Client, fake_d7: FakeD7, recipients: list[str]
) -> None:
    with pytest.raises(ValueError, match="recipient"):
        await d7.send_sms(recipients, "x")

    assert fake_d7.requests == []


async def test_send_whatsapp_text_sends_exact_body(d7: D7Client, fake_d7: FakeD7) -> None:
    when = datetime(2026, 11, 23, 9, 30, tzinfo=UTC_PLUS_4)

    result = await d7.send_whatsapp(
        [ALICE, BOB],
        "Your ticket #42 is resolved",
        originator=WA_SENDER,
        cust_ref="send-7f3a",
        report_url="https://bot.example/d7/reports/s3",
        schedule_time=when,
    )

    assert fake_d7.bodies(WA) == [
        {
            "messages": [
                {
                    "originator": WA_SENDER,
                    "content": {
                        "message_type": "TEXT",
                        "text": {"preview_url": False, "body": "Your ticket #42 is resolved"},
                    },
                    "recipients": [
                        {"recipient": ALICE, "recipient_type": "individual", "reference": {"cust_ref": "send-7f3a"}},
                        {"recipient": BOB, "recipient_type": "individual", "reference": {"cust_ref": "send-7f3a"}},
                    ],
                    "report_url": "https://bot.example/d7/reports/s3",
                }
            ],
            "message_globals": {"schedule_time": "2026-11-23T09:30+04:00"},
        }
    ]
    assert result.accepted


UTC_PLUS_4 = timezone(timedelta(hours=4))


async def test_send_whatsapp_minimal_body_has_no_optional_keys(d7: D7Client, fake_d7: FakeD7) -> None:
    await d7.send_whatsapp([ALICE], "hi", originator=WA_SENDER, preview_url=True)

    assert fake_d7.bodies(WA) == [
        {
            "messages": [
                {
                    "originator": WA_SENDER,
                    "content": {"message_type": "TEXT", "text": {"preview_url": True, "body": "hi"}},
                    "recipients": [{"recipient": ALICE, "recipient_type": "individual"}],
                }
            ]
        }
    ]


# ---------------------------------------------------------------- answers and errors


async def test_rejected_answer_is_a_result_not_a_success(d7: D7Client, fake_d7: FakeD7) -> None:
    fake_d7.enqueue(Reply(200, {"request_id": "r-1", "status": "rejected", "created_at": "2026-11-22T10:00:00Z"}))

    result = await d7.send_sms([ALICE], "x")

    assert result.status is SendStatus.REJECTED
    assert not result.accepted
    assert result.request_id == "r-1"


async def test_401_raises_auth_error_with_d7_code(make_d7: Callable[..., D7Client], fake_d7: FakeD7) -> None:
    client = make_d7(fake_d7.url, token="wrong-token")

    with pytest.raises(D7AuthError) as info:
        await client.send_sms([ALICE], "x")

    assert info.value.http_status == 401
    assert info.value.code == "ACCESS_TOKEN_SIGNATURE_VERIFICATION_FAILED"
    assert "Access Token" in info.value.message
    assert info.value.detail["detail"]["code"] == "ACCESS_TOKEN_SIGNATURE_VERIFICATION_FAILED"
    assert len(fake_d7.requests) == 1


async def test_402_raises_insufficient_credit(d7: D7Client, fake_d7: FakeD7) -> None:
    fake_d7.credit = False

    with pytest.raises(D7InsufficientCreditError) as info:
        await d7.send_sms([ALICE], "x")

    assert (info.value.http_status, info.value.code) == (402, "INSUFFICIENT_CREDIT")
    assert len(fake_d7.requests) == 1


async def test_404_unregistered_whatsapp_sender_raises_invalid_originator(d7: D7Client, fake_d7: FakeD7) -> None:
    with pytest.raises(D7InvalidOriginatorError) as info:
        await d7.send_whatsapp([ALICE], "hi", originator="+971509999999")

    assert (info.value.http_status, info.value.code) == (404, "INVALID_WHATSAPP_ORIGINATOR")
    assert info.value.message == "Invalid Originator configured"
    assert len(fake_d7.requests) == 1


async def test_422_raises_validation_error_with_loc_and_msg(d7: D7Client, fake_d7: FakeD7) -> None:
    detail = [
        {"loc": ["body", "messages", 0, "recipients", 0], "msg": "invalid mobile number", "type": "value_error"},
        {"loc": ["body", "messages", 0, "content"], "msg": "field required", "type": "value_error.missing"},
    ]
    fake_d7.enqueue(Reply(422, {"detail": detail}))

    with pytest.raises(D7ValidationError) as info:
        await d7.send_sms([ALICE], "x")

    assert info.value.http_status == 422
    assert info.value.errors == [
        FieldError(("body", "messages", 0, "recipients", 0), "invalid mobile number", "value_error"),
        FieldError(("body", "messages", 0, "content"), "field required", "value_error.missing"),
    ]
    assert str(info.value) == (
        "body.messages.0.recipients.0: invalid mobile number; body.messages.0.content: field required"
    )
    assert len(fake_d7.requests) == 1


async def test_other_4xx_is_not_retried(d7: D7Client, fake_d7: FakeD7, sleeps: Sleeps) -> None:
    fake_d7.enqueue(Reply(400, {"detail": [{"code": "BAD_REQUEST", "message": "nope"}]}))

    with pytest.raises(D7Error) as info:
        await d7.send_sms([ALICE], "x")

    assert type(info.value) is D7Error
    assert (info.value.http_status, info.value.code, info.value.message) == (400, "BAD_REQUEST", "nope")
    assert sleeps == []
    assert len(fake_d7.requests) == 1


# ---------------------------------------------------------------- retries


async def test_429_then_success_honours_retry_after(d7: D7Client, fake_d7: FakeD7, sleeps: Sleeps) -> None:
    fake_d7.enqueue(Reply(429, {"detail": "Too Many Requests"}, headers={"Retry-After": "2"}))

    result = await d7.send_sms([ALICE], "x")

    assert result.accepted
    assert sleeps == [2.0]
    first, second = fake_d7.bodies(SMS)
    assert first == second
    assert len(fake_d7.sends) == 1


async def test_429_with_long_retry_after_is_handed_back_not_waited(
    d7: D7Client, fake_d7: FakeD7, sleeps: Sleeps
) -> None:
    fake_d7.enqueue(Reply(429, {"detail": "slow down"}, headers={"Retry-After": "600"}))

    with pytest.raises(D7RateLimitedError) as info:
        await d7.send_sms([ALICE], "x")

    assert info.value.retry_after == 600.0
    assert sleeps == []
    assert len(fake_d7.requests) == 1


async def test_503_twice_then_success_sends_once(d7: D7Client, fake_d7: FakeD7, sleeps: Sleeps) -> None:
    fake_d7.enqueue(503, 503)

    result = await d7.send_sms([ALICE], "x", originator="OpsAlert")

    assert result.accepted
    assert len(fake_d7.requests) == 3
    assert len(fake_d7.sends) == 1
    assert len({str(b) for b in fake_d7.bodies(SMS)}) == 1
    policy = RetryPolicy()
    assert len(sleeps) == 2
    assert policy.base_delay / 2 <= sleeps[0] <= policy.base_delay
    assert policy.base_delay <= sleeps[1] <= policy.base_delay * 2


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_gateway_errors_give_up_after_max_attempts(
    d7: D7Client, fake_d7: FakeD7, sleeps: Sleeps, status: int
) -> None:
    fake_d7.enqueue(*[status] * 10)

    with pytest.raises(D7UnavailableError) as info:
        await d7.send_sms([ALICE], "x")

    assert info.value.http_status == status
    assert len(fake_d7.requests) == RetryPolicy().max_attempts
    assert len(sleeps) == RetryPolicy().max_attempts - 1
    assert fake_d7.sends == {}


async def test_500_on_send_is_outcome_unknown_and_not_retried(d7: D7Client, fake_d7: FakeD7, sleeps: Sleeps) -> None:
    fake_d7.enqueue(Reply(500, "Internal Server Error"))

    with pytest.raises(D7OutcomeUnknownError) as info:
        await d7.send_sms([ALICE], "x")

    assert info.value.http_status == 500
    assert "may have been sent" in str(info.value)
    assert sleeps == []
    assert len(fake_d7.requests) == 1


async def test_read_timeout_is_outcome_unknown_with_exactly_one_request(
    make_d7: Callable[..., D7Client], fake_d7: FakeD7, sleeps: Sleeps
) -> None:
    client = make_d7(fake_d7.url, timeout=timeout(read=0.2))
    fake_d7.enqueue(Reply(delay=1.0))

    with pytest.raises(D7OutcomeUnknownError) as info:
        await client.send_sms([ALICE], "x")

    assert "may or may not have been sent" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert len(fake_d7.requests) == 1
    assert sleeps == []


async def test_connection_dropped_without_answer_is_outcome_unknown(
    d7: D7Client, fake_d7: FakeD7, sleeps: Sleeps
) -> None:
    fake_d7.enqueue(Reply(action="close"))

    with pytest.raises(D7OutcomeUnknownError):
        await d7.send_whatsapp([ALICE], "hi", originator=WA_SENDER)

    assert len(fake_d7.requests) == 1
    assert sleeps == []


async def test_connection_dropped_mid_answer_is_outcome_unknown(d7: D7Client, fake_d7: FakeD7, sleeps: Sleeps) -> None:
    fake_d7.enqueue(Reply(action="truncate"))

    with pytest.raises(D7OutcomeUnknownError):
        await d7.send_sms([ALICE], "x")

    assert len(fake_d7.requests) == 1
    assert sleeps == []


async def test_unreadable_200_answer_is_outcome_unknown(d7: D7Client, fake_d7: FakeD7) -> None:
    fake_d7.enqueue(Reply(200, "<html>maintenance</html>"))

    with pytest.raises(D7OutcomeUnknownError, match="could not be read"):
        await d7.send_sms([ALICE], "x")


async def test_connection_refused_is_retried_until_d7_is_up(make_d7: Callable[..., D7Client]) -> None:
    port = free_port()
    late = FakeD7(port=port)
    sleeps = Sleeps(on_sleep=lambda _: late.start() if not late.running else None)
    client = make_d7(f"http://127.0.0.1:{port}", sleep=sleeps)
    try:
        result = await client.send_sms([ALICE], "x")
    finally:
        late.stop()

    assert result.accepted
    assert len(sleeps) == 1
    assert len(late.requests) == 1


async def test_connection_refused_every_time_raises_unavailable(
    make_d7: Callable[..., D7Client], sleeps: Sleeps
) -> None:
    client = make_d7(f"http://127.0.0.1:{free_port()}")

    with pytest.raises(D7UnavailableError, match="could not connect") as info:
        await client.send_sms([ALICE], "x")

    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(sleeps) == RetryPolicy().max_attempts - 1


# ---------------------------------------------------------------- status


async def test_get_status_sms(d7: D7Client, fake_d7: FakeD7) -> None:
    sent = await d7.send_sms([ALICE, BOB], "x")
    fake_d7.set_status(sent.request_id, BOB, "delivered")

    report = await d7.get_status(sent.request_id, Via.SMS)

    assert fake_d7.requests[-1].path == f"/report/v1/message-log/{sent.request_id}"
    assert fake_d7.requests[-1].method == "GET"
    assert report.request_id == sent.request_id
    assert [(r.recipient, r.status, r.parts, r.cost) for r in report.recipients] == [
        (ALICE, "sent", 1, "0.0042"),
        (BOB, "delivered", 1, "0.0042"),
    ]


async def test_get_status_whatsapp(d7: D7Client, fake_d7: FakeD7) -> None:
    sent = await d7.send_whatsapp([ALICE], "hi", originator=WA_SENDER)
    fake_d7.set_status(sent.request_id, ALICE, "read")

    report = await d7.get_status(sent.request_id, Via.WHATSAPP)

    assert fake_d7.requests[-1].path == f"/whatsapp/v2/report/{sent.request_id}"
    assert report.stage == "processed"
    assert [(r.recipient, r.status) for r in report.recipients] == [(ALICE, "read")]


@pytest.mark.parametrize(
    ("via", "code"), [(Via.SMS, "MESSAGE_LOG_NOT_EXISTS"), (Via.WHATSAPP, "WHATSAPP_LOG_NOT_EXISTS")]
)
async def test_get_status_unknown_id_raises_not_found(d7: D7Client, fake_d7: FakeD7, via: Via, code: str) -> None:
    with pytest.raises(D7NotFoundError) as info:
        await d7.get_status("no-such-id", via)

    assert not isinstance(info.value, D7InvalidOriginatorError)
    assert info.value.code == code


async def test_get_status_quotes_the_request_id_into_one_path_segment(d7: D7Client, fake_d7: FakeD7) -> None:
    with pytest.raises(D7NotFoundError):
        await d7.get_status("../../messages/v1/send", Via.SMS)

    assert fake_d7.requests[-1].method == "GET"
    assert fake_d7.requests[-1].path == "/report/v1/message-log/../../messages/v1/send"
    assert fake_d7.sends == {}


async def test_get_status_is_retried_on_500_because_it_is_read_only(
    d7: D7Client, fake_d7: FakeD7, sleeps: Sleeps
) -> None:
    sent = await d7.send_sms([ALICE], "x")
    fake_d7.enqueue(Reply(500, "oops"))

    report = await d7.get_status(sent.request_id, Via.SMS)

    assert report.request_id == sent.request_id
    assert len(sleeps) == 1


# ---------------------------------------------------------------- secrets


async def test_token_never_appears_in_logs_reprs_or_errors(
    make_d7: Callable[..., D7Client], fake_d7: FakeD7, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-d7-token-value"
    fake_d7.token = secret
    client = make_d7(fake_d7.url, token=secret, timeout=timeout(read=0.2))
    errors: list[BaseException] = []

    fake_d7.enqueue(503)
    await client.send_sms([ALICE], "ok after one 503")
    for reply in (Reply(delay=1.0), Reply(401)):
        fake_d7.enqueue(reply)
        try:
            await client.send_sms([ALICE], "x")
        except D7Error as exc:
            errors.append(exc)
    try:
        await make_d7(fake_d7.url, token="another-secret").send_sms([ALICE], "x")
    except D7AuthError as exc:
        errors.append(exc)

    assert [type(e) for e in errors] == [D7OutcomeUnknownError, D7AuthError, D7AuthError]
    seen = [caplog.text, repr(client), repr(client._http.auth)]
    for exc in errors:
        chain: BaseException | None = exc
        while chain is not None:
            seen += [str(chain), repr(chain), repr(getattr(chain, "detail", None)), repr(vars(chain))]
            chain = chain.__cause__
    assert "d7 send via=sms" in caplog.text
    for text in seen:
        assert secret not in text
        assert "another-secret" not in text


def test_client_repr_shows_url_only() -> None:
    client = D7Client(SecretStr("tok-123456"), base_url="http://127.0.0.1:1")
    assert repr(client) == "D7Client(base_url='http://127.0.0.1:1')"


# ---------------------------------------------------------------- balance (optional endpoint)

BALANCE = "/messages/v1/balance"


async def test_balance_reads_d7s_answer_with_the_bearer_token(d7: D7Client, fake_d7: FakeD7) -> None:
    fake_d7.balance = 12.75

    assert await d7.balance() == Balance(12.75, None)
    (read,) = fake_d7.balance_reads
    assert (read.method, read.path) == ("GET", BALANCE)
    assert read.headers["Authorization"] == f"Bearer {TOKEN}"
    assert fake_d7.requests == []  # kept apart from sends and status look-ups


async def test_balance_reads_a_currency_when_d7_gives_one(d7: D7Client, fake_d7: FakeD7) -> None:
    fake_d7.balance, fake_d7.balance_currency = 3.5, "eur"

    assert await d7.balance() == Balance(3.5, "EUR")


async def test_balance_not_offered_404_is_none_not_an_error(d7: D7Client, fake_d7: FakeD7) -> None:
    fake_d7.balance_offered = False

    assert await d7.balance() is None


@pytest.mark.parametrize("body", [{"credit": 5}, {"balance": "lots"}, [], "<html>gone</html>", {"balance": "NaN"}])
async def test_balance_answer_of_an_unknown_shape_is_none(d7: D7Client, fake_d7: FakeD7, body: object) -> None:
    fake_d7.enqueue(Reply(200, body, path=BALANCE))

    assert await d7.balance() is None


async def test_balance_given_as_a_numeric_string_is_read(d7: D7Client, fake_d7: FakeD7) -> None:
    fake_d7.enqueue(Reply(200, {"balance": "7.10", "sms_count": "120"}, path=BALANCE))

    assert await d7.balance() == Balance(7.1, None)


async def test_balance_slow_answer_raises_unavailable_at_its_deadline_with_one_request(
    d7: D7Client, fake_d7: FakeD7, sleeps: Sleeps
) -> None:
    fake_d7.enqueue(Reply(delay=2.0, path=BALANCE))
    started = time.perf_counter()

    with pytest.raises(D7UnavailableError, match=r"within 0\.3s"):
        await d7.balance(within=0.3)

    assert time.perf_counter() - started < 1.5
    assert len(fake_d7.balance_reads) == 1
    assert sleeps == []  # no retries inside: the watcher has its own backoff


async def test_balance_401_raises_auth_error(d7: D7Client, fake_d7: FakeD7) -> None:
    fake_d7.enqueue(Reply(401, path=BALANCE))

    with pytest.raises(D7AuthError):
        await d7.balance()


async def test_balance_scripted_reply_without_a_path_is_left_for_the_send(d7: D7Client, fake_d7: FakeD7) -> None:
    fake_d7.enqueue(402)

    assert await d7.balance() == Balance(100.0, None)
    with pytest.raises(D7InsufficientCreditError):
        await d7.send_sms([ALICE], "x")


async def test_dry_run_has_no_balance() -> None:
    gateway = DryRunGateway()

    assert await gateway.balance() is None


async def test_each_recipients_own_ending_makes_one_message_object_each_in_one_request(
    d7: D7Client, fake_d7: FakeD7
) -> None:
    # Action links (issue 28): the same words, each phone's own link after them.
    links = {ALICE: "\nhttps://r.example/a/AAAAAAAAAAAAAAAA", BOB: "\nhttps://r.example/a/BBBBBBBBBBBBBBBB"}

    await d7.send(OutgoingText(Via.SMS, (ALICE, BOB), "DB down", originator="OpsAlert", suffixes=links))
    await d7.send(OutgoingText(Via.WHATSAPP, (ALICE, BOB), "DB down – é", originator=WA_SENDER, suffixes=links))

    (sms,) = fake_d7.bodies("/messages/v1/send")
    assert sms["messages"] == [
        {
            "channel": "sms",
            "recipients": [ALICE],
            "content": "DB down" + links[ALICE],
            "msg_type": "text",
            "data_coding": "text",
        },
        {
            "channel": "sms",
            "recipients": [BOB],
            "content": "DB down" + links[BOB],
            "msg_type": "text",
            "data_coding": "text",
        },
    ]
    (whatsapp,) = fake_d7.bodies(WA)
    assert [(m["recipients"][0]["recipient"], m["content"]["text"]["body"]) for m in whatsapp["messages"]] == [
        (ALICE, "DB down – é" + links[ALICE]),
        (BOB, "DB down – é" + links[BOB]),
    ]
