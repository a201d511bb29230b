"""Catch-up projector: one projection fed by a catch-up subscription (any store: SQLite,
PostgreSQL, memory, EventStoreDB) into its MongoDB read model.

The read model keeps its own position (``NAME__tracking``), so the runner needs no state of
its own: it resumes after the stored position, reads the projection's categories (every
event of them, so each stream's versions arrive contiguous; see :mod:`projections.engine`),
and applies them in batches: up to ``batch_size`` events that are already waiting go in one
batch (many events per MongoDB round trip); it never waits to fill one. The subscription is
read by a thread of its own into a queue of ``max_in_flight`` items: the bound on what is
read but not yet applied. Checkpoints (events of other categories skipped by the filter) move
the stored position forward too, so a rarely matching projection resumes near the head.

Position and changes: each batch writes its documents, then its tracking and position (see
:mod:`projections.mongo`). Killed anywhere in between, the runner restarts from the last
stored checkpoint and the documents that already applied part of the batch skip it: the
read model equals a replay of its streams (guarantee 5), exactly once.

Two savings, both safe only because one runner applies every event of its categories in the
store's order: the runner **remembers** the documents and stream versions it read or wrote
(:mod:`projections.model_cache`, ``cache_documents``), so a batch reads only what it has not
seen; and while it works through a backlog (full batches) it **holds back the stream
versions** for up to forty batches (:meth:`~projections.mongo.MongoReadModel.write`), moving
only the position; at the head every batch writes them, since read-your-writes readers wait
on them. A restart resumes at the checkpoint, the last position written with every stream
version (:meth:`~projections.mongo.MongoReadModel.resume_position`).

Catching up to a known head (``run(until=...)``: a rebuild, ``--until-head``) it also
**writes behind** (:class:`_WriteBehind`): a full batch is written on a thread of its own
while the next page is read, decoded and planned against it, so the runner's CPU overlaps
the database's round trips; batches are still written one at a time, in order, each
acknowledged before the next starts.

``python -m projections.catchup --projection projections.auction:AuctionBoard --mongo-uri URI
--database NAME`` runs one on the store ``XPLATFORM_*`` configure (the ``xplatform projector``
command runs every projection of ``XPLATFORM_PROJECTIONS`` this way on SQLite and PostgreSQL).
"""

from __future__ import annotations

import argparse
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from infrastructure.errors import PersistenceError
from infrastructure.logformat import configure_logging
from infrastructure.persistence import open_event_stream
from infrastructure.persistence.subscriptions import Checkpoint, EventFilter, EventStream, StreamEvent
from infrastructure.settings import Settings
from projections.engine import BatchPlan
from projections.errors import ProjectionError, SourceFailed
from projections.loading import load_projection
from projections.mongo import MongoReadModel, connect
from projections.projection import Projection

log = logging.getLogger(__name__)

BATCH_SIZE = 500
"""Events per MongoDB write round trip at most. Why 500: a catching-up projector spends its
time in round trips; 500 small updates are one ~100 KB bulk write, well under MongoDB's
48 MB message and 100k operation limits, and a live projector rarely has that many waiting."""

MAX_IN_FLIGHT = 2000
"""Events read from the store and not yet applied, at most: bounds the runner's memory while
MongoDB is slower than the store (four batches of read-ahead)."""

CACHE_DOCUMENTS = 10_000
"""Documents (and stream versions) a runner remembers between batches
(:mod:`projections.model_cache`), so a batch reads only what it has not seen: two read
round trips saved per batch. 10k small documents are a few MB; 0 turns it off."""

_END = object()


