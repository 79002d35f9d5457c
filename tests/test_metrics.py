"""What ``GET /metrics`` tells an operator beyond counts, as the dashboard and the alert rules read it
(``docs/grafana/relay.json``, ``docs/prometheus/relay-alerts.yml``): writes failing, sends stuck, sends in flight."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from bot.domain.clock import utc_now
from bot.domain.sends import SendState
from bot.metrics import Metrics
from bot.storage.schema import sends
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import App, running_app


async def scrape(app: App) -> dict[str, float]:
    """``GET /metrics`` as Prometheus reads it: each unlabelled sample by name."""
    response = await app.http.get(f"{app.url}/metrics")
    assert response.status_code == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels
    }


@contextmanager
def writes_refused() -> Iterator[None]:
    """Every INSERT, UPDATE and DELETE fails as SQLite fails them on a full disk (reads still work)."""

    def refuse(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            raise sqlite3.OperationalError("database or disk is full")

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", refuse)
    try:
        yield
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", refuse)


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_metrics_say_while_writes_fail_and_count_every_failed_write(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path) as app:
        before = await scrape(app)
        with writes_refused():
            refused = await app.command("/sms", "+14155550100 not recorded")
            during = await scrape(app)
        await app.command("/sms", "+14155550100 recorded")
        await app.settle()
        after = await scrape(app)
        failures = app.relay.storage.database.writes.failures

    assert "could not record your request" in refused.json()["text"]
    assert (before["relay_db_writes_failing"], before["relay_db_write_failures_total"]) == (0.0, 0.0)
    assert during["relay_db_writes_failing"] == 1.0
    assert during["relay_db_write_failures_total"] >= 1.0  # the intent's insert, at least
    assert after["relay_db_writes_failing"] == 0.0  # a write worked since
    assert after["relay_db_write_failures_total"] == failures  # each one counted, none twice


async def test_metrics_show_sends_in_flight_and_sends_a_dead_worker_left_sending(
    slack: FakeSlack, tmp_path: Path
) -> None:
    with FakeD7(delay=1.0) as d7:
        async with running_app(slack, d7, tmp_path) as app:
            await app.command("/sms", "+14155550100 slow answer")
            await until(lambda: len(d7.requests) == 1)
            waiting = await scrape(app)
            await app.settle()
            idle = await scrape(app)
            (record,) = await app.relay.storage.sends.audit()
            lapsed = utc_now() - timedelta(minutes=5)
            async with app.relay.storage.database.begin() as conn:  # as a worker that died mid-send leaves it
                await conn.execute(
                    sends.update()
                    .where(sends.c.id == record.id)
                    .values(state=SendState.SENDING.value, claimed_by="worker-dead", lease_until=lapsed)
                )
            stuck = await scrape(app)

    assert (waiting["relay_sends_in_flight"], waiting["relay_sends_stuck"]) == (1.0, 0.0)
    assert (idle["relay_sends_in_flight"], idle["relay_outbox_depth"], idle["relay_outbox_oldest_due_seconds"]) == (
        0.0,
        0.0,
        0.0,
    )
    assert (stuck["relay_sends_stuck"], stuck["relay_outbox_depth"]) == (1.0, 1.0)


def test_the_series_alerts_count_on_start_at_zero_so_that_the_first_failure_is_an_increase() -> None:
    rendered = Metrics().render().decode()

    assert 'relay_d7_errors_total{error="D7AuthError",via="sms"} 0.0' in rendered
    assert 'relay_d7_errors_total{error="D7InsufficientCreditError",via="whatsapp"} 0.0' in rendered
    assert 'relay_sends_total{outcome="failed",via="sms"} 0.0' in rendered
    assert "relay_db_write_failures_total 0.0" in rendered
