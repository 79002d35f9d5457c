"""Announcements slower than the text's budget: the text does not wait past ``announce_within`` (3 s), but the
call goes on within Slack's own deadlines (cut short, a post Slack carried out would be lost and posted again), and
the story waits for it; one that failed or timed out is looked for before it is posted again (``careful``)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.domain.ports import Conversation
from bot.domain.sends import Placement, PreparedSend, SendRecord

log = logging.getLogger("bot.sending")

ANNOUNCE_WITHIN = 3.0  # seconds the text waits for its announcement (Slack slow, down, or pacing the channel)
# How long the story waits for an announcement still on its way when the text went: past Slack's own deadlines (the
# channel's turn, then the call's timeout), so in practice until the call ends.
ANNOUNCED_WITHIN = 60.0
ANNOUNCEMENTS_KEPT = 600.0  # seconds an announcement done is kept for its send's next try in this process
# An intent first tried this long after it was recorded may have been tried before by a process that stopped, or
# lost the database, between its announcement and keeping where it went (no attempt counted): its announcement is
# looked for before it is posted. Below the outbox's 30-s lease, after which another process takes an intent over.
FIRST_TRY_WITHIN = timedelta(seconds=20)


def tried_before(record: SendRecord, now: datetime) -> bool:
    """An earlier try may have announced ``record`` (its post answered late or lost, or not kept)."""
    return record.attempts > 0 or now - record.created_at >= FIRST_TRY_WITHIN


@dataclass(eq=False)
class Announcer:
    """The announcements of one process's sends, each kept while its send may still need it."""

    announcing: dict[str, asyncio.Task[Placement]] = field(default_factory=dict, init=False, repr=False)

    async def place(
        self,
        record: SendRecord,
        send: PreparedSend,
        conversation: Conversation,
        within: float = ANNOUNCE_WITHIN,
        careful: bool = False,
    ) -> Placement:
        """Where the story goes: an alert's own thread, else the announcement's (kept with 'sending'). ``careful``:
        an earlier try may have announced it (``tried_before``)."""
        if record.placement.thread_ts is not None or record.placement.private:
            return record.placement  # announced before D7 was unavailable
        if record.request.origin.surface.is_alert:
            # No announcement: the outcome goes straight into the alert's thread (one reply per alert).
            if send.in_thread is None or send.in_thread == record.request.origin.thread_ts:
                return Placement(record.request.origin.thread_ts)
            await _point(record, send, conversation, within)
            return Placement(send.in_thread)
        return await self.announce(record, send, conversation, within, careful)

    async def announce(
        self,
        record: SendRecord,
        send: PreparedSend,
        conversation: Conversation,
        within: float = ANNOUNCE_WITHIN,
        careful: bool = False,
    ) -> Placement:
        """The announcement's placement within ``within`` seconds; else the record's (none yet): the text goes.
        An announcement done is kept until its send is placed (``placed``) or for ``ANNOUNCEMENTS_KEPT``: the next
        try in this process (the database failed before the placement was kept) uses it instead of posting."""
        task = self.announcing.get(record.id)  # an earlier try's, still here (D7 deferred it meanwhile)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = asyncio.create_task(conversation.announce(send, careful=careful), name=f"announce-{record.id}")
            self.announcing[record.id] = task
            task.add_done_callback(lambda done: _forget_later(self.announcing, record.id, done))
        # The text does not wait for Slack past announce_within: the call goes on within its own deadlines (cut
        # short, a post Slack carried out would be lost and posted again), and the story waits for it.
        done, _ = await asyncio.wait({task}, timeout=within)
        if not done:
            log.warning("announcing send_id=%s takes over %.0fs; sending anyway", record.id, within)
            return record.placement
        if (error := task.exception()) is not None:
            # Sent now; the story is posted (announcement first, looked for before) when Slack answers.
            log.warning("could not announce send_id=%s (%s); sending anyway", record.id, type(error).__name__)
            return record.placement
        return task.result()

    def placed(self, send_id: str) -> None:
        """The send's placement is kept with it: its announcement is no longer needed here."""
        task = self.announcing.get(send_id)
        if task is not None and task.done():
            del self.announcing[send_id]

    async def announced(self, record: SendRecord, within: float = ANNOUNCED_WITHIN) -> Placement | None:
        """The announcement that was still on its way when the text went, waited for (within Slack's own
        deadlines): then the result goes in its thread, and it is never posted twice. None: there is none to keep
        (the teller looks for it before posting it again)."""
        task = self.announcing.pop(record.id, None)
        if task is None or not record.unannounced:
            return None
        try:
            async with asyncio.timeout(within):
                placement = await asyncio.shield(task)
        except Exception as exc:  # the teller looks for it before posting it again
            log.warning("announcing send_id=%s failed (%s)", record.id, type(exc).__name__)
            return None
        return placement


def _forget_later(announcing: dict[str, asyncio.Task[Placement]], send_id: str, task: asyncio.Task[Placement]) -> None:
    """An announcement done: kept a while for its send's next step in this process (after a deferral), then
    forgotten (the send went on elsewhere: its next announcement looks in the channel first). Its failure is
    logged by whoever looks at it, not as "never retrieved"."""
    if not task.cancelled():
        task.exception()

    def forget() -> None:
        if announcing.get(send_id) is task:
            del announcing[send_id]

    asyncio.get_running_loop().call_later(ANNOUNCEMENTS_KEPT, forget)


async def _point(record: SendRecord, send: PreparedSend, conversation: Conversation, within: float) -> None:
    """A resolution posted on its own: its thread says which alert it ends, whose thread tells the outcome. Like
    an announcement, at most once more after a crash here; unlike one, never in the way of the text."""
    assert send.in_thread is not None  # noqa: S101 - asked only with another thread
    try:
        async with asyncio.timeout(within):
            await conversation.points_to(send, send.in_thread)
    except Exception as exc:
        log.warning("could not say where send_id=%s is told (%s)", record.id, type(exc).__name__)
