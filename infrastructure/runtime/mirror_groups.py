"""A hot mirror fed by an EventStoreDB persistent subscription group: the design card's
"persistent subscriptions feed ... hot mirror replicas", for state nodes on EventStoreDB.

Why a group, where a catch-up subscription would also do: the server keeps the group's
position and pushes live events to it (no client-side tailing of ``$all``), shows the
standby's consumer, its events in flight and its parked ones in the server's own tooling
(``xplatform status`` and the server UI list the group beside the projections'), and a
standby that restarts resumes where its acks reached instead of the client guessing.

What a mirror needs is more than a group gives, so the feed has two parts, both applied by
one thread (the mirror is single-writer, :mod:`infrastructure.runtime.mirrors`):

- **the group** ``<prefix>mirror-<node>-<categories hash>`` on ``$all`` filtered to the
  mirrored categories, one consumer (this node), strategy ``dispatch_to_single``, created
  at ``start_from="end"`` the first time: every event stored after that is delivered, and
  acked once applied (or skipped: the mirror does not hold that entity);
- **discovery scans**: the entities stored before then, and those of shards this node newly
  stands by for (:meth:`rescan`), are found by reading the store from its beginning (one
  read per page, as the catch-up feed does); held entities skip what they have by version.

The group is created before the first scan reads the store's head, so every event is seen
by one of the two (both, harmlessly, around that moment: versions decide). While a scan
runs the mirror's position stays unset (its lag counts the whole store: it *is* catching
up); at its end the position is the furthest either part reached, so ``lag 0`` means what it
means for the catch-up feed: every stored event of the categories is in.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading

from infrastructure.errors import SubscriptionGroupExists
from infrastructure.persistence.subscriptions import (
    Delivery,
    EventStream,
    GroupConsumer,
    GroupSettings,
    PersistentSubscriptions,
    Source,
    StreamEvent,
)
from infrastructure.runtime.mirrors import LAG_EVERY_S, Mirror, MirrorFeed

log = logging.getLogger(__name__)

SCAN_PAGE = 1000
"""Events per store read of a discovery scan (a few hundred kB)."""
QUEUE = 2000
"""Events read (by the consumer or a scan) and not yet applied, at most: bounds memory while
the mirror applies slower than the server delivers."""
BUFFER = 500
"""Deliveries the server may have in flight to this consumer (its ``buffer_size``)."""
_SCAN_STARTED = object()
"""Queued by a discovery scan before its first event (the follower's cue: a scan is running)."""
_SCANNED = object()
"""Queued, with the position it reached, by a discovery scan that read the store to its end."""


def group_name(prefix: str, node_id: str, categories: tuple[str, ...]) -> str:
    """The standby group of ``node_id`` for ``categories``: a group's filter cannot change,
    so another set of categories is another group."""
    digest = hashlib.sha256(",".join(sorted(categories)).encode()).hexdigest()[:8]
    return f"{prefix}mirror-{node_id}-{digest}"


class GroupMirrorFeed(MirrorFeed):
    """Follows a persistent subscription group (and discovery scans of ``stream``) into
    ``mirror``; see the module docstring. ``start``/``stop``/``pause``/``resume``/
    ``rescan`` and the lag count behave as :class:`MirrorFeed`'s."""

    def __init__(self, mirror: Mirror, stream: EventStream, subscriptions: PersistentSubscriptions, group: str, *,
                 name: str = "xplatform-mirror", lag_every_s: float = LAG_EVERY_S) -> None:
        super().__init__(mirror, stream, lag_every_s=lag_every_s, name=name)
        self.subscriptions = subscriptions
        self.group = group
        self.source = Source.all(mirror.filter)
        self._items: queue.Queue[object] = queue.Queue(QUEUE)
        self._consumer: GroupConsumer | None = None
        self._scan_wanted = threading.Event()
        self._scanning = False
        self._live_position: int | None = None
        self.acked = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> GroupMirrorFeed:
        try:
            self.subscriptions.create_group(self.group, self.source,
                                            GroupSettings(start_from="end", strategy="dispatch_to_single"))
        except SubscriptionGroupExists:
            pass  # ours from before a restart: it resumes where our acks reached
        self._scan_wanted.set()  # the first discovery scan
        self._start_threads((self._follow, ""), (self._consume, "-group"), (self._scan, "-scan"),
                            (self._count_lag, "-lag"))
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._running.set()
        self._scan_wanted.set()
        with self._sub_lock:
            if self._consumer is not None:
                self._consumer.stop()
        for thread in self._threads:
            thread.join(timeout=5)

    def rescan(self) -> None:
        """Find the entities of shards newly stood by for: a discovery scan from the beginning
        (another one after the one running, if any); the group goes on meanwhile."""
        self._scan_wanted.set()

    # ------------------------------------------------------------------ threads
    def _consume(self) -> None:
        """The group's deliveries into the queue; reconnects after a failure."""
        while not self._stopping.is_set():
            try:
                consumer = self.subscriptions.consume(self.group, self.source, buffer_size=BUFFER)
                with self._sub_lock:
                    if self._stopping.is_set():
                        consumer.stop()
                        return
                    self._consumer = consumer
                for delivery in consumer:
                    self._put(delivery)
                    if self._stopping.is_set():
                        return
            except Exception:
                if self._stopping.is_set():
                    return
                self.failures += 1
                log.exception("mirror group %s: the consumer failed; joining again", self.group)
                self._stopping.wait(0.5)

    def _scan(self) -> None:
        """Discovery scans, one at a time, whenever one is wanted."""
        while not self._stopping.is_set():
            self._scan_wanted.wait()
            if self._stopping.is_set():
                return
            self._scan_wanted.clear()
            self._put(_SCAN_STARTED)
            after: int | None = None
            try:
                while not self._stopping.is_set() and not self._scan_wanted.is_set():
                    page = self.stream.read_all(after, SCAN_PAGE, self.mirror.filter)
                    for event in page:
                        self._put(event)
                    if page:
                        after = page[-1].position
                    if len(page) < SCAN_PAGE:
                        break
            except Exception:
                self.failures += 1
                log.exception("mirror group %s: a discovery scan failed after %s; scanning again", self.group, after)
                self._stopping.wait(0.5)
                self._scan_wanted.set()
                continue
            if not self._scan_wanted.is_set():  # another was asked for meanwhile: that one ends the scanning
                self._put((_SCANNED, after))

    def _put(self, item: object) -> None:
        while not self._stopping.is_set():
            try:
                self._items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _follow(self) -> None:
        """The one thread that applies (the mirror is single-writer) and acks."""
        while not self._stopping.is_set():
            try:
                item = self._items.get(timeout=0.1)
            except queue.Empty:
                continue
            if not self._running.is_set():
                self._running.wait()
            if self._stopping.is_set():
                return
            try:
                self._take(item)
            except Exception:
                self.failures += 1
                log.exception("mirror group %s: applying %r failed", self.group, item)

    def _take(self, item: object) -> None:
        if isinstance(item, Delivery):
            self._apply(item.event)
            position = item.event.position
            self._live_position = position if self._live_position is None else max(self._live_position, position)
            if not self._scanning:
                self.mirror.position = self._live_position
            consumer = self._consumer
            if consumer is not None:
                consumer.ack(item)
                self.acked += 1
        elif isinstance(item, StreamEvent):
            self._apply(item)
        elif item is _SCAN_STARTED:
            self._scanning = True
            self.mirror.forget_evictions()
            self.mirror.position = self.mirror.lag_events = None
        elif isinstance(item, tuple) and item[0] is _SCANNED:
            self._scanning = False
            reached = [p for p in (item[1], self._live_position) if p is not None]
            self.mirror.position = max(reached) if reached else None
            self.count_lag()

    def _apply(self, event: StreamEvent) -> None:
        position = self.mirror.position
        self.mirror.apply(event)
        self.mirror.position = position  # set by _take: scans and deliveries interleave


__all__ = ["GroupMirrorFeed", "group_name"]
