"""Rows and records, mapped both ways side by side: a request as the columns of a new intent, what checking decided
and D7's answer as the columns each transition writes, and a row read back as a ``SendRecord``."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from bot.domain.errors import D7Error, D7OutcomeUnknownError, d7_error
from bot.domain.models import (
    AlertInfo,
    AlertResolution,
    AlertSummary,
    EscalationStep,
    FiringAlert,
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
from bot.domain.sends import Checked, Outcome, Part, PartState, Placement, Refusal, RefusalKind, SendRecord, SendState
from bot.domain.templates import TemplateUse

FINAL_STATES = [s.value for s in SendState if s.final]

# ------------------------------------------------------------ records → rows


def intent_row(
    request: SendRequest, send_id: str, at: datetime, due: datetime, deadline: datetime, recorder: str | None = None
) -> dict[str, Any]:
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
        "fingerprint": alert.fingerprint if isinstance(alert, FiringAlert) else None,
        "identity": alert.identity if isinstance(alert, FiringAlert | AlertResolution) else None,
        "template": {"alias": request.template.alias, "values": list(request.template.values)}
        if request.template
        else None,
        "step": request.step,
        "workflow": request.workflow,
        "recorded_by": recorder,
    }


# Every kind of alert is kept with every key (those it has not: null), as before they were told apart by type: a
# row written by either version reads back in the other.
_ALERT_KEYS = ("fingerprint", "message", "phone", "window_start", "identity", "resolves", "escalates", "step")


def _alert_json(alert: AlertInfo | None) -> dict[str, Any] | None:
    if alert is None:
        return None
    data: dict[str, Any] = dict.fromkeys(_ALERT_KEYS) | {"rules": [], "kind": alert.kind.value}
    for item in fields(alert):
        value = getattr(alert, item.name)
        if isinstance(value, datetime):
            value = value.isoformat()
        data[item.name] = list(value) if isinstance(value, tuple) else value
    return data


def checked_columns(record: SendRecord) -> dict[str, Any]:
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
        "on_call": dict(checked.on_call) or None,
        "encoding": record.encoding,
        "segments": record.segments,
    }
    if record.alert is not None:  # the text came from the rule's template; who was held back or not reached
        columns |= {"sent_text": checked.text, "held": record.held, "problems": list(checked.unreached)}
    elif checked.unreached:  # a person's group send: the members left out (opted out)
        columns["problems"] = list(checked.unreached)
    if checked.template is not None:  # the text is the WhatsApp template filled in
        use = checked.template
        columns |= {"sent_text": checked.text, "sent_template": {"alias": use.alias, "values": list(use.values)}}
    return columns


def outcome_columns(outcome: Outcome) -> dict[str, Any]:
    """D7's answer, or the error; a later answer leaves an earlier attempt's error in place (the audit shows it).
    A send in several requests keeps the first's id in ``request_id`` and every one's answer in ``parts``."""
    if outcome.result is not None:
        result = outcome.result
        return {
            "request_id": result.request_id,
            "d7_created_at": result.created_at,
            "dry_run": result.dry_run,
            "parts": [part_json(p) for p in outcome.parts] or None,
        }
    return error_columns(outcome.error or D7OutcomeUnknownError("no details"))


def part_json(part: Part) -> dict[str, Any]:
    """One request of a send in several, as kept (the ``parts`` column, the journal's lines)."""
    return {
        "first": part.first,
        "count": part.count,
        "state": part.state.value,
        "request_id": part.request_id,
        "error": part.error,
    }


def not_sent_reason(part: Part) -> str:
    """The reason shown beside a phone of a request that certainly texted nobody."""
    if part.state is PartState.REJECTED:
        return "not sent: D7 rejected its request"
    if part.state is PartState.NOT_SENT:
        return "not sent: an earlier request of this send failed"
    return f"not sent: {part.error or 'D7 refused its request'}"


def part_of(data: dict[str, Any]) -> Part:
    return Part(
        int(data["first"]), int(data["count"]), PartState(data["state"]), data.get("request_id"), data.get("error")
    )


def error_columns(error: D7Error) -> dict[str, Any]:
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
    rule, kind = data["rule"], Surface(data.get("kind") or Surface.ALERT.value)
    if kind is Surface.SUMMARY:
        start = data.get("window_start")
        return AlertSummary(rule, data.get("phone"), datetime.fromisoformat(start) if start else None)
    if kind is Surface.ESCALATION:
        return EscalationStep(rule, data.get("escalates"), data.get("step"))
    if kind is Surface.RESOLVED:
        rules = tuple(data.get("rules") or ())
        return AlertResolution(rule, data.get("message"), data.get("identity"), data.get("resolves"), rules)
    return FiringAlert(rule, data.get("fingerprint"), data.get("message"), data.get("identity"))


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
    return Checked(
        rule=m["rule"] or "",
        sender=m["sender"] or "",
        originator=m["originator"] or "",
        recipients=tuple(PhoneNumber(n) for n in m["recipients"] if n not in held),
        text=(m["sent_text"] if m["sent_text"] is not None else request.text).strip(),
        names=m["names"] or {},
        held=tuple(PhoneNumber(n) for n in held),
        unreached=tuple(m["problems"] or ()) if not m["refusal_kind"] else (),
        template=_template_of(m["sent_template"]),
        on_call=m["on_call"] or {},
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
        result = SendResult(m["request_id"], status, m["d7_created_at"], dry_run=bool(m["dry_run"]))
        return Outcome(result=result, parts=tuple(part_of(p) for p in m["parts"] or ()))
    return Outcome(error=error) if state.final and error is not None else None


def record_of(row: sa.Row[Any]) -> SendRecord:
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
        acked_at=m["acked_at"],
        resolved_at=m["resolved_at"],
        recorded_by=m["recorded_by"],
    )
