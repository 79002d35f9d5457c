"""The local journal of D7's answers (``AnswerJournal``): one JSON line per answer the database has not taken yet,
written as the answer comes (``note``: a small write to the page cache, which outlives the process), fsynced before
it counts as kept across a machine stopping (``keep``), and emptied once the database has every one of them.

A line holds what the database needs to settle the send — its id, the worker that held it, D7's verdict (request id
and status, or the error's kind, HTTP status, code and message) — never a text or a phone number. Answers kept
together share one fsync, in a thread (the event loop never waits for the disk to sync). The file is locked
(``flock``) while the process runs: a second process opening it is refused, so each replica needs its own. A last
line cut off by a crash mid-write, or a line this version cannot read, is skipped with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.domain.errors import ConfigError, D7OutcomeUnknownError, d7_error
from bot.domain.models import SendResult, SendStatus
from bot.domain.sends import KeptAnswer, Outcome, SendRecord
from bot.storage.sends.rows import part_json, part_of

log = logging.getLogger("bot.storage")

VERSION = 1


class JournalInUse(ConfigError):
    """Another process holds the journal: two processes must never share one."""


class FileJournal:
    """``AnswerJournal`` in a local file; ``open`` it (locked), ``aclose`` it when the process stops."""

    def __init__(self, path: Path, fd: int, kept: list[KeptAnswer], lines: dict[str, bytes]) -> None:
        self.path = path
        self._fd = fd
        self._kept = kept
        self._outstanding = dict(lines)  # send id → its line on disk (or queued for it), until written
        self._queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._dirty = bool(lines)  # the file holds lines (emptied once none is outstanding)
        self._unsynced: set[str] = set()  # noted, not fsynced yet
        self._noting_failed = False

    @classmethod
    def open(cls, path: Path) -> FileJournal:
        """Open (or create) and lock the journal, reading what a stopped process left in it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JournalInUse(
                    f"D7_JOURNAL {path} is in use by another process: each replica needs a journal of its own"
                ) from None
            if created:  # the file's name must survive a crash too
                _fsync_directory(path.parent)
            kept, lines, torn = _read(path)
            if torn:  # the next line must not be appended to a fragment
                os.ftruncate(fd, os.fstat(fd).st_size - torn)
        except BaseException:
            os.close(fd)
            raise
        if kept:
            log.warning("the D7 answer journal %s holds %d answer(s) the database did not take", path, len(kept))
        return cls(path, fd, kept, lines)

    def kept(self) -> list[KeptAnswer]:
        return list(self._kept)

    def note(self, record: SendRecord, outcome: Outcome) -> None:
        """The line written now (a small write to the page cache, no fsync): a process killed from here on loses
        no answer; ``keep`` makes it durable when the database is slow, ``written`` drops it when it is not."""
        line = _line(KeptAnswer(record.id, record.claimed_by, outcome))
        if self._outstanding.get(record.id) == line:
            return
        try:
            _write(self._fd, line)
        except OSError as exc:  # a full disk: ``keep`` tries again, and says so
            if not self._noting_failed:
                self._noting_failed = True
                log.error("could not write to the D7 answer journal %s (%s)", self.path, type(exc).__name__)
            return
        self._noting_failed = False
        self._outstanding[record.id] = line
        self._unsynced.add(record.id)
        self._dirty = True

    async def keep(self, record: SendRecord, outcome: Outcome) -> None:
        line = _line(KeptAnswer(record.id, record.claimed_by, outcome))
        if self._outstanding.get(record.id) == line:
            if record.id not in self._unsynced:
                return  # on disk already (an answer kept by the last process, being written now)
            line = b""  # written by ``note``: only its fsync is left
        else:
            self._outstanding[record.id] = line
        self._unsynced.discard(record.id)
        done = asyncio.get_running_loop().create_future()
        self._queue.append((line, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="d7-journal")
        await asyncio.shield(done)

    def written(self, send_id: str) -> None:
        self._unsynced.discard(send_id)
        if self._outstanding.pop(send_id, None) is not None and not self._outstanding and not self._flushing:
            self._empty()

    async def aclose(self) -> None:
        """Let queued lines reach the disk, then unlock and close the file."""
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        os.close(self._fd)

    @property
    def _flushing(self) -> bool:
        return self._flusher is not None and not self._flusher.done()

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await asyncio.to_thread(_append, self._fd, b"".join(line for line, _ in batch))
            except OSError as exc:
                log.error("could not write to the D7 answer journal %s (%s)", self.path, type(exc).__name__)
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            self._dirty = True
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
        if not self._outstanding:  # every answer written meanwhile
            self._empty()

    def _empty(self) -> None:
        """Every line in the file is in the database now: drop them (no fsync: lines that come back after a crash
        are of sends already settled, which the next start leaves as they are)."""
        if self._dirty:
            os.ftruncate(self._fd, 0)
            self._dirty = False


def _append(fd: int, data: bytes) -> None:
    _write(fd, data)
    os.fsync(fd)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------ lines


def _line(kept: KeptAnswer) -> bytes:
    entry: dict[str, Any] = {"v": VERSION, "send_id": kept.send_id, "worker": kept.worker}
    result, error = kept.outcome.result, kept.outcome.error
    if result is not None:
        at = result.created_at.isoformat() if result.created_at is not None else None
        entry["result"] = {
            "request_id": result.request_id,
            "status": result.status.value,
            "created_at": at,
            "dry_run": result.dry_run,
        }
        if kept.outcome.parts:  # a send in several requests: each one's answer (0018)
            entry["parts"] = [part_json(p) for p in kept.outcome.parts]
    else:
        error = error or D7OutcomeUnknownError("no details")
        entry["error"] = {
            "kind": error.kind,
            "message": str(error)[:2000],
            "http_status": error.http_status,
            "code": error.code,
        }
    return (json.dumps(entry, separators=(",", ":")) + "\n").encode()


def _kept(entry: dict[str, Any]) -> KeptAnswer:
    if entry.get("v") != VERSION:
        raise ValueError(f"version {entry.get('v')!r}")
    if (result := entry.get("result")) is not None:
        at = datetime.fromisoformat(result["created_at"]).astimezone(UTC) if result["created_at"] else None
        status = SendStatus(result["status"])
        parts = tuple(part_of(p) for p in entry.get("parts") or ())
        outcome = Outcome(SendResult(result["request_id"], status, at, dry_run=bool(result["dry_run"])), parts=parts)
    else:
        error = entry["error"]
        outcome = Outcome(
            error=d7_error(error["kind"], error["message"], http_status=error["http_status"], code=error["code"])
        )
    return KeptAnswer(str(entry["send_id"]), entry["worker"], outcome)


def _read(path: Path) -> tuple[list[KeptAnswer], dict[str, bytes], int]:
    """The answers in the file (the latest of each send, oldest first), their lines, and the length of a last
    line cut off mid-write (0: none)."""
    data = path.read_bytes()
    *lines, tail = data.split(b"\n")
    if tail:
        log.warning("the D7 answer journal %s ends in a line cut off mid-write; skipped", path)
    kept: dict[str, KeptAnswer] = {}
    raw: dict[str, bytes] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            answer = _kept(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("the D7 answer journal %s: line %d cannot be read (%s); skipped", path, number, exc)
            continue
        kept.pop(answer.send_id, None)  # the latest answer for a send counts, in its place
        kept[answer.send_id] = answer
        raw[answer.send_id] = line + b"\n"
    return list(kept.values()), raw, len(tail)
