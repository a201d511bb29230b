"""Persistent-subscription projector: one projection fed by an EventStoreDB persistent
subscription group into its MongoDB read model.

**One group per projection** (``projection-<NAME>``), reading ``$all`` filtered to the
projection's categories from the start (a new read model is built from all history). Every
projector process running the projection joins the group as one more consumer: the server
shares the events out, and a process that dies has its unacked events handed to the others.

**Consumer strategy: Pinned.** The server assigns each stream to one consumer (by a hash of
the stream name), so the events of one entity go to one process, in order, and each
process's batches hold contiguous runs of its streams. Round robin would spread one
stream's consecutive events over processes, so most batches would find their predecessor
still in flight elsewhere (a gap) and wait; DispatchToSingle would leave all but one
process idle. Pinning is a preference, not a promise (a full consumer, a consumer joining or
leaving, a retry moves a stream), so order is not taken on trust:

**Per-stream order is checked, not assumed.** The read model tracks each stream's applied
version (:mod:`projections.engine`). Before a batch is applied, each delivery is sorted into
*ready* (a duplicate, or the next version of its stream, or following one that is) or
*held* (a gap: its predecessor has not been applied yet). Held deliveries stay unacked in
this process and are looked at again with every batch (and every ``recheck_s`` when idle,
re-reading the tracking, since another consumer may have applied the predecessor); once
the message timeout passes the server delivers them again (``retry_count`` + 1), and after
``max_retry_count`` it parks them. So a gap is never skipped, and never stalls the other streams.

**Ack after commit.** A batch's deliveries are acked only after its documents, parked
events and tracking were written (write concern majority by default): a crash before that
redelivers them, and the bookkeeping makes the redelivery change nothing.

**Failures.** The projection's policies decide (``projections/EVENTS.md`` "Failures"):
``ON_ERROR = "park"`` parks the event in the read model (it and the rest of its stream are
held, acked, and replayed by ``xplatform projection replay-parked``); ``"skip"`` drops it;
``"stop"`` (or ``ON_UNHANDLED = "stop"``) **nacks it with retry**: the server delivers it again,
and after ``max_retry_count`` retries parks it in the group's parked stream (replayed by
the same command, through the server); the events after it in its stream wait as gaps. A
read model that cannot be written (:class:`~projections.errors.ModelWriteError`) is retried
here with backoff, deliveries unacked, until it can (or the server's timeout redelivers them).

**A lone consumer remembers.** Each batch would read the documents its handlers are
given and the tracking of its streams (:mod:`projections.engine`), since other consumers
of the group write the same read model. While a process is the group's *only* consumer it
remembers instead, across batches, what it read and wrote (:mod:`projections.model_cache`,
as a catch-up runner does): nobody else writes the model. How it knows: every projector
process counts itself in the read model's pointer document
(:meth:`~projections.mongo.MongoReadModel.announce_consumer`) *before* it joins the group
and once more *after* the server confirmed it (so a consumer that asked the server in
between, and heard it was alone, sees the count move again and asks again), and every
batch reads that document anyway (``refresh``). When the count moves (or, while
sharing, every :data:`ALONE_RECHECK_S`), the process forgets what it remembered and asks the
server how many consumers the group has; it remembers again only while that answer is 1.
A consumer that joins after the count was read can write the model during the batch in
hand only, which is no more than a batch that read the documents could miss; the next
batch sees the count moved. (A process of a version before this count existed does not
announce itself: do not mix versions in one group.)

**Batching, bounded.** Deliveries are taken as they arrive, up to ``batch_size`` per batch
(one MongoDB round trip of each kind, :mod:`projections.mongo`); the server never has more
than ``max_in_flight`` unacked events out to this consumer (its buffer size).

``stop()`` (any thread; SIGTERM in the projector process) finishes the batch in hand, acks
it and leaves the group; what it held goes to the other consumers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from infrastructure.errors import PersistenceError, SubscriptionGroupExists
from infrastructure.persistence.subscriptions import (
    Delivery,
    EventFilter,
    GroupConsumer,
    GroupSettings,
    PersistentSubscriptions,
    Source,
)
from projections.catchup import BATCH_SIZE, CACHE_DOCUMENTS, MAX_IN_FLIGHT
from projections.errors import HandlerFailed, ModelWriteError, ProjectionError, SourceFailed, UnhandledEvent, VersionGap
from projections.mongo import MongoReadModel
from projections.projection import Projection

log = logging.getLogger(__name__)

GROUP_PREFIX = "projection-"
RECHECK_S = 0.5
"""How often held deliveries are looked at again while nothing arrives."""
ALONE_RECHECK_S = 5.0
"""While the group has other consumers, how often a process asks the server again whether it
is alone (one small request; joining is noticed at once through the pointer's count)."""
WRITE_BACKOFF_MAX_S = 5.0
"""Longest wait between attempts to write a batch to a read model that refuses it."""

_END = object()


def group_name(projection: Projection, namespace: str = "") -> str:
    """The consumer group of ``projection``: ``projection-<NAME>``, after the installation's
    stream prefix (``XPLATFORM_EVENTSTOREDB_STREAM_PREFIX``: installations sharing a cluster
    have groups of their own, as they have streams of their own)."""
    return namespace + GROUP_PREFIX + projection.NAME


def group_source(projection: Projection) -> Source:
    """What the group reads: ``$all``, the projection's categories."""
    return Source.all(EventFilter(categories=projection.CATEGORIES))


def group_settings(message_timeout_s: float = 30.0, max_retry_count: int = 10) -> GroupSettings:
    """Pinned (module docstring), from the start; the server's own defaults otherwise."""
    return GroupSettings(start_from="start", strategy="pinned", message_timeout_s=message_timeout_s,
                         max_retry_count=max_retry_count)


def ensure_group(subscriptions: PersistentSubscriptions, projection: Projection, settings: GroupSettings,
                 namespace: str = "") -> None:
    """Create the projection's group unless it exists (every process starting does this)."""
    group = group_name(projection, namespace)
    try:
        subscriptions.create_group(group, group_source(projection), settings)
    except SubscriptionGroupExists:
        pass
    except PersistenceError as exc:
        raise SourceFailed(f"{projection.NAME}: cannot create group {group}: {exc}") from exc


@dataclass
class _Held:
    delivery: Delivery
    since: float


class PersistentProjector:
    """See the module docstring. ``run()`` until ``stop()``."""

    def __init__(self, projection: Projection, subscriptions: PersistentSubscriptions, model: MongoReadModel, *,
                 batch_size: int = BATCH_SIZE, max_in_flight: int = MAX_IN_FLIGHT, recheck_s: float = RECHECK_S,
                 namespace: str = "", cache_documents: int = CACHE_DOCUMENTS) -> None:
        """``cache_documents``: what a lone consumer remembers across batches (module
        docstring; 0: nothing, every batch reads)."""
        if batch_size < 1 or max_in_flight < batch_size:
            raise ProjectionError(f"batch_size {batch_size} must be >= 1 and <= max_in_flight {max_in_flight}")
        self.projection = projection
        self.subscriptions = subscriptions
        self.model = model
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.recheck_s = recheck_s
        self.group = group_name(projection, namespace)
        self.cache_documents = cache_documents
        self._alone = False
        self._joined_seen: int | None = None
        self._asked_at = 0.0
        self.asked = 0  # how often the server was asked whether this consumer is alone
        self._queue: queue.Queue[Any] = queue.Queue()  # bounded by the server: max_in_flight unacked
        self._held: dict[tuple[str, int], _Held] = {}
        self._stopped = threading.Event()
        self.batches = 0
        self.acked = 0
        self.nacked = 0

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        """Consume the group until stopped. Raises SourceFailed when the group cannot be
        joined or the server drops this consumer for good."""
        self.model.announce_consumer()  # before joining: see "A lone consumer remembers"
        try:
            consumer = self.subscriptions.consume(self.group, group_source(self.projection), buffer_size=self.max_in_flight)
        except PersistenceError as exc:
            raise SourceFailed(f"{self.projection.NAME}: cannot join group {self.group}: {exc}") from exc
        # and again once joined: a lone consumer that asked the server between the two counts
        # (and heard "1") sees the count move once more, asks again, and hears "2"
        self.model.announce_consumer()
        reader = threading.Thread(target=self._read, args=(consumer,), name=f"projector-{self.projection.NAME}",
                                  daemon=True)
        reader.start()
        last_check = time.monotonic()
        try:
            while not self._stopped.is_set():
                try:
                    first = self._queue.get(timeout=0.1)
                except queue.Empty:
                    if self._held and time.monotonic() - last_check >= self.recheck_s:
                        self._settle(consumer, [])
                        last_check = time.monotonic()
                    continue
                batch, ended = self._take(first)
                self._settle(consumer, batch)
                last_check = time.monotonic()
                if ended is not None:
                    if isinstance(ended, BaseException):
                        raise SourceFailed(f"{self.projection.NAME}: the group dropped this consumer: {ended}") from ended
                    return
        finally:
            self._stopped.set()
            time.sleep(0.1)  # the client sends acks in batches within 50 ms: let the last ones go
            consumer.stop()
            reader.join(timeout=5)

    def _read(self, consumer: GroupConsumer) -> None:
        try:
            for delivery in consumer:
                self._queue.put(delivery)
                if self._stopped.is_set():
                    return
        except Exception as exc:  # noqa: BLE001 - handed to the applying thread, which raises it typed
            self._queue.put(exc)
            return
        self._queue.put(_END)

    def _take(self, first: Any) -> tuple[list[Delivery], object | None]:
        batch: list[Delivery] = []
        item = first
        while True:
            if item is _END or isinstance(item, BaseException):
                return batch, item
            batch.append(item)
            if len(batch) >= self.batch_size:
                return batch, None
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, None

    # ------------------------------------------------------------------ one batch
    def _settle(self, consumer: GroupConsumer, arrived: Sequence[Delivery]) -> None:
        """Apply what is ready among the held and the arrived deliveries, ack it, hold the rest."""
        now = time.monotonic()
        for delivery in arrived:
            # a redelivery (the server's message timeout) replaces the copy held: never ack the
            # old one as well - the server acks by event ID, so that would settle the new one
            key = (delivery.event.stream_id, delivery.event.version)
            earlier = self._held.get(key)
            self._held[key] = _Held(delivery, earlier.since if earlier is not None else now)
        self.model.refresh()  # a switch of the live collections empties what the model remembers
        if self._still_alone():
            self._settle_held(consumer)  # remembering across batches (module docstring)
            return
        # for this settle only: the tracking _ready reads is what the batch's plan reads again
        # (one round trip, not two). Not across settles: other consumers write this model too.
        self.model.remember(max(self.batch_size, len(self._held)) * 2)
        try:
            self._settle_held(consumer)
        finally:
            self.model.cache = None

    @property
    def remembering(self) -> bool:
        """Whether this consumer was its group's only one at its last batch, and so remembers
        documents across batches (module docstring)."""
        return self._alone

    def _still_alone(self) -> bool:
        """Whether this process is the group's only consumer, so its model may remember
        across batches ("A lone consumer remembers"); sets the model's memory up afresh
        whenever the answer is asked again."""
        joined = self.model.consumers_joined
        if joined == self._joined_seen and (self._alone or time.monotonic() - self._asked_at < ALONE_RECHECK_S):
            return self._alone and self.model.cache is not None
        self._joined_seen = joined
        self._asked_at = time.monotonic()
        self.model.cache = None  # another consumer may have written what was remembered
        self._alone = False
        if not self.cache_documents or joined is None:
            return False
        self.asked += 1
        try:
            info = self.subscriptions.group_info(self.group, group_source(self.projection))
        except PersistenceError as exc:
            log.warning("%s: asking the server for the group's consumers failed (%s): sharing", self.projection.NAME, exc)
            return False
        self._alone = info.consumers == 1
        if self._alone:
            self.model.remember(self.cache_documents)
        return self._alone

    def _settle_held(self, consumer: GroupConsumer) -> None:
        while self._held and not self._stopped.is_set():
            ready = self._ready()
            if not ready:
                break
            events = [held.delivery.event for held in ready]
            try:
                self._write(events)
            except (HandlerFailed, UnhandledEvent) as exc:
                self._nack_failed(consumer, exc.stream_id, exc.version)
                continue  # the rest again, without it (its stream's later events now wait as gaps)
            except VersionGap as exc:  # another writer moved the stream meanwhile: look again
                log.info("%s: %s; looking at the tracking again", self.projection.NAME, exc)
                continue
            for held in ready:
                del self._held[(held.delivery.event.stream_id, held.delivery.event.version)]
            self._ack(consumer, [held.delivery for held in ready])
            self.batches += 1
            return

    def _ready(self) -> list[_Held]:
        """The held deliveries that can be applied now, in the store's order: per stream,
        duplicates and the contiguous run after the tracked version (a stream held back by
        a parked event takes all of its events: they are parked behind it)."""
        streams = {stream for stream, _ in self._held}
        tracked = self.model.stream_versions(streams)
        parked = self.model.parked_streams(streams)
        ready: list[_Held] = []
        for stream in streams:
            mine = sorted((held for (s, _), held in self._held.items() if s == stream),
                          key=lambda held: held.delivery.event.version)
            expected = tracked.get(stream, 0) + 1
            for held in mine:
                version = held.delivery.event.version
                if version < expected or stream in parked:
                    ready.append(held)
                elif version == expected:
                    ready.append(held)
                    expected += 1
                else:
                    break  # a gap: this and the later ones wait
        ready.sort(key=lambda held: held.delivery.event.position)
        return ready[:self.batch_size]  # a prefix in the store's order is a prefix of each stream

    def _write(self, events: Sequence[Any]) -> None:
        """Apply a batch, retrying a read model that refuses it (idempotent) until stopped."""
        backoff = 0.1
        while True:
            try:
                self.model.apply(events)
                return
            except ModelWriteError as exc:
                if self._stopped.is_set():
                    raise
                log.warning("%s: writing a batch failed (%s); again in %.1f s", self.projection.NAME, exc, backoff)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, WRITE_BACKOFF_MAX_S)

    def _nack_failed(self, consumer: GroupConsumer, stream_id: str, version: int) -> None:
        held = self._held.pop((stream_id, version), None)
        if held is None:  # not one of ours (cannot happen: the batch is made of held deliveries)
            raise ProjectionError(f"{self.projection.NAME}: {stream_id}@{version} failed but was not delivered here")
        log.warning("%s: %s@%s failed (retry %s): nacked for retry; the server parks it after its max retries",
                    self.projection.NAME, stream_id, version, held.delivery.retry_count)
        try:
            consumer.nack(held.delivery, "retry")
        except PersistenceError as exc:  # the consumer is gone: the server retries it anyway
            log.warning("%s: nack failed: %s", self.projection.NAME, exc)
        self.nacked += 1

    def _ack(self, consumer: GroupConsumer, deliveries: Iterable[Delivery]) -> None:
        for delivery in deliveries:
            try:
                consumer.ack(delivery)
            except PersistenceError as exc:  # the consumer is gone: redelivered elsewhere, a duplicate there
                log.warning("%s: ack failed: %s", self.projection.NAME, exc)
                return
            self.acked += 1


__all__ = ["GROUP_PREFIX", "PersistentProjector", "ensure_group", "group_name", "group_settings", "group_source"]
