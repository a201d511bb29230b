"""Group commit: one append in flight; everything produced meanwhile goes in the next one.

Why: a durable append costs a transaction (an fsync) whatever its size; measured here,
SQLite does ~2.8k one-event saves/s but ~30k events/s in batches of 50-100. So while one
append is in flight, the events of the next messages (any entities of the node) collect,
and go together as soon as it returns. Under light load a batch holds one message and
leaves at once (no timer, no added latency); under heavy load batches grow by themselves.

Never early: a write's waiters run only after the journal said the write is durable (or
failed). Writes run on one dedicated thread, so the event loop keeps processing messages
(and filling the next batch) while the database works.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from eventsourcing.persistence import StoredEvent

from infrastructure.errors import ConcurrencyConflict, PersistenceError
from infrastructure.metrics import NodeMetrics
from infrastructure.persistence.port import EventJournal, StreamWrite

log = logging.getLogger(__name__)

Waiter = Callable[[PersistenceError | None], None]


class PendingWrite:
    """One message's events for one stream, waiting to be durable.

    ``waiters`` run (on the event loop) with None when durable, or with the error. Other
    messages of the same entity that produced no events but must not be answered before
    this write is durable attach their release here too.
    """

    __slots__ = ("write", "snapshot", "waiters")

    def __init__(self, write: StreamWrite, snapshot: StoredEvent | None = None) -> None:
        self.write = write
        self.snapshot = snapshot
        self.waiters: list[Waiter] = []

    def settle(self, error: PersistenceError | None) -> None:
        # Taking the list breaks the cycle write -> waiter closure -> write, so a settled
        # write is freed by reference counting at once instead of surviving into the old
        # generations: at thousands of writes/s, cyclic garbage made full collections of
        # hundreds of thousands of objects (measured: ~45% of a hot entity's CPU, 1 s pauses).
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            try:
                waiter(error)
            except Exception:  # one failing waiter must not strand the others
                log.exception("waiter of %s failed", self.write.stream_id)


class GroupCommitter:
    """Batches PendingWrites into journal appends. See the module docstring."""

    def __init__(self, journal: EventJournal, metrics: NodeMetrics, max_batch_events: int,
                 may_write: Callable[[], bool] = lambda: True) -> None:
        self._journal = journal
        self._may_write = may_write
        self._metrics = metrics
        self._max_batch_events = max_batch_events
        self._collecting: list[PendingWrite] = []
        self._in_flight = False
        self._scheduled = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xplatform-writer")
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def backlog(self) -> int:
        return len(self._collecting)

    def submit(self, pending: PendingWrite) -> None:
        """Queue a write for the next append (call on the event loop thread)."""
        self._collecting.append(pending)
        self._idle.clear()
        if not self._in_flight and not self._scheduled:
            # call_soon: messages processed in the same loop iteration join this batch.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_next)

    def discard_stream(self, stream_id: str, error: PersistenceError) -> None:
        """Fail the not-yet-sent writes of ``stream_id``: they were based on a state that
        turned out not to be durable (an earlier write of the stream failed)."""
        kept: list[PendingWrite] = []
        dropped: list[PendingWrite] = []
        for pending in self._collecting:
            (dropped if pending.write.stream_id == stream_id else kept).append(pending)
        self._collecting = kept
        for pending in dropped:
            pending.settle(error)

    async def drain(self) -> None:
        """Wait until everything submitted so far is settled."""
        await self._idle.wait()

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def _start_next(self) -> None:
        self._scheduled = False
        if self._in_flight:
            return
        if not self._collecting:
            self._idle.set()
            return
        take = _prefix_within(self._collecting, self._max_batch_events)
        batch = self._collecting[:take]
        del self._collecting[:take]
        count = sum(len(p.write.events) for p in batch)
        if not self._may_write():
            # Fenced (ownership lease ran out, e.g. after a SIGSTOP): nothing of this batch
            # may reach the store; the senders get a retryable error and the entities reload.
            fenced = PersistenceError("not written: this node's ownership is fenced")
            for pending in batch:
                pending.settle(fenced)
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_next)
            return
        self._in_flight = True
        loop = asyncio.get_running_loop()
        # The writer thread hands the outcome straight back (call_soon_threadsafe): through
        # run_in_executor's future it would take two loop iterations, and under load every
        # iteration is milliseconds that every reply of the batch waits.
        self._executor.submit(self._write_and_report, loop, batch, count)

    def _write_and_report(self, loop: asyncio.AbstractEventLoop, batch: list[PendingWrite], count: int) -> None:
        try:
            outcome: tuple[list[PersistenceError | None], float] | BaseException = self._write(batch)
        except BaseException as exc:  # noqa: BLE001 - reported to the loop, which fails the batch
            outcome = exc
        try:
            loop.call_soon_threadsafe(self._finished, batch, count, outcome)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _write(self, batch: list[PendingWrite]) -> tuple[list[PersistenceError | None], float]:
        started = time.perf_counter()
        try:
            results = self._journal.append([p.write for p in batch])
        except PersistenceError as exc:
            results = [exc] * len(batch)
        except Exception as exc:  # an adapter bug must not wedge the node: fail the batch
            log.exception("journal append raised")
            results = [PersistenceError(f"append raised {type(exc).__name__}: {exc}")] * len(batch)
        elapsed = time.perf_counter() - started
        snapshots = [p.snapshot for p, error in zip(batch, results, strict=True)
                     if error is None and p.snapshot is not None]
        if snapshots:  # after the events (a snapshot never runs ahead of its stream), all in one go
            try:
                self._journal.save_snapshots(snapshots)
                self._metrics.snapshots.inc(len(snapshots))
            except PersistenceError as exc:
                log.warning("%d snapshots not saved (%s); activations replay more events", len(snapshots), exc)
        return results, elapsed

    def _finished(self, batch: list[PendingWrite], count: int,
                  outcome: tuple[list[PersistenceError | None], float] | BaseException) -> None:
        self._in_flight = False
        results: list[PersistenceError | None]
        if isinstance(outcome, BaseException):
            results, elapsed = [PersistenceError(f"append did not run: {outcome}")] * len(batch), 0.0
        else:
            results, elapsed = outcome
        self._metrics.append_batch_events.observe(count)
        self._metrics.append_duration.observe(elapsed)
        durable = not any(results)
        if durable:
            # All durable: the next batch goes to the writer thread before this one's waiters
            # run, so the database works while the loop answers (at thousands of writes/s the
            # answers take milliseconds, which every message of the next batch would wait
            # too). Not after a failure: its waiters first drop the writes built on it.
            self._start_next()
        for pending, error in zip(batch, results, strict=True):
            if isinstance(error, ConcurrencyConflict):
                self._metrics.append_conflicts.inc()
            pending.settle(error)
        if not durable:
            self._start_next()


def _prefix_within(writes: list[PendingWrite], budget: int) -> int:
    """How many leading writes fit in ``budget`` events (at least one)."""
    total = 0
    for index, pending in enumerate(writes):
        total += len(pending.write.events)
        if total > budget and index > 0:
            return index
    return len(writes)
