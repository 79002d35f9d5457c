"""Prometheus metrics (``GET /metrics``), in a registry of the bot's own so several bots can live in one test."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Every metric the bot exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.outbox_depth = Gauge(
            "relay_outbox_depth",
            "Intents not yet sent, or whose outcome is not yet told in Slack",
            registry=self.registry,
        )
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

    # ``SendMetrics``: what the sending core counts, in its words.

    def send_ended(self, via: str, outcome: str) -> None:
        self.sends.labels(via, outcome).inc()

    def d7_answered(self, via: str, seconds: float) -> None:
        self.d7_latency.labels(via).observe(seconds)

    def d7_retried(self, via: str, reason: str) -> None:
        self.d7_retries.labels(via, reason).inc()

    def count_billed(self, via: str, rule: str, channel: str, messages: int) -> None:
        self.billed.labels(via, rule, channel).inc(messages)

    def refused_over_budget(self, scope: str) -> None:
        self.over_budget.labels(scope).inc()

    def backlog(self, depth: int) -> None:
        self.outbox_depth.set(depth)

    def balance_read(self, amount: float | None, currency: str | None, at: float) -> None:
        self.d7_balance.clear()  # a single series, also if the currency changes
        if amount is None:
            return
        self.d7_balance.labels(currency or "unknown").set(amount)
        self.d7_balance_read.set(at)

    def render(self) -> bytes:
        return generate_latest(self.registry)
