"""The database schema at the newest migration (``migrations/versions`` builds it step by step)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Stored as naive UTC (the same on SQLite and PostgreSQL), read back as aware UTC."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        parsed: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


metadata = sa.MetaData()

sends = sa.Table(
    "sends",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # who and where
    sa.Column("surface", sa.String(16), nullable=False),
    sa.Column("team_id", sa.String(32), nullable=False),
    sa.Column("user_id", sa.String(32), nullable=False),
    sa.Column("channel_id", sa.String(32), nullable=False),
    sa.Column("response_url", sa.Text()),
    sa.Column("origin_thread_ts", sa.String(32)),
    # what was asked
    sa.Column("via", sa.String(16), nullable=False),
    sa.Column("requested_sender", sa.String(64)),
    sa.Column("refs", sa.JSON(), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("schedule_time", UTCDateTime()),
    # the state machine and the outbox
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("deadline_at", UTCDateTime(), nullable=False),
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("lease_until", UTCDateTime()),
    # what checking decided
    sa.Column("rule", sa.String(120)),
    sa.Column("sender", sa.String(64)),
    sa.Column("originator", sa.String(64)),
    sa.Column("recipients", sa.JSON()),
    sa.Column("names", sa.JSON()),
    sa.Column("encoding", sa.String(16)),
    sa.Column("segments", sa.Integer()),
    sa.Column("refusal_kind", sa.String(16)),
    sa.Column("problems", sa.JSON()),
    # the story in Slack
    sa.Column("thread_ts", sa.String(32)),
    sa.Column("private", sa.Boolean(), nullable=False, default=False),
    sa.Column("retry_notice_posted", sa.Boolean(), nullable=False, default=False),
    sa.Column("posted_at", UTCDateTime()),
    # D7's answer
    sa.Column("request_id", sa.String(128)),
    sa.Column("http_status", sa.Integer()),
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_message", sa.Text()),
    sa.Column("finished_at", UTCDateTime()),
    # added by 0002
    sa.Column("d7_created_at", UTCDateTime()),
    sa.Column("error_kind", sa.String(64)),  # the D7 error's stable kind (0006; before: its class name)
    # added by 0003
    sa.Column("schedule_tz", sa.String(64)),
    # added by 0004: alert forwarding
    sa.Column("alert", sa.JSON()),
    sa.Column("fingerprint", sa.String(40)),
    sa.Column("sent_text", sa.Text()),
    sa.Column("duplicate_of", sa.String(36)),
    sa.Column("held", sa.JSON()),
    # added by 0005: delivery reports
    sa.Column("result_ts", sa.String(32)),  # the result message in the thread, updated in place
    sa.Column("card_due_at", UTCDateTime()),  # the result message must be updated (new statuses)
    sa.Column("reconciled_at", UTCDateTime()),  # last status look-up (or unknown-outcome note)
    sa.Column("delivery_final", sa.Boolean()),  # every recipient has a final status: no more look-ups
    # added by 0006
    sa.Column("dry_run", sa.Boolean()),  # D7_API_TOKEN was not set: nothing really went out
    # added by 0008
    sa.Column("template", sa.JSON()),  # WhatsApp: {alias, values} of the approved template the request names
    sa.Column("sent_template", sa.JSON()),  # ... and the one checking decided (an alert's: from its rule)
    # added by 0009
    sa.Column("step", sa.String(64)),  # a workflow step's function_execution_id (completed once D7 answered)
    sa.Column("workflow", sa.String(64)),  # the workflow_execution_id of that step's run (told in the channel)
    sa.Column("identity", sa.String(40)),  # an alert's identity: what a resolving post is matched on
    sa.Column("acked_by", sa.String(32)),  # who acknowledged the alert (a reaction or a reply in its thread)
    sa.Column("acked_at", UTCDateTime()),
    sa.Column("resolved_at", UTCDateTime()),  # when a resolving post ended the alert
    # added by 0013
    sa.Column("on_call", sa.JSON()),  # schedule → the Slack name of who was on call for it (the thread names them)
    # added by 0016: the worker that recorded it for a person, until it confirmed telling them "recorded"
    sa.Column("recorded_by", sa.String(64)),
    # added by 0018: a send in several D7 requests, each one's slice of the recipients and answer (null: one request)
    sa.Column("parts", sa.JSON()),
    sa.Index("ix_sends_due", "state", "next_attempt_at"),
    sa.Index("ix_sends_request_id", "request_id"),
    sa.Index("ix_sends_created_at", "created_at"),
    sa.Index("ix_sends_fingerprint", "fingerprint"),
    sa.Index("ix_sends_card_due_at", "card_due_at"),
    sa.Index("ix_sends_user_created_at", "user_id", "created_at"),  # 0008: a person's recent sends (App Home)
    sa.Index("ix_sends_identity", "identity"),  # 0009: the alert a resolving post ends
)

# The request ids of a send in several D7 requests (0018), all but the first (``sends.request_id``): a delivery
# report or ``/sms status`` names one of them.
send_requests = sa.Table(
    "send_requests",
    metadata,
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("send_id", sa.String(36), nullable=False),
    sa.Index("ix_send_requests_send_id", "send_id"),
)

kv = sa.Table(
    "kv",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Dedup: one row per alert fingerprint; the send that texted it ("leader") and until when repeats are suppressed.
alert_dedupe = sa.Table(
    "alert_dedupe",
    metadata,
    sa.Column("fingerprint", sa.String(40), primary_key=True),
    sa.Column("leader_id", sa.String(36), nullable=False),
    sa.Column("until", UTCDateTime(), nullable=False),
)

# Per-phone limits: the current window of each (alert rule, phone) and how many texts it has had.
alert_windows = sa.Table(
    "alert_windows",
    metadata,
    sa.Column("rule", sa.String(120), primary_key=True),
    sa.Column("phone", sa.String(20), primary_key=True),
    sa.Column("window_start", UTCDateTime(), nullable=False),
    sa.Column("window_end", UTCDateTime(), nullable=False),
    sa.Column("sent", sa.Integer(), nullable=False),
    sa.Column("last_held", sa.Boolean(), nullable=False),
)

# What each alert did for each phone: texted, or held for the end-of-window summary.
alert_deliveries = sa.Table(
    "alert_deliveries",
    metadata,
    sa.Column("send_id", sa.String(36), primary_key=True),
    sa.Column("phone", sa.String(20), primary_key=True),
    sa.Column("rule", sa.String(120), nullable=False),
    sa.Column("window_start", UTCDateTime(), nullable=False),
    sa.Column("held", sa.Boolean(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_alert_deliveries_window", "rule", "phone", "window_start"),
)

# The latest delivery status of each recipient of a send; a report only replaces a lower-ranked status.
recipient_statuses = sa.Table(
    "recipient_statuses",
    metadata,
    sa.Column("send_id", sa.String(36), primary_key=True),
    sa.Column("recipient", sa.String(32), primary_key=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("rank", sa.Integer(), nullable=False),
    sa.Column("reason", sa.Text()),
    sa.Column("notified", sa.Boolean(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_recipient_statuses_recipient", "recipient", "updated_at"),  # 0008: closed WhatsApp windows
    sa.Index("ix_recipient_statuses_updated_at", "updated_at"),  # 0008: today's failures (App Home)
)

# Delivery reports as D7 posted them, once per (message, status); applied when their send is known.
delivery_reports = sa.Table(
    "delivery_reports",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("report_key", sa.String(300), nullable=False, unique=True),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("recipient", sa.String(32), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text()),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("applied_at", UTCDateTime()),
    # 0017: only unapplied reports, by age (the sweep) and by request_id (a report or a request_id just known).
    sa.Index(
        "ix_delivery_reports_unapplied",
        "received_at",
        "request_id",
        sqlite_where=sa.text("applied_at IS NULL"),
        postgresql_where=sa.text("applied_at IS NULL"),
    ),
    sa.Index(
        "ix_delivery_reports_unapplied_request",
        "request_id",
        sqlite_where=sa.text("applied_at IS NULL"),
        postgresql_where=sa.text("applied_at IS NULL"),
    ),
)

# Budgets (0007): each budget's current window and what it has counted, in billed messages.
budget_windows = sa.Table(
    "budget_windows",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("window_start", UTCDateTime(), nullable=False),
    sa.Column("window_end", UTCDateTime(), nullable=False),
    sa.Column("used", sa.Integer(), nullable=False),
    # Whether the latest charge fitted: read back by the upsert of replicas before the group-committed ledger;
    # written (true once charged, false for a placeholder) but no longer read, kept for a rolling upgrade.
    sa.Column("last_taken", sa.Boolean(), nullable=False),
)

# What each send counted against each budget, so a send is counted once and can be given back.
budget_charges = sa.Table(
    "budget_charges",
    metadata,
    sa.Column("send_id", sa.String(36), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("window_start", UTCDateTime(), nullable=False),
    sa.Column("messages", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)


action_links = sa.Table(  # issue 28: one phone's link to one alert (``bot.domain.links``)
    "action_links",
    metadata,
    sa.Column("token", sa.String(32), primary_key=True),
    sa.Column("send_id", sa.String(36), nullable=False),
    sa.Column("alert_key", sa.String(255), nullable=False),
    sa.Column("phone", sa.String(20), nullable=False),
    sa.Column("form_token", sa.String(32), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("send_id", "phone", name="uq_action_links_send_phone"),
)

# Inbound (0011): every message a phone sent back, kept as it came, and what was done about it. ``dedupe_key`` is
# the body's digest while a second copy would be a duplicate; ``next_attempt_at`` is set while it is to be handled.
inbound = sa.Table(
    "inbound",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("dedupe_key", sa.String(64), unique=True),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("raw", sa.LargeBinary(), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("phone", sa.String(32)),
    sa.Column("text", sa.Text()),
    sa.Column("send_id", sa.String(36)),
    sa.Column("note_ts", sa.String(32)),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UTCDateTime()),
    sa.Column("lease_until", UTCDateTime()),
    sa.Index("ix_inbound_due", "next_attempt_at"),
    sa.Index("ix_inbound_received_at", "received_at"),
    sa.Index("ix_inbound_send_id", "send_id"),
)

# The opt-out list (0011): phones that get no texts but the one confirming their STOP.
opt_outs = sa.Table(
    "opt_outs",
    metadata,
    sa.Column("phone", sa.String(32), primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("way", sa.String(16), nullable=False),
    sa.Column("by", sa.String(64)),
)

# On-call overrides (0013): who took or was given a schedule's on-call from Slack, from when until when. Kept as
# history: a replaced override is cut short, so who was on call at a moment past never changes.
oncall_overrides = sa.Table(
    "oncall_overrides",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("schedule", sa.String(80), nullable=False),
    sa.Column("user_id", sa.String(32), nullable=False),
    sa.Column("starts_at", UTCDateTime(), nullable=False),
    sa.Column("ends_at", UTCDateTime(), nullable=False),
    sa.Column("by", sa.String(32), nullable=False),
    sa.Index("ix_oncall_overrides_schedule_ends", "schedule", "ends_at"),
)

# Each person's stint on a schedule (until ``ends_at``), noticed once: the handoff DM sent and the schedule's user
# group set. The row is the claim (one replica does it); ``claimed_until`` lets another take over what is left.
oncall_handoffs = sa.Table(
    "oncall_handoffs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("schedule", sa.String(80), nullable=False),
    sa.Column("user_id", sa.String(32), nullable=False),
    sa.Column("starts_at", UTCDateTime(), nullable=False),
    sa.Column("ends_at", UTCDateTime(), nullable=False),
    sa.Column("noticed_at", UTCDateTime()),
    sa.Column("group_set_at", UTCDateTime()),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("claimed_until", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("schedule", "user_id", "ends_at", name="uq_oncall_handoffs_stint"),
    sa.Index("ix_oncall_handoffs_ends", "ends_at"),
)

# Verified phones (0015): per person, the number they verified with a D7 Verify code, the code open now (D7's
# otp_id, never the code itself), wrong tries in a row and a block, and when they were last told how to verify.
phone_verifications = sa.Table(
    "phone_verifications",
    metadata,
    sa.Column("user_id", sa.String(32), primary_key=True),
    sa.Column("phone", sa.String(32)),
    sa.Column("verified_at", UTCDateTime()),
    sa.Column("otp_id", sa.String(64)),
    sa.Column("otp_phone", sa.String(32)),
    sa.Column("otp_sent_at", UTCDateTime()),
    sa.Column("otp_expires_at", UTCDateTime()),
    sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("blocked_until", UTCDateTime()),
    sa.Column("reminded_at", UTCDateTime()),
)
