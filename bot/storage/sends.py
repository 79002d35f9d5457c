"""The send log and outbox (``SendStore``): intents, their leases, and each named transition as one UPDATE.

Intent first: a request is inserted (unique idempotency key) before the Slack ack, and only the outbox worker that
holds a row's lease may move it on. ``sending`` is written *before* D7 is called, so a process that dies mid-send
leaves a row that recovery turns into ``unknown`` rather than sending twice. Rows and records are mapped both ways
here, side by side.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from bot.domain.alerts import AlertActivity
from bot.domain.errors import D7Error, D7OutcomeUnknownError, d7_error
from bot.domain.models import (
    AlertInfo,
    Origin,
    RecipientRef,
    RefKind,
    SendRequest,
    SendResult,
    SendStatus,
    Surface,
    Via,
)
from bot.domain.phone import PhoneNumber
from bot.domain.sends import Checked, LeaseLost, Outcome, Placement, Refusal, RefusalKind, SendRecord, SendState
from bot.domain.templates import TemplateUse
from bot.storage.database import Database, now
from bot.storage.schema import UTCDateTime, alert_deliveries, sends

log = logging.getLogger("bot.storage")

FINAL_STATES = [s.value for s in SendState if s.final]
STALE_GIVE_UP = timedelta(hours=24)  # delivery statuses are looked up this long after D7's answer
RECOVERED = "the bot stopped while D7 was being called; the text may or may not have gone out"

# ------------------------------------------------------------ records → rows


def _intent_row(request: SendRequest, send_id: str, at: datetime, due: datetime, deadline: datetime) -> dict[str, Any]:
    origin, alert = request.origin, request.alert
    return {
        "id": send_id,
        "idempotency_key": request.idempotency_key,
        "created_at": at,
        "updated_at": at,
        "surface": origin.surface.value,
        "team_id": origin.team_id,
        "user_id": origin.user_id,
        "channel_id": origin.channel_id,
        "response_url": origin.response_url,
        "origin_thread_ts": origin.thread_ts,
        "via": request.via.value,
        "requested_sender": request.sender,
        "refs": [{"kind": r.kind.value, "value": r.value, "label": r.label} for r in request.recipients],
        "text": request.text,
        "schedule_time": request.schedule_time,
        "schedule_tz": getattr(request.schedule_time.tzinfo, "key", None) if request.schedule_time else None,
        "state": SendState.PENDING.value,
        "attempts": 0,
        "next_attempt_at": due,
        "deadline_at": deadline,
        "private": False,
        "retry_notice_posted": False,
        "alert": _alert_json(alert),
        "fingerprint": alert.fingerprint if alert else None,
        "identity": alert.identity if alert else None,
        "template": {"alias": request.template.alias, "values": list(request.template.values)}
        if request.template
        else None,
        "step": request.step,
        "workflow": request.workflow,
    }


def _alert_json(alert: AlertInfo | None) -> dict[str, Any] | None:
    if alert is None:
        return None
    return {
        "rule": alert.rule,
        "kind": alert.kind.value,
        "fingerprint": alert.fingerprint,
        "message": alert.message,
        "phone": alert.phone,
        "window_start": alert.window_start.isoformat() if alert.window_start else None,
        "identity": alert.identity,
        "resolves": alert.resolves,
        "rules": list(alert.rules),
        "escalates": alert.escalates,
        "step": alert.step,
    }


def _checked_columns(record: SendRecord) -> dict[str, Any]:
    """What checking decided (``record.checked``), as columns."""
    checked = record.checked
    if checked is None:
        raise ValueError(f"send {record.id} is not checked")
    columns: dict[str, Any] = {
        "rule": checked.rule,
        "sender": checked.sender,
        "originator": checked.originator,
        "recipients": record.recipients,
        "names": dict(checked.names),
        "encoding": record.encoding,
        "segments": record.segments,
    }
    if record.alert is not None:  # the text came from the rule's template; who was held back or not reached
        columns |= {"sent_text": checked.text, "held": record.held, "problems": list(checked.unreached)}
    if checked.template is not None:  # the text is the WhatsApp template filled in
        use = checked.template
        columns |= {"sent_text": checked.text, "sent_template": {"alias": use.alias, "values": list(use.values)}}
    return columns


def _outcome_columns(outcome: Outcome) -> dict[str, Any]:
    """D7's answer, or the error; a later answer leaves an earlier attempt's error in place (the audit shows it)."""
    if outcome.result is not None:
        result = outcome.result
        return {"request_id": result.request_id, "d7_created_at": result.created_at, "dry_run": result.dry_run}
    return _error_columns(outcome.error or D7OutcomeUnknownError("no details"))


def _error_columns(error: D7Error) -> dict[str, Any]:
    return {
        "error_kind": error.kind,
        "http_status": error.http_status,
        "error_code": error.code,
        "error_message": str(error)[:2000],
    }


# ------------------------------------------------------------ rows → records


def _in_zone(when: datetime | None, zone: str | None) -> datetime | None:
    """Stored as UTC; given back in the zone it was asked in."""
    if when is None or not zone:
        return when
    try:
        return when.astimezone(ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError):
        return when


def _alert_of(data: dict[str, Any] | None) -> AlertInfo | None:
    if not data:
        return None
    start = data.get("window_start")
    return AlertInfo(
        rule=data["rule"],
        kind=Surface(data.get("kind") or Surface.ALERT.value),
        fingerprint=data.get("fingerprint"),
        message=data.get("message"),
        phone=data.get("phone"),
        window_start=datetime.fromisoformat(start) if start else None,
        identity=data.get("identity"),
        resolves=data.get("resolves"),
        rules=tuple(data.get("rules") or ()),
        escalates=data.get("escalates"),
        step=data.get("step"),
    )


def _request_of(m: Any) -> SendRequest:
    return SendRequest(
        via=Via(m["via"]),
        origin=Origin(
            surface=Surface(m["surface"]),
            team_id=m["team_id"],
            user_id=m["user_id"],
            channel_id=m["channel_id"],
            response_url=m["response_url"],
            thread_ts=m["origin_thread_ts"],
        ),
        recipients=tuple(RecipientRef(RefKind(r["kind"]), r["value"], r.get("label")) for r in m["refs"]),
        text=m["text"],
        idempotency_key=m["idempotency_key"],
        sender=m["requested_sender"],
        schedule_time=_in_zone(m["schedule_time"], m["schedule_tz"]),
        alert=_alert_of(m["alert"]),
        template=_template_of(m["template"]),
        step=m["step"],
        workflow=m["workflow"],
    )


def _template_of(data: dict[str, Any] | None) -> TemplateUse | None:
    return TemplateUse(data["alias"], tuple(data["values"])) if data else None


def _checked_of(m: Any, request: SendRequest) -> Checked | None:
    if m["recipients"] is None:  # not checked (or refused, or a repeat of an alert)
        return None
    held = list(m["held"] or [])
    alert = request.alert is not None
    return Checked(
        rule=m["rule"] or "",
        sender=m["sender"] or "",
        originator=m["originator"] or "",
        recipients=tuple(PhoneNumber(n) for n in m["recipients"] if n not in held),
        text=(m["sent_text"] if m["sent_text"] is not None else request.text).strip(),
        names=m["names"] or {},
        held=tuple(PhoneNumber(n) for n in held),
        unreached=tuple(m["problems"] or ()) if alert and not m["refusal_kind"] else (),
        template=_template_of(m["sent_template"]),
    )


def _error_of(m: Any, state: SendState) -> D7Error | None:
    if m["error_kind"] is None and state not in (SendState.FAILED, SendState.UNKNOWN):
        return None
    # An unknown outcome stays unknown whatever wrote it: "not sent" could make someone text it again.
    otherwise = D7OutcomeUnknownError if state is SendState.UNKNOWN else D7Error
    message = m["error_message"] or "no details"
    return d7_error(
        m["error_kind"] or "", message, http_status=m["http_status"], code=m["error_code"], otherwise=otherwise
    )


def _outcome_of(m: Any, state: SendState, error: D7Error | None) -> Outcome | None:
    if state in (SendState.ACCEPTED, SendState.REJECTED) and m["request_id"] is not None:
        status = SendStatus.ACCEPTED if state is SendState.ACCEPTED else SendStatus.REJECTED
        return Outcome(result=SendResult(m["request_id"], status, m["d7_created_at"], dry_run=bool(m["dry_run"])))
    return Outcome(error=error) if state.final and error is not None else None


def _record_of(row: sa.Row[Any]) -> SendRecord:
    m = row._mapping
    request = _request_of(m)
    state = SendState(m["state"])
    error = _error_of(m, state)
    return SendRecord(
        id=m["id"],
        request=request,
        state=state,
        created_at=m["created_at"],
        deadline_at=m["deadline_at"],
        attempts=m["attempts"],
        claimed_by=m["claimed_by"],
        checked=_checked_of(m, request),
        refusal=Refusal(RefusalKind(m["refusal_kind"]), tuple(m["problems"] or ())) if m["refusal_kind"] else None,
        duplicate_of=m["duplicate_of"],
        placement=Placement(m["thread_ts"], bool(m["private"])),
        retry_noticed=bool(m["retry_notice_posted"]),
        outcome=_outcome_of(m, state, error),
        last_error=error,
        finished_at=m["finished_at"],
        posted_at=m["posted_at"],
        result_ts=m["result_ts"],
        card_due_at=m["card_due_at"],
        reconciled_at=m["reconciled_at"],
        acked_by=m["acked_by"],
        resolved_at=m["resolved_at"],
    )


# ------------------------------------------------------------ the store


class SqlSendStore:
    """``SendStore`` on the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self, request: SendRequest, deadline: timedelta, not_before: datetime | None = None
    ) -> SendRecord | None:
        """Insert a pending intent (group-committed with the others arriving now); None for a duplicate key."""
        at = now()
        due = max(at, not_before) if not_before is not None else at
        send_id = str(uuid.uuid4())
        if not await self._db.insert_once(
            sends, "idempotency_key", _intent_row(request, send_id, at, due, due + deadline)
        ):
            return None
        return SendRecord(
            id=send_id, request=request, state=SendState.PENDING, created_at=at, deadline_at=due + deadline
        )

    # ------------------------------------------------------------ leases

    def _due(self, at: datetime) -> sa.ColumnElement[bool]:
        work = sa.or_(
            sa.and_(
                sa.or_(
                    sends.c.state == SendState.PENDING.value,
                    sa.and_(sends.c.state.in_(FINAL_STATES), sends.c.posted_at.is_(None)),
                ),
                sends.c.next_attempt_at <= at,
            ),
            sa.and_(sends.c.card_due_at <= at, sends.c.posted_at.is_not(None)),  # new statuses for the result message
        )
        return sa.and_(work, sa.or_(sends.c.lease_until.is_(None), sends.c.lease_until < at))

    async def claim(self, worker_id: str, limit: int, lease: timedelta) -> list[SendRecord]:
        """``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING *`` on PostgreSQL: concurrent workers
        skip each other's rows instead of waiting. SQLite has a single writer, so the plain subquery is atomic."""
        at = now()
        due = (
            sa.select(sends.c.id)
            .where(self._due(at))
            .order_by(sends.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = (
            sends.update()
            .where(sends.c.id.in_(due))
            .values(claimed_by=worker_id, lease_until=at + lease, updated_at=at)
            .returning(*sends.c)
        )
        async with self._db.begin() as conn:
            rows = (await conn.execute(statement)).all()
        records = []
        for row in rows:
            try:
                records.append(_record_of(row))
            except (ValueError, KeyError, TypeError) as exc:  # one unreadable row must not hold up the others
                log.error("send_id=%s cannot be read (%s); a person must look at it", row.id, type(exc).__name__)
        return sorted(records, key=lambda r: r.created_at)

    async def renew(self, worker_id: str, send_ids: Sequence[str], lease: timedelta) -> None:
        if not send_ids:
            return
        async with self._db.begin() as conn:
            await conn.execute(
                sends.update()
                .where(sends.c.id.in_(list(send_ids)), sends.c.claimed_by == worker_id)
                .values(lease_until=now() + lease)
            )

    async def release(self, record: SendRecord) -> None:
        await self._try(record, claimed_by=None, lease_until=None)

    async def recover(self, *, everything: bool) -> int:
        at = now()
        condition = sends.c.state == SendState.SENDING.value
        if not everything:
            condition = sa.and_(condition, sends.c.lease_until < at)
        unknown = {**_error_columns(D7OutcomeUnknownError(RECOVERED)), "state": SendState.UNKNOWN.value}
        async with self._db.begin() as conn:
            result = await conn.execute(
                sends.update()
                .where(condition)
                .values(**unknown, claimed_by=None, lease_until=None, finished_at=at, updated_at=at)
            )
            if everything:
                await conn.execute(
                    sends.update().where(sends.c.claimed_by.is_not(None)).values(claimed_by=None, lease_until=None)
                )
        return int(result.rowcount)

    # ------------------------------------------------------------ transitions

    async def _change(self, record: SendRecord, *conditions: sa.ColumnElement[bool], **values: Any) -> None:
        """Write one transition's columns, only while this worker holds the row; ``LeaseLost`` if it does not."""
        if not await self._try(record, *conditions, **values):
            raise LeaseLost(record.id)

    async def _try(self, record: SendRecord, *conditions: sa.ColumnElement[bool], **values: Any) -> bool:
        """Like ``_change``; False when the row did not match (lost lease, or a condition no longer true)."""
        statement = (
            sends.update()
            .where(sends.c.id == record.id, sends.c.claimed_by == record.claimed_by, *conditions)
            .values(updated_at=now(), **values)
        )
        return await self._db.write(statement) == 1

    async def deny(self, record: SendRecord, refusal: Refusal) -> SendRecord:
        new = record.deny(refusal, now())
        await self._change(
            record,
            state=new.state.value,
            refusal_kind=refusal.kind.value,
            problems=list(refusal.problems),
            finished_at=new.finished_at,
        )
        return new

    async def deduplicate(self, record: SendRecord, first_id: str) -> SendRecord:
        new = record.deduplicate(first_id, now())
        await self._change(
            record,
            state=new.state.value,
            rule=new.rule,
            sender=new.sender,
            duplicate_of=first_id,
            finished_at=new.finished_at,
        )
        return new

    async def bundle(self, record: SendRecord, checked: Checked) -> SendRecord:
        new = record.bundle(checked, now())
        await self._change(record, state=new.state.value, finished_at=new.finished_at, **_checked_columns(new))
        return new

    async def start(
        self, record: SendRecord, checked: Checked, placement: Placement, lease: timedelta
    ) -> SendRecord | None:
        new = record.start(checked, placement)
        started = await self._try(
            record,
            sends.c.state == SendState.PENDING.value,
            state=new.state.value,
            attempts=sends.c.attempts + 1,
            lease_until=now() + lease,
            thread_ts=placement.thread_ts,
            private=placement.private,
            **_checked_columns(new),
        )
        return new if started else None

    async def place(self, record: SendRecord, placement: Placement) -> SendRecord:
        await self._change(record, thread_ts=placement.thread_ts, private=placement.private)
        return record.place(placement)

    async def notice_retry(self, record: SendRecord) -> SendRecord:
        await self._try(record, retry_notice_posted=True)
        return record.notice_retry()

    async def defer(self, record: SendRecord, until: datetime, error: D7Error) -> SendRecord:
        new = record.defer(error)
        await self._change(
            record,
            state=new.state.value,
            next_attempt_at=until,
            claimed_by=None,
            lease_until=None,
            **_error_columns(error),
        )
        return new

    async def finish(self, record: SendRecord, outcome: Outcome) -> SendRecord:
        new = record.finish(outcome, now())
        await self._change(record, state=new.state.value, finished_at=new.finished_at, **_outcome_columns(outcome))
        return new

    async def told(self, record: SendRecord, result_ts: str | None) -> SendRecord:
        new = record.told(now(), result_ts)
        await self._change(record, posted_at=new.posted_at, result_ts=result_ts, claimed_by=None, lease_until=None)
        return new

    async def later(self, record: SendRecord, until: datetime) -> SendRecord:
        new = record.later()
        # Never a row in 'sending' (its start may have landed although the caller saw it fail): it stays leased, so
        # that recovery settles it as unknown instead of it waiting for ever without a lease.
        not_sending = sends.c.state != SendState.SENDING.value
        await self._change(
            record, not_sending, attempts=new.attempts, next_attempt_at=until, claimed_by=None, lease_until=None
        )
        return new

    async def card_due(self, send_id: str, *, final: bool) -> None:
        statement = sends.update().where(sends.c.id == send_id)
        await self._db.write(statement.values(card_due_at=now(), delivery_final=final or None))

    async def card_shown(self, record: SendRecord, due_at: datetime) -> None:
        await self._try(record, sends.c.card_due_at == due_at, card_due_at=None)  # a newer status keeps it due

    async def card_later(self, record: SendRecord, until: datetime) -> None:
        await self._change(record, card_due_at=until, claimed_by=None, lease_until=None)

    # ------------------------------------------------------------ reading

    async def get(self, send_id: str) -> SendRecord | None:
        async with self._db.connect() as conn:
            row = (await conn.execute(sa.select(sends).where(sends.c.id == send_id))).first()
        return _record_of(row) if row is not None else None

    async def by_request_ids(self, request_ids: Sequence[str]) -> dict[str, SendRecord]:
        if not request_ids:
            return {}
        query = sa.select(sends).where(sends.c.request_id.in_(list(set(request_ids))))
        async with self._db.connect() as conn:
            records = [_record_of(row) for row in (await conn.execute(query)).all()]
        return {r.request_id: r for r in records if r.request_id}

    async def backlog(self) -> int:
        query = sa.select(sa.func.count()).where(
            sa.or_(sends.c.state.in_([SendState.PENDING.value, SendState.SENDING.value]), sends.c.posted_at.is_(None))
        )
        async with self._db.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def stuck(self) -> int:
        query = sa.select(sa.func.count()).where(sends.c.state == SendState.SENDING.value, sends.c.lease_until < now())
        async with self._db.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def audit(self, since: datetime | None = None) -> list[SendRecord]:
        query = sa.select(sends).order_by(sends.c.created_at)
        if since is not None:
            query = query.where(sends.c.created_at >= since)
        async with self._db.connect() as conn:
            return [_record_of(r) for r in (await conn.execute(query)).all()]

    async def recent_of(self, user_id: str, limit: int) -> list[SendRecord]:
        c = sends.c
        query = (
            sa.select(sends)
            .where(c.user_id == user_id, c.surface.not_in([s.value for s in Surface if s.is_alert]))
            .order_by(c.created_at.desc())
            .limit(limit)
        )
        async with self._db.connect() as conn:
            return [_record_of(r) for r in (await conn.execute(query)).all()]

    async def acknowledge(self, idempotency_key: str, user_id: str) -> SendRecord | None:
        c = sends.c
        statement = (
            sends.update()
            .where(c.idempotency_key == idempotency_key, c.surface == Surface.ALERT.value)
            .where(c.acked_at.is_(None), c.resolved_at.is_(None))
            .values(acked_by=user_id, acked_at=now())
        )
        async with self._db.begin() as conn:
            if (await conn.execute(statement)).rowcount != 1:
                return None  # not an alert, or acknowledged (or resolved) before: the first one counts
        return await self.by_key(idempotency_key)

    async def mark_resolved(self, send_id: str) -> None:
        statement = sends.update().where(sends.c.id == send_id, sends.c.resolved_at.is_(None))
        await self._db.write(statement.values(resolved_at=now()))

    async def acked_repeat(self, rule: str, fingerprint: str, since: datetime) -> SendRecord | None:
        c = sends.c
        query = (
            sa.select(sends)
            .where(c.fingerprint == fingerprint, c.surface == Surface.ALERT.value, c.acked_at.is_not(None))
            .where(c.resolved_at.is_(None), c.created_at >= sa.literal(since, UTCDateTime()))
            .order_by(c.created_at.desc())
            .limit(1)
        )
        async with self._db.connect() as conn:
            row = (await conn.execute(query)).first()
        record = _record_of(row) if row is not None else None
        return record if record is not None and record.request.alert and record.request.alert.rule == rule else None

    async def by_key(self, idempotency_key: str) -> SendRecord | None:
        async with self._db.connect() as conn:
            row = (await conn.execute(sa.select(sends).where(sends.c.idempotency_key == idempotency_key))).first()
        return _record_of(row) if row is not None else None

    async def latest_alert(
        self, channel_id: str, identity: str, since: datetime, rules: Collection[str]
    ) -> SendRecord | None:
        c = sends.c
        query = (
            sa.select(sends)
            .where(c.identity == identity, c.channel_id == channel_id, c.surface == Surface.ALERT.value)
            .where(c.created_at >= sa.literal(since, UTCDateTime()), c.duplicate_of.is_(None))
            .where(c.alert["rule"].as_string().in_(list(rules)))
            .order_by(c.created_at.desc())
            .limit(1)
        )
        async with self._db.connect() as conn:
            row = (await conn.execute(query)).first()
        return _record_of(row) if row is not None else None

    async def counts_since(self, since: datetime) -> list[tuple[str, str, int]]:
        c = sends.c
        query = (
            sa.select(c.channel_id, c.state, sa.func.count())
            .where(c.created_at >= sa.literal(since, UTCDateTime()), c.surface != Surface.SUMMARY.value)
            .group_by(c.channel_id, c.state)
        )
        async with self._db.connect() as conn:
            return [(str(ch), str(st), int(n)) for ch, st, n in (await conn.execute(query)).all()]

    async def needing_a_person(self, since: datetime, limit: int) -> list[SendRecord]:
        c = sends.c
        states = [SendState.UNKNOWN.value, SendState.REJECTED.value, SendState.FAILED.value]
        query = (
            sa.select(sends)
            .where(c.created_at >= sa.literal(since, UTCDateTime()), c.state.in_(states))
            .order_by(c.created_at.desc())
            .limit(limit)
        )
        async with self._db.connect() as conn:
            return [_record_of(r) for r in (await conn.execute(query)).all()]

    async def alert_activity(self, since: datetime) -> list[AlertActivity]:
        c, d = sends.c, alert_deliveries.c
        at = sa.literal(since, UTCDateTime())
        rule = c.alert["rule"].as_string()

        def count(*states: SendState) -> Any:
            return sa.func.sum(sa.case((c.state.in_([s.value for s in states]), 1), else_=0))

        query = (
            sa.select(
                rule,
                sa.func.max(c.created_at),
                count(SendState.ACCEPTED),
                count(SendState.DEDUPLICATED),
                count(SendState.DENIED, SendState.REJECTED, SendState.FAILED),
            )
            .where(c.created_at >= at, c.surface == Surface.ALERT.value)
            .group_by(rule)
        )
        held = sa.select(d.rule, sa.func.count()).where(d.created_at >= at, d.held.is_(True)).group_by(d.rule)
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
            holds = {str(r): int(n) for r, n in (await conn.execute(held)).all()}
        return [
            AlertActivity(
                rule=str(name),
                last_match=UTCDateTime().process_result_value(last, self._db.engine.dialect),
                texted=int(texted or 0),
                held=holds.get(str(name), 0),
                repeats=int(repeats or 0),
                refused=int(refused or 0),
            )
            for name, last, texted, repeats, refused in rows
        ]

    async def claim_stale(self, limit: int, after: timedelta, again: timedelta) -> list[SendRecord]:
        at = now()
        c = sends.c
        accepted = sa.and_(
            c.state == SendState.ACCEPTED.value,
            c.request_id.is_not(None),
            c.dry_run.is_not(True),
            c.delivery_final.is_not(True),
            sa.or_(c.reconciled_at.is_(None), c.reconciled_at < at - again),
        )
        unknown = sa.and_(c.state == SendState.UNKNOWN.value, c.reconciled_at.is_(None))
        stale = (
            sa.select(c.id)
            .where(
                sa.or_(accepted, unknown),
                c.posted_at.is_not(None),
                sa.func.coalesce(c.finished_at, c.created_at) < at - after,
                sa.func.coalesce(c.finished_at, c.created_at) > at - STALE_GIVE_UP,
            )
            .order_by(c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = sends.update().where(c.id.in_(stale)).values(reconciled_at=at).returning(*sends.c)
        async with self._db.begin() as conn:
            return [_record_of(r) for r in (await conn.execute(statement)).all()]