class CatchUpProjector:
    """See the module docstring. ``run()`` until ``stop()`` (any thread), or until the
    position reaches ``until`` (catching up to a known head, e.g. in a rebuild or a test)."""

    def __init__(self, projection: Projection, stream: EventStream, model: MongoReadModel, *,
                 batch_size: int = BATCH_SIZE, max_in_flight: int = MAX_IN_FLIGHT,
                 progress: Callable[[int, int | None], None] | None = None,
                 cache_documents: int = CACHE_DOCUMENTS) -> None:
        """``progress(events, position)``: called after each batch of a catch-up to ``until``
        (events applied so far by this runner, the position reached), e.g. a progress line.
        ``cache_documents``: what ``model`` remembers between batches (0: nothing)."""
        if batch_size < 1 or max_in_flight < batch_size:
            raise ProjectionError(f"batch_size {batch_size} must be >= 1 and <= max_in_flight {max_in_flight}")
        self.projection = projection
        self.stream = stream
        self.model = model
        if cache_documents:
            model.remember(cache_documents)
        self.batch_size = batch_size
        self._queue: queue.Queue[Any] = queue.Queue(max_in_flight)
        self._stopped = threading.Event()
        self.batches = 0
        self.events = 0
        self.progress = progress

    def stop(self) -> None:
        self._stopped.set()

    def run(self, until: int | None = None) -> None:
        """Follow the store and apply, until stopped or past ``until``. Raises the
        projection's typed errors (a gap, a handler under policy "stop") and SourceFailed.
        When a rebuild switches the live collections (``MongoReadModel.refresh``, checked
        once per batch) it follows again from the new collections' position."""
        if until is not None:
            self._catch_up(until)
        else:
            while not self._stopped.is_set() and self._follow():
                pass
        self.model.flush()  # a clean end: the stream versions held back by a backlog, written

    def _follow(self) -> bool:
        """Subscribe after the model's position and apply; True when the live collections
        switched (follow again), False when stopped or the subscription ended."""
        position = self.model.resume_position()
        try:
            subscription = self.stream.subscribe_all(after=position, filter=EventFilter(categories=self.projection.CATEGORIES),
                                                     include_checkpoints=True)
        except PersistenceError as exc:
            raise SourceFailed(f"{self.projection.NAME}: cannot subscribe after {position}: {exc}") from exc
        ended_reading = threading.Event()
        self._queue = queue.Queue(self._queue.maxsize)
        reader = threading.Thread(target=self._read, args=(subscription, ended_reading),
                                  name=f"projector-{self.projection.NAME}", daemon=True)
        reader.start()
        try:
            while not self._stopped.is_set():
                try:
                    first = self._queue.get(timeout=0.1)
                except queue.Empty:
                    if self.model.refresh():
                        return True
                    continue
                batch, checkpoint, ended = self._take(first)
                self._apply(batch, checkpoint)
                if ended is not None:
                    if isinstance(ended, BaseException):
                        raise SourceFailed(f"{self.projection.NAME}: the subscription failed: {ended}") from ended
                    return False
                if self.model.refresh():
                    return True
            return False
        finally:
            ended_reading.set()
            subscription.stop()
            reader.join(timeout=5)

    def _catch_up(self, until: int) -> None:
        """Pages of the store up to ``until`` (a stored event's position, e.g. the head),
        no subscription: a page shorter than asked means every matching event up to the
        head was read, so the position may move to ``until`` even when the last events are
        of other categories. Full pages are written behind (:class:`_WriteBehind`): the
        next page is read and planned while the previous one is written."""
        category_filter = EventFilter(categories=self.projection.CATEGORIES)
        position = self.model.resume_position()
        writer = _WriteBehind(self.model, self._written)
        try:
            while not self._stopped.is_set() and (position is None or position < until):
                try:
                    events = self.stream.read_all(after=position, limit=self.batch_size, filter=category_filter)
                except PersistenceError as exc:
                    raise SourceFailed(f"{self.projection.NAME}: reading after {position} failed: {exc}") from exc
                if len(events) >= self.batch_size:
                    plan = writer.submit(events)
                    position = plan.position if plan.position is not None else position
                    continue
                writer.drain()
                reached = self._apply(events, until)
                position = reached if reached is not None else position
                self._report(position)
                return
        finally:
            writer.close()

    def _written(self, plan: BatchPlan, events: int) -> None:
        """A batch written behind was acknowledged."""
        self.events += events
        self.batches += 1
        self._report(plan.position)

    def _report(self, position: int | None) -> None:
        if self.progress is not None:
            self.progress(self.events, position)

    def _read(self, subscription: Any, ended: threading.Event) -> None:
        try:
            for item in subscription:
                if not self._put(item, ended):
                    return
        except Exception as exc:  # noqa: BLE001 - handed to the applying thread, which raises it typed
            self._put(exc, ended)
            return
        self._put(_END, ended)

    def _put(self, item: object, ended: threading.Event) -> bool:
        """Queue ``item``, waiting while the queue is full (the in-flight bound); False when stopped."""
        while not self._stopped.is_set() and not ended.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _take(self, first: Any) -> tuple[list[StreamEvent], int | None, object | None]:
        """The events waiting now (up to batch_size), the last checkpoint among them, and
        the end marker if the subscription ended."""
        batch: list[StreamEvent] = []
        checkpoint: int | None = None
        item = first
        while True:
            if item is _END or isinstance(item, BaseException):
                return batch, checkpoint, item
            if isinstance(item, Checkpoint):
                checkpoint = item.position
            else:
                batch.append(item)
            if len(batch) >= self.batch_size:
                return batch, checkpoint, None
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, checkpoint, None

    def _apply(self, batch: Sequence[StreamEvent], checkpoint: int | None) -> int | None:
        plan = self.model.apply(batch, behind=len(batch) >= self.batch_size) if batch else BatchPlan()
        self.events += len(batch)
        reached = plan.position
        if checkpoint is not None and (reached is None or checkpoint > reached):
            moved = BatchPlan(position=checkpoint)
            self.model.write(moved)
            if self.model.metrics is not None:
                self.model.metrics.record(self.projection.NAME, moved)
            reached = checkpoint
        self.batches += 1
        return reached


