"""A send to more phones than one D7 request takes (a broadcast): its requests after the first, one after the other,
once the first was accepted.

Some phones have their text from then on, so nothing is tried again later (that would text them twice): a request
that fails ends the send there, and its phones and the later ones are told "not sent" — or "may have gone", when
D7's answer to it was lost. Before each request the journal notes the send as it would stand if the process stopped
during it (that request "unknown", the later ones not sent): the next start settles it so, not all "unknown".
"""

from __future__ import annotations

import logging
import time

from bot.domain.errors import D7Error, D7OutcomeUnknownError
from bot.domain.models import OutgoingText, SendResult, Via
from bot.domain.ports import AnswerJournal, MessageGateway, RetryHook, SendMetrics
from bot.domain.sends import Outcome, Part, PartState, SendRecord

log = logging.getLogger("bot.sending")

STOPPED = "the bot stopped while D7 was being called; these texts may or may not have gone out"
CRASHED = "an internal error interrupted this request; its texts may or may not have gone out"


async def the_rest(
    gateway: MessageGateway,
    metrics: SendMetrics,
    journal: AnswerJournal | None,
    record: SendRecord,
    via: Via,
    batches: list[OutgoingText],
    first: SendResult,
) -> Outcome:
    """The send's outcome once ``batches[0]`` was answered (``first``): when accepted, ``batches[1:]`` sent, and
    every request's answer in it."""
    if len(batches) == 1 or not first.accepted:
        return Outcome(result=first)  # in one request; or the first was rejected: nothing was sent
    starts = [0]
    for text in batches:
        starts.append(starts[-1] + len(text.recipients))
    parts = [Part(0, len(batches[0].recipients), PartState.ACCEPTED, first.request_id)]

    def ended(then: PartState, why: str | None) -> Outcome:
        """The send ending at request ``len(parts)``, which ended ``then``; the later ones not sent."""
        rest = [
            Part(starts[k], len(batches[k].recipients), then if k == len(parts) else PartState.NOT_SENT, error=why)
            for k in range(len(parts), len(batches))
        ]
        return Outcome(result=first, parts=(*parts, *rest))

    for k in range(1, len(batches)):
        if journal is not None:
            journal.note(record, ended(PartState.UNKNOWN, STOPPED))
        began = time.perf_counter()
        try:
            result = await gateway.send(batches[k], _counted(metrics, via))
        except D7Error as exc:
            metrics.d7_answered(via.value, time.perf_counter() - began)
            metrics.d7_failed(via.value, type(exc).__name__)
            lost = isinstance(exc, D7OutcomeUnknownError)
            log.warning(
                "request %d of %d of send_id=%s %s: %s",
                k + 1,
                len(batches),
                record.id,
                "outcome unknown" if lost else "failed; the rest is not sent",
                type(exc).__name__,
                extra={"send_id": record.id},
            )
            return ended(PartState.UNKNOWN if lost else PartState.FAILED, str(exc) or type(exc).__name__)
        except Exception:
            log.exception("request %d of send_id=%s crashed", k + 1, record.id)
            return ended(PartState.UNKNOWN, CRASHED)
        metrics.d7_answered(via.value, time.perf_counter() - began)
        state = PartState.ACCEPTED if result.accepted else PartState.REJECTED
        parts.append(Part(starts[k], len(batches[k].recipients), state, result.request_id))
        if not result.accepted:
            return ended(PartState.NOT_SENT, None)
    return Outcome(result=first, parts=tuple(parts))


def _counted(metrics: SendMetrics, via: Via) -> RetryHook:
    """The retry hook of a request after the first: counted, but never "nothing has been sent yet", and never a wait
    a shutdown may cut short (the send cannot go back to pending)."""

    async def on_retry(error: D7Error, attempt: int, delay: float) -> None:
        metrics.d7_retried(via.value, type(error).__name__)

    return on_retry
