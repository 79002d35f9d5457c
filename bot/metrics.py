"""Prometheus metrics (``GET /metrics``), in a registry of the bot's own so several bots can live in one test.

``docs/grafana/relay.json`` charts them and ``docs/prometheus/relay-alerts.yml`` alerts on them;
``tests/test_dashboard.py`` checks that both name only what is exported here.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from bot.domain.errors import D7AuthError, D7InsufficientCreditError
from bot.domain.models import Via
from bot.domain.sends import SendState

# Series exported at 0 from the start: Prometheus' increase() and rate() see no increase in a series' first sample,
# so without them the first (perhaps only) failure of a kind would never fire the alerts that read them.
TOLD_BY_D7 = (SendState.ACCEPTED, SendState.REJECTED, SendState.FAILED, SendState.UNKNOWN)
NEEDS_A_PERSON = (D7AuthError, D7InsufficientCreditError)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Every metric the bot exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_* (memory, CPU, open files): on Linux, from /proc
        self.sends = Counter(
            "relay_sends_total",
            "Send intents that ended, by via and outcome",
            ["via", "outcome"],
            registry=self.registry,
        )
        self.d7_latency = Histogram(
            "relay_d7_send_seconds",
            "Time for D7 to answer a send, retries inside the client included",
            ["via"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.d7_retries = Counter(
            "relay_d7_retries_total",
            "Retries of D7 calls that provably did not send",
            ["via", "reason"],
            registry=self.registry,
        )
        self.d7_errors = Counter(
            "relay_d7_errors_total",
            "Sends that ended on a D7 error, by via and error (a retryable one once its deadline passed)",
            ["via", "error"],
            registry=self.registry,
        )
        self.outbox_depth = Gauge(
            "relay_outbox_depth",
            "Intents not yet sent, or whose outcome is not yet told in Slack",
            registry=self.registry,
        )
        self.outbox_overdue = Gauge(
            "relay_outbox_oldest_due_seconds",
            "How long the longest-waiting due intent has waited for a worker (0 when none waits)",
            registry=self.registry,
        )
        # Refreshed from /healthz's own checks on each scrape (``observe_health``).
        self.stuck = Gauge(
            "relay_sends_stuck",
            "Intents left 'sending' by a worker whose lease ran out, not yet settled as unknown",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "relay_sends_in_flight",
            "Intents this process's outbox is working on",
            registry=self.registry,
        )
        self.writes_failing = Gauge(
            "relay_db_writes_failing",
            "1 while the database takes no writes (the last write failed, the write lock is held elsewhere, or the "
            "database does not answer), else 0",
            registry=self.registry,
        )
        self.write_failures = Counter(
            "relay_db_write_failures_total",
            "Database write transactions that failed (an intent among them means a request answered 'not recorded')",
            registry=self.registry,
        )
        self._write_failures_seen = 0
        self.slack_errors = Counter(
            "relay_slack_api_errors_total",
            "Slack Web API calls that failed",
            ["method", "error"],
            registry=self.registry,
        )
        self.reports = Counter(
            "relay_delivery_reports_total",
            "Delivery reports received at /d7/reports, by the HTTP status answered",
            ["status"],
            registry=self.registry,
        )
        self.acks = Histogram(
            "relay_ack_seconds",
            "Time from a Slack request to its ack",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )

        self.d7_balance = Gauge(
            "relay_d7_balance",
            "The D7 account's credit as last read (absent when D7 does not offer it), by currency",
            ["currency"],
            registry=self.registry,
        )
        self.d7_balance_read = Gauge(
            "relay_d7_balance_read_timestamp_seconds",
            "When the D7 balance was last read (Unix time)",
            registry=self.registry,
        )
        self.d7_balance_low = Gauge(
            "relay_d7_balance_warning_level",
            "The policy's defaults.low_balance, by the balance's currency (absent without a level or a balance)",
            ["currency"],
            registry=self.registry,
        )
        self._balance_currency: str | None = None  # the label of the balance shown, if one is
        # Not by user: every member of the workspace would be a series. Per-user spend is in the audit log and
        # the budgets. Channels outside the policy's own list are counted as "other" (a "*" rule admits any).
        self.billed = Counter(
            "relay_billed_messages_total",
            "Messages D7 accepted to bill (SMS: recipients x segments; WhatsApp: recipients), by rule and channel",
            ["via", "rule", "channel"],
            registry=self.registry,
        )
        self.over_budget = Counter(
            "relay_over_budget_total",
            "Sends and alerts refused because they would overrun one of the policy's budgets, by the budget's scope "
            "(rule_per_user, rule_per_channel, per_user, per_channel, workspace, alert_rule)",
            ["scope"],
            registry=self.registry,
        )
        for via in Via:
            for state in TOLD_BY_D7:
                self.sends.labels(via.value, state.value)
            for error in NEEDS_A_PERSON:
                self.d7_errors.labels(via.value, error.__name__)

    # ``SendMetrics``: what the sending core counts, in its words.

    def send_ended(self, via: str, outcome: str) -> None:
        self.sends.labels(via, outcome).inc()

    def d7_answered(self, via: str, seconds: float) -> None:
        self.d7_latency.labels(via).observe(seconds)

    def d7_retried(self, via: str, reason: str) -> None:
        self.d7_retries.labels(via, reason).inc()

    def d7_failed(self, via: str, error: str) -> None:
        self.d7_errors.labels(via, error).inc()

    def count_billed(self, via: str, rule: str, channel: str, messages: int) -> None:
        self.billed.labels(via, rule, channel).inc(messages)

    def refused_over_budget(self, scope: str) -> None:
        self.over_budget.labels(scope).inc()

    def backlog(self, depth: int) -> None:
        self.outbox_depth.set(depth)

    def overdue(self, seconds: float) -> None:
        self.outbox_overdue.set(seconds)

    def balance_read(self, amount: float | None, currency: str | None, at: float) -> None:
        self.d7_balance.clear()  # a single series, also if the currency changes
        self._balance_currency = None
        if amount is None:
            return
        self._balance_currency = currency or "unknown"
        self.d7_balance.labels(self._balance_currency).set(amount)
        self.d7_balance_read.set(at)

    # What ``/healthz`` found, for the scrape that asked it (``bot.health``).

    def observe_health(
        self, *, stuck: int | None, in_flight: int, writes_ok: bool, write_failures: int, low_balance: float | None
    ) -> None:
        """``write_failures``: failed writes since start (the database counts them); the counter takes the rest."""
        if stuck is not None:  # None: the database did not answer; the last count stands
            self.stuck.set(stuck)
        self.in_flight.set(in_flight)
        self.writes_failing.set(0 if writes_ok else 1)
        if write_failures > self._write_failures_seen:
            self.write_failures.inc(write_failures - self._write_failures_seen)
            self._write_failures_seen = write_failures
        self.d7_balance_low.clear()
        if low_balance is not None and self._balance_currency is not None:
            self.d7_balance_low.labels(self._balance_currency).set(low_balance)

    def render(self) -> bytes:
        return generate_latest(self.registry)
