"""The D7 balance: /healthz and /metrics show it, a drop below ``defaults.low_balance`` is told once per crossing in
``defaults.admin_channel``, and accepted sends are counted as billed messages by rule and channel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.domain.errors import D7UnavailableError
from bot.domain.ports import Balance
from bot.metrics import Metrics
from bot.sending.balance import CLAIM_STALE, CLAIMED, WARNED, BalanceWatcher
from bot.slack.messages import low_balance_warning
from bot.storage import Storage
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import POLICY, running_app

ADMIN = "C0ADMIN"
WITH_LOW_BALANCE = POLICY.replace(
    "defaults: {region: US, max_segments: 3, show_numbers: masked,",
    f"defaults: {{region: US, max_segments: 3, show_numbers: masked, admin_channel: {ADMIN}, low_balance: 10,",
)
assert WITH_LOW_BALANCE != POLICY  # the harness's defaults line changed under this once, silently


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel("C0OPS")
        fake.add_channel(ADMIN)
        yield fake


def admin_posts(slack: FakeSlack) -> list[str]:
    return [p["text"] for p in slack.of("chat.postMessage") if p["channel"] == ADMIN]


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


class StubGateway:
    """Answers ``balance()`` from a list (an exception is raised); counts the reads."""

    dry_run = False

    def __init__(self, *answers: Balance | BaseException | None) -> None:
        self.answers = list(answers)
        self.reads = 0

    async def balance(self) -> Balance | None:
        self.reads += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


class Posts(list[tuple[str, str]]):
    fail = False

    async def __call__(self, channel: str, balance: Balance, low: float) -> None:
        if self.fail:
            raise ConnectionError("slack is down (test)")
        self.append((channel, low_balance_warning(balance, low)))  # the words the app posts


def watcher(gateway: StubGateway, posts: Posts, **kw: object) -> BalanceWatcher:
    return BalanceWatcher(gateway, Metrics(), post=posts, low=10.0, admin_channel=ADMIN, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the watcher on its own


async def test_a_drop_below_the_level_is_told_once_until_the_balance_rises_and_drops_again() -> None:
    usd = "USD"
    gateway = StubGateway(*(Balance(a, usd) for a in (25.0, 9.5, 8.0, 3.0, 50.0, 12.0, 9.99, 9.0)))
    posts = Posts()
    w = watcher(gateway, posts)

    for _ in range(8):
        await w.check()

    assert posts == [
        (ADMIN, low_balance_warning(Balance(9.5, usd), 10.0)),
        (ADMIN, low_balance_warning(Balance(9.99, usd), 10.0)),
    ]
    assert posts[0][1] == (
        ":warning: The D7 account's balance is 9.50 USD, below the warning level of 10.00 USD "
        "(`defaults.low_balance` in the policy). When it runs out, D7 refuses every text: top up the D7 account. "
        "This is said once; again only if the balance goes back above 10.00 USD and drops below it again."
    )


async def test_the_warning_is_told_once_across_restarts_and_replicas(tmp_path: Path) -> None:
    async with await Storage.open(f"sqlite:///{tmp_path / 'bot.db'}") as storage:
        posts = Posts()
        posts.fail = True
        first = watcher(StubGateway(Balance(9.0), Balance(8.0), Balance(5.0)), posts, settings=storage.settings)
        await first.check()  # Slack did not take it: not told, so told at the next read
        posts.fail = False
        await first.check()
        replica = watcher(StubGateway(Balance(7.0)), posts, settings=storage.settings)
        await replica.check()
        restarted = watcher(StubGateway(Balance(6.0), Balance(20.0)), posts, settings=storage.settings)
        await restarted.check()
        assert [low for _, low in posts] == [low_balance_warning(Balance(8.0), 10.0)]

        await restarted.check()  # back above: the next drop is told again, by whichever replica sees it
        await first.check()
        assert [low for _, low in posts] == [
            low_balance_warning(Balance(8.0), 10.0),
            low_balance_warning(Balance(5.0), 10.0),
        ]


async def test_a_replica_that_died_between_claiming_and_posting_the_warning_is_taken_over(tmp_path: Path) -> None:
    async with await Storage.open(f"sqlite:///{tmp_path / 'bot.db'}") as storage:
        now = time.time()
        assert await storage.settings.swap(WARNED, None, f"{CLAIMED}{now - 5:.0f}")  # another replica is posting
        posts = Posts()
        await watcher(StubGateway(Balance(8.0)), posts, settings=storage.settings).check()
        assert posts == []
        assert await storage.settings.swap(WARNED, f"{CLAIMED}{now - 5:.0f}", f"{CLAIMED}{now - CLAIM_STALE - 1:.0f}")
        await watcher(StubGateway(Balance(8.0)), posts, settings=storage.settings).check()  # it died: stale claim
        assert [low for _, low in posts] == [low_balance_warning(Balance(8.0), 10.0)]
        assert await storage.settings.get(WARNED) == "yes"


async def test_a_warning_slack_did_not_take_is_posted_at_the_next_read() -> None:
    posts = Posts()
    posts.fail = True
    w = watcher(StubGateway(Balance(4.0)), posts)

    await w.check()
    posts.fail = False
    await w.check()
    await w.check()

    assert [channel for channel, _ in posts] == [ADMIN]


async def test_without_a_level_nothing_is_posted_and_without_a_channel_it_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    posts = Posts()
    no_level = BalanceWatcher(StubGateway(Balance(1.0)), Metrics(), post=posts, low=None, admin_channel=ADMIN)
    no_channel = BalanceWatcher(StubGateway(Balance(1.0)), Metrics(), post=posts, low=10.0, admin_channel=None)

    await no_level.check()
    await no_channel.check()
    await no_channel.check()

    assert posts == []
    assert caplog.text.count("D7 balance low (no defaults.admin_channel to tell)") == 1


async def test_the_gauge_has_the_balance_by_currency_and_is_emptied_when_d7_stops_offering_it() -> None:
    w = watcher(StubGateway(Balance(42.5, "EUR"), Balance(40.0, None), None), Posts())

    await w.check()
    assert sample(w.metrics, "relay_d7_balance", currency="EUR") == 42.5
    await w.check()
    assert sample(w.metrics, "relay_d7_balance", currency="EUR") is None
    assert sample(w.metrics, "relay_d7_balance", currency="unknown") == 40.0
    await w.check()

    assert "relay_d7_balance{" not in w.metrics.render().decode()
    assert w.health() is None
    assert w.offered is False


async def test_a_failed_read_keeps_the_last_balance_and_says_why() -> None:
    w = watcher(StubGateway(Balance(20.0, "USD"), D7UnavailableError("D7 did not answer (ReadTimeout)")), Posts())

    await w.check()
    with pytest.raises(D7UnavailableError):
        await w.check()

    health = w.health()
    assert health is not None
    assert (health["amount"], health["currency"], health["below_warning_level"]) == (20.0, "USD", False)
    assert health["last_read_failed"] == "D7UnavailableError: D7 did not answer (ReadTimeout)"


async def test_a_read_that_hangs_is_given_up_at_its_deadline() -> None:
    class Hangs(StubGateway):
        async def balance(self) -> Balance | None:
            await asyncio.sleep(30)
            return None

    w = watcher(Hangs(None), Posts(), within=0.05)

    async with asyncio.timeout(2):
        with pytest.raises(TimeoutError):
            await w.check()
    assert w.failure == "D7 did not answer within 0.05s"


async def test_the_loop_reads_soon_after_sends_once_for_a_burst_backs_off_on_failure_and_stops() -> None:
    gateway = StubGateway(Balance(50.0))
    w = watcher(gateway, Posts(), every=60.0, after_sends=0.05)

    async with w:
        await asyncio.sleep(0.02)
        assert gateway.reads == 1  # at start
        for _ in range(5):
            w.soon()
        await asyncio.sleep(0.2)
        assert gateway.reads == 2  # one read for the burst
        gateway.answers = [D7UnavailableError("down")]
        w.soon()
        await asyncio.sleep(0.2)
        assert gateway.reads == 3
        w.soon()  # backing off: sends do not hurry a failing D7
        await asyncio.sleep(0.2)
        assert gateway.reads == 3
        task = w._task
    assert task is not None
    assert task.done()


# ---------------------------------------------------------------- the running app


async def test_healthz_and_metrics_show_the_balance_and_a_crossing_is_told_once_in_the_admin_channel(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    fake_d7.balance, fake_d7.balance_currency = 7.25, "USD"
    async with running_app(slack, fake_d7, tmp_path, policy=WITH_LOW_BALANCE) as app:
        async with asyncio.timeout(5):
            while app.relay.balance.read_at is None:  # noqa: ASYNC110 - the first read, at start
                await asyncio.sleep(0.01)
        health = (await app.http.get(f"{app.url}/healthz")).json()
        metrics = (await app.http.get(f"{app.url}/metrics")).text
        await app.relay.balance.check()  # still low: not told again
        fake_d7.balance = 250.0
        await app.relay.balance.check()  # topped up: re-armed
        fake_d7.balance = 6.0
        await app.relay.balance.check()  # dropped again: told again

    balance = health["d7_balance"]
    assert health["status"] == "ok"
    assert (balance["amount"], balance["currency"], balance["below_warning_level"]) == (7.25, "USD", True)
    assert balance["read_at"].startswith("20")
    assert balance["last_read_failed"] is None
    assert 'relay_d7_balance{currency="USD"} 7.25' in metrics
    assert 'relay_d7_balance_warning_level{currency="USD"} 10.0' in metrics  # what the balance alert compares to
    assert "relay_d7_balance_read_timestamp_seconds " in metrics
    assert admin_posts(slack) == [
        low_balance_warning(Balance(7.25, "USD"), 10.0),
        low_balance_warning(Balance(6.0, "USD"), 10.0),
    ]


async def test_a_d7_without_the_balance_endpoint_changes_nothing_else(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    fake_d7.balance_offered = False
    async with running_app(slack, fake_d7, tmp_path, policy=WITH_LOW_BALANCE) as app:
        async with asyncio.timeout(5):
            while app.relay.balance.offered is None:  # noqa: ASYNC110 - the first read, at start
                await asyncio.sleep(0.01)
        response = await app.http.get(f"{app.url}/healthz")
        metrics = (await app.http.get(f"{app.url}/metrics")).text
        sent = await app.command("/sms", "+14155550100 deploy finished")
        await app.settle()

    assert response.status_code == 200
    assert response.json()["d7_balance"] is None
    assert "relay_d7_balance{" not in metrics
    assert "relay_d7_balance_warning_level{" not in metrics  # a level without a balance compares to nothing
    assert sent.status_code == 200
    assert len(fake_d7.sends) == 1
    assert admin_posts(slack) == []


async def test_accepted_sends_are_counted_as_billed_messages_by_rule_and_channel(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    two_segments = "x" * 200  # GSM-7, 153 per part
    async with running_app(slack, fake_d7, tmp_path, policy=WITH_LOW_BALANCE) as app:
        await app.command("/sms", f"+14155550100, +14155550101 {two_segments}")
        await app.command("/sms", "+14155550102 one part")
        await app.settle()
        metrics = app.relay.metrics

    assert sample(metrics, "relay_billed_messages_total", via="sms", rule="ops may page on-call", channel="C0OPS") == (
        2 * 2 + 1
    )


async def test_a_dry_run_bills_nothing_and_has_no_balance(slack: FakeSlack, tmp_path: Path) -> None:
    async with running_app(slack, None, tmp_path, policy=WITH_LOW_BALANCE) as app:
        await app.command("/sms", "+14155550100 hello")
        await app.settle()
        await app.relay.balance.check()
        health = (await app.http.get(f"{app.url}/healthz")).json()
        rendered = app.relay.metrics.render().decode()

    assert health["dry_run"] is True
    assert health["d7_balance"] is None
    assert "relay_billed_messages_total{" not in rendered
    assert admin_posts(slack) == []