class _WriteBehind:
    """Writes a catching-up runner's full batches on a thread of its own, one at a time
    and in order, while the runner reads and plans the next one: the runner's own CPU
    (store reads, decoding, handlers: about a third of a batch's time) overlaps the
    database's instead of adding to it.

    Exact because the next batch is planned against the one being written: the model
    reads that batch's documents and stream versions before anything it remembers or
    stores (:attr:`~projections.mongo.MongoReadModel.in_flight`), and what it stores is
    every earlier batch (each is acknowledged before the next is handed over). A batch
    that parks is written only after the one before it, and before the next is planned
    (the next must see its stream held). A write that fails ends the run with its error
    (nothing planned after it is written, and the model forgets what it remembers), as
    :meth:`~projections.mongo.MongoReadModel.apply` does."""

    def __init__(self, model: MongoReadModel, on_written: Callable[[BatchPlan, int], None]) -> None:
        self._model = model
        self._on_written = on_written
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="projector-write")
        self._pending: tuple[Future[None], BatchPlan, float, int] | None = None

    def submit(self, events: Sequence[StreamEvent]) -> BatchPlan:
        """Plan ``events`` (a full batch: more are waiting), wait for the batch before it,
        and start writing it; returns its plan."""
        started = time.perf_counter()
        try:
            plan = self._model.prepare(events)
        except BaseException:
            self.drain()  # the batch being written lands (or fails) before this error is raised
            raise
        self.drain()
        if plan.parked:
            self._model.commit(plan, started=started)
            self._on_written(plan, len(events))
            return plan
        self._model.in_flight = plan
        future = self._executor.submit(self._model.write, plan, defer_streams=self._model.cache is not None)
        self._pending = (future, plan, started, len(events))
        return plan

    def drain(self) -> None:
        """Wait for the batch being written; raise its error."""
        if self._pending is None:
            return
        future, plan, started, events = self._pending
        self._pending = None
        try:
            future.result()
        except BaseException:
            self._model.forget()
            raise
        finally:
            self._model.in_flight = None
        self._model.acknowledged(plan, started)
        self._on_written(plan, events)

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._executor.shutdown(wait=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m projections.catchup", description=__doc__.splitlines()[0])
    parser.add_argument("--projection", required=True, help="module:Class of the projection")
    parser.add_argument("--mongo-uri", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--until-head", action="store_true", help="exit once the store's head at start is applied")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings, node=f"projector-{args.projection}")
    projection = load_projection(args.projection)
    stream = open_event_stream(settings)
    client = connect(args.mongo_uri)
    try:
        model = MongoReadModel(projection, client[args.database])
        until = stream.head_position() if args.until_head else None
        print(f"projecting {projection.NAME} from position {model.position()} (head {until})", flush=True)
        CatchUpProjector(projection, stream, model, batch_size=args.batch_size).run(until=until)
        print(f"done at position {model.position()}", flush=True)
    except ProjectionError as exc:
        print(f"projector stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        stream.close()
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
