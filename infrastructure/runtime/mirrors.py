"""Hot mirrors: live, read-only copies of entities, fed by the events topic.

A :class:`Mirror` holds entities of some categories (or chosen entities) in memory and
applies every stored event to them as a subscription delivers it: the same entity classes,
the same codec (the node's mapper), the same ``mutate`` as an activation's replay. No
handler runs, nothing is written, no effect leaves: a mirrored entity's state is the replay
of its stream up to its mirrored version (``mirror.version(ref)``). A :class:`MirrorFeed`
follows the store's catch-up subscription (every store) into the mirror on a thread of its
own and counts how far behind it is (``lag_events``).

Two users:

- **Anyone** (a back-office view, a second region): ``Mirror(types, journal, mapper,
  categories=("Lot",))`` and ``MirrorFeed(mirror, open_event_stream(settings)).start()``;
  read with ``mirror.get(ref)`` (a copy through the codec, safe to keep) or
  ``mirror.read(ref, fn)`` (``fn`` sees the live entity under the mirror's lock; it must not
  change it). See README "Hot mirrors".
- **A state node standing by** for shards (warm takeover): when it becomes their owner, an
  activation takes the mirrored entity (:meth:`Mirror.promote`) instead of reading it whole
  from the store, then reads only the events after the mirror's version (a mirror that is
  behind is caught up from the store before serving: never stale), and writes the takeover
  marker as every activation of a moved entity does. A mirror whose last event is not the
  store's (ahead of the store, or different) is discarded with an error log and
  ``xplatform_mirror_promotions_total{outcome="discarded"}``, and the entity is loaded cold.

How an entity enters the mirror: on the first event the feed delivers for it (and that
``admit(ref)`` allows), it is read from the store (snapshot + events, as an activation), which
may take it past the event at hand; events at or below its version are then skipped without
being decoded. So a feed started from the beginning of the store discovers every entity of
its categories without replaying every old event, and a gap (an event that does not follow
the mirrored version) is never applied: the entity is read again. (A stream's first event
while the feed is live, lag 0, is a new entity: built from that event, no store read.)

Memory: each entity's estimated size is its encoded state (msgpack, what a snapshot would
store), re-estimated every ``REESTIMATE_EVERY`` events; past ``budget_bytes`` the least
recently updated entities leave (LRU). An evicted entity comes back only when it fits again,
so one entity larger than the budget is never read over and over.

Threads: the feed thread applies events; ``promote``, ``get``, ``read`` and ``drop`` may be
called from any thread; one lock guards the entities (held only for in-memory work, never
for store reads).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TypeVar

from eventsourcing.persistence import Mapper, StoredEvent

from domain.entity import Entity
from domain.refs import EntityRef
from infrastructure.errors import InfrastructureError
from infrastructure.metrics import MirrorMetrics
from infrastructure.persistence.port import EventJournal
from infrastructure.persistence.rehydrate import rehydrate
from infrastructure.persistence.subscriptions import Checkpoint, EventFilter, EventStream, EventSubscription, StreamEvent
from infrastructure.runtime.registry import EntityTypes

log = logging.getLogger(__name__)

T = TypeVar("T")

REESTIMATE_EVERY = 64
"""Events between two size estimates of one entity (an estimate encodes its whole state)."""
LAG_CAP = 10_000
"""Most events counted for ``lag_events``: beyond it the mirror is simply far behind."""
LAG_EVERY_S = 1.0
"""How often a running feed counts its lag (one bounded read of the store)."""
FEED_POLL_S = 0.05
"""How often a standby's catch-up feed looks for new events on SQLite once caught up (the
read models' projectors poll every 10 ms, their lag is what readers see). A mirror's lag
only decides how much of the store's tail a promotion reads, so a state node's process - the
hot path's GIL - is not woken 100 times a second for it."""


class MirrorError(InfrastructureError):
    """Raised when a mirror is misused: a category it does not know, a feed started twice."""


class _Held:
    """One mirrored entity and what the mirror knows of it."""

    __slots__ = ("entity", "snapshot_version", "last_crc", "size", "since_estimate")

    def __init__(self, entity: Entity, snapshot_version: int, last_crc: int | None) -> None:
        self.entity = entity
        self.snapshot_version = snapshot_version
        self.last_crc = last_crc  # crc32 of the stored state of the event at entity.version (None: not seen)
        self.size = 0
        self.since_estimate = 0


def state_digest(entity: Entity, mapper: Mapper[str]) -> str:
    """SHA-256 of the entity's state as a snapshot stores it (through ``mapper``'s codec),
    without ``_created_on`` (the time ``Entity.blank`` ran, not part of any event) and the
    platform part's ``_live`` (a count of the live connections, cached once asked): two
    copies with the same digest are indistinguishable to the runtime."""
    state = dict(type(entity).Snapshot.take(entity).state)
    for derived in ("_created_on", "_live"):
        state.pop(derived, None)
    return hashlib.sha256(mapper.transcoder.encode(state)).hexdigest()


class Mirror:
    """Read-only copies of entities, kept current by :meth:`apply` (see the module docstring).

    ``categories``: the categories to mirror (default: every category of ``types``);
    ``admit(ref)``: whether an entity not held yet may enter (default: all of those
    categories; a state node passes "its shard is one I stand by for"); ``budget_bytes``:
    memory limit over the estimated sizes (0: none)."""

    def __init__(self, types: EntityTypes, journal: EventJournal, mapper: Mapper[str], *,
                 categories: Iterable[str] | None = None, admit: Callable[[EntityRef], bool] | None = None,
                 budget_bytes: int = 0, metrics: MirrorMetrics | None = None) -> None:
        self.types = types
        self.journal = journal
        self.mapper = mapper
        self.categories = tuple(sorted(categories if categories is not None else types.categories))
        unknown = [c for c in self.categories if types.get(c) is None]
        if unknown:
            raise MirrorError(f"no entity class for categories {unknown} (known: {types.categories})")
        if budget_bytes < 0:
            raise MirrorError("budget_bytes must be 0 (no limit) or positive")
        self.admit = admit or (lambda ref: True)
        self.budget_bytes = budget_bytes
        self.metrics = metrics or MirrorMetrics()
        self.position: int | None = None
        """Global position of the last event (or checkpoint) the mirror considered."""
        self.lag_events: int | None = None
        """Events stored after ``position`` (up to LAG_CAP) when the feed last counted; None: not yet."""
        self.bytes = 0
        self._held: OrderedDict[EntityRef, _Held] = OrderedDict()  # least recently updated first
        self._evicted: dict[EntityRef, int] = {}  # over budget: ref -> its size when it left
        self._lock = threading.Lock()

    @property
    def filter(self) -> EventFilter:
        """The events this mirror needs from a subscription."""
        return EventFilter(categories=self.categories)

    # ------------------------------------------------------------------ reading
    def __contains__(self, ref: EntityRef) -> bool:
        return ref in self._held

    def __len__(self) -> int:
        return len(self._held)

    def refs(self) -> list[EntityRef]:
        with self._lock:
            return list(self._held)

    def version(self, ref: EntityRef) -> int | None:
        """The mirrored version of ``ref`` (None: not held)."""
        held = self._held.get(ref)
        return None if held is None else held.entity.version

    def read(self, ref: EntityRef, fn: Callable[[Entity], T]) -> T | None:
        """``fn(entity)`` under the mirror's lock (None when not held): the live copy, no
        event applied meanwhile. ``fn`` must not change it, nor keep it."""
        with self._lock:
            held = self._held.get(ref)
            return None if held is None else fn(held.entity)

    def get(self, ref: EntityRef) -> Entity | None:
        """A copy of the mirrored entity (through a snapshot and the codec): yours to keep."""
        with self._lock:
            held = self._held.get(ref)
            if held is None:
                return None
            stored = self.mapper.to_stored_event(type(held.entity).Snapshot.take(held.entity))
        return self.mapper.to_domain_event(stored).mutate(None)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ feeding (feed thread)
    def apply(self, item: StreamEvent | Checkpoint) -> None:
        """Take one delivered event (or checkpoint) into account. Events of other categories,
        of entities not admitted, and at or below the mirrored version change nothing."""
        if isinstance(item, Checkpoint):
            self.position = item.position
            return
        self._apply(item)
        self.position = item.position

    def _apply(self, event: StreamEvent) -> None:
        category = event.category
        if category not in self.categories:
            return
        ref = EntityRef.from_stream_id(event.stream_id)
        held = self._held.get(ref)
        if held is None:
            if not self._may_enter(ref):
                return
            self._enter(ref, event)
            return
        version = held.entity.version
        if event.version <= version:
            return  # already in (read from the store past it)
        if event.version != version + 1:  # a gap: never applied; read again
            log.warning("mirror of %s at version %s got version %s; reading it again", ref, version, event.version)
            self._remove(ref, None)
            self._enter(ref, None)
            return
        domain_event = self.mapper.to_domain_event(event.stored())
        with self._lock:
            if self._held.get(ref) is not held:
                return  # promoted or dropped meanwhile
            domain_event.mutate(held.entity)  # type: ignore[attr-defined]
            held.last_crc = zlib.crc32(event.state)
            self._held.move_to_end(ref)
            held.since_estimate += 1
        self.metrics.applied.inc()
        if held.since_estimate >= REESTIMATE_EVERY:
            self._estimate(ref, held)
            self._keep_budget()

    def _may_enter(self, ref: EntityRef) -> bool:
        if not self.admit(ref):
            return False
        size = self._evicted.get(ref)
        if size is None:
            return True
        if self.budget_bytes and self.bytes + size > self.budget_bytes:
            return False  # still does not fit: stays out, never read over and over
        del self._evicted[ref]
        return True

    def _enter(self, ref: EntityRef, event: StreamEvent | None) -> None:
        """Hold ``ref``: built from ``event`` when it is the stream's first and the feed is
        live (a new entity: no store read), else read from the store, at or past ``event``
        (catching up, an old entity's later events are then skipped without decoding)."""
        if event is not None and event.version == 1 and self.lag_events == 0:
            entity = self.types[ref.category].blank(ref.entity_id)
            self.mapper.to_domain_event(event.stored()).mutate(entity)  # type: ignore[attr-defined]
            held = _Held(entity, 0, zlib.crc32(event.state))
            self.metrics.applied.inc()
        else:
            entity, snapshot_version, last = self._read(ref)
            held = _Held(entity, snapshot_version, None if last is None else zlib.crc32(last.state))
            self.metrics.loaded.inc()
        with self._lock:
            if ref in self._held:
                return
            self._held[ref] = held
        self._estimate(ref, held)
        self._keep_budget()

    def _read(self, ref: EntityRef) -> tuple[Entity, int, StoredEvent | None]:
        """The entity as stored, its snapshot version, and its last event if one was read."""
        events: list[StoredEvent] = []
        journal = _Recording(self.journal, events)
        entity, snapshot_version = rehydrate(journal, self.mapper, self.types[ref.category], ref)  # type: ignore[arg-type]
        return entity, snapshot_version, events[-1] if events else None

    def _estimate(self, ref: EntityRef, held: _Held) -> None:
        with self._lock:  # encoded under the lock: a promoted entity changes on other threads
            if self._held.get(ref) is not held:
                return
            size = len(self.mapper.to_stored_event(type(held.entity).Snapshot.take(held.entity)).state)
            self.bytes += size - held.size
            held.size = size
            held.since_estimate = 0
        self._record()

    def _keep_budget(self) -> None:
        if not self.budget_bytes:
            return
        while self.bytes > self.budget_bytes and self._held:
            ref = next(iter(self._held))
            size = self._remove(ref, "budget")
            if size is not None:
                self._evicted[ref] = size

    def _remove(self, ref: EntityRef, reason: str | None) -> int | None:
        with self._lock:
            held = self._held.pop(ref, None)
            if held is None:
                return None
            self.bytes -= held.size
        if reason is not None:
            self.metrics.evicted.labels(reason).inc()
        self._record()
        return held.size

    def _record(self) -> None:
        self.metrics.entities.set(len(self._held))
        self.metrics.bytes.set(self.bytes)

    # ------------------------------------------------------------------ letting go (any thread)
    def drop(self, gone: Callable[[EntityRef], bool]) -> int:
        """Forget every held (and evicted) entity for which ``gone(ref)``: e.g. its shard is
        no longer one this node stands by for."""
        with self._lock:
            refs = [ref for ref in self._held if gone(ref)]
        for ref in refs:
            self._remove(ref, "dropped")
        for ref in [ref for ref in list(self._evicted) if gone(ref)]:
            self._evicted.pop(ref, None)
        return len(refs)

    def forget_evictions(self) -> None:
        """Let evicted entities in again on their next event (e.g. after a rescan)."""
        self._evicted.clear()

    def promote(self, ref: EntityRef) -> tuple[Entity, int] | None:
        """Hand the mirrored ``ref`` over to be served (a state node's activation, on a
        reader thread): taken out of the mirror, caught up with the events the store holds
        after its version, returned with the version of the snapshot it was read from (0:
        none). None when not held, or when discarded because the mirror's last event is not
        the store's (see the module docstring): the caller loads it cold."""
        with self._lock:
            held = self._held.pop(ref, None)
            if held is not None:
                self.bytes -= held.size
        if held is None:
            return None
        self._record()
        entity = held.entity
        version = entity.version
        tail = self.journal.read(ref.stream_id, after_version=version - 1)
        first = tail[0] if tail else None
        if first is None or first.originator_version != version or (
                held.last_crc is not None and zlib.crc32(first.state) != held.last_crc):
            found = "nothing" if first is None else f"version {first.originator_version} (other content)"
            log.error("mirror of %s is at version %s but the store holds %s there: mirror discarded, loading "
                      "from the store", ref, version, found)
            self.metrics.promoted.labels("discarded").inc()
            return None
        for stored in tail[1:]:
            self.mapper.to_domain_event(stored).mutate(entity)  # type: ignore[attr-defined]
        self.metrics.promoted.labels("warm").inc()
        return entity, held.snapshot_version


class _Recording:
    """A journal that remembers the events read through it (the mirror's first read of an
    entity keeps the crc of its last event, to check it against the store on promotion)."""

    def __init__(self, journal: EventJournal, into: list[StoredEvent]) -> None:
        self._journal = journal
        self._into = into

    def latest_snapshot(self, stream_id: str) -> StoredEvent | None:
        return self._journal.latest_snapshot(stream_id)

    def read(self, stream_id: str, after_version: int = 0) -> list[StoredEvent]:
        events = self._journal.read(stream_id, after_version)
        self._into.extend(events)
        return events


class MirrorFeed:
    """Follows ``stream`` into ``mirror`` on a thread of its own (``start``/``stop``), from
    ``after`` (None: the beginning of the store, so every entity of the categories is found),
    and counts the lag every ``lag_every_s`` on a second thread. ``rescan()`` starts over
    from the beginning (a state node given more shards to stand by for: their entities are
    found again; those held are skipped by version, without decoding). ``pause()`` and
    ``resume()`` hold the feed (tests of a lagging standby, operators)."""

    def __init__(self, mirror: Mirror, stream: EventStream, after: int | None = None,
                 lag_every_s: float = LAG_EVERY_S, name: str = "xplatform-mirror") -> None:
        self.mirror = mirror
        self.stream = stream
        self.after = after
        self.lag_every_s = lag_every_s
        self.name = name
        self._subscription: EventSubscription | None = None
        self._stopping = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._rescan = False
        self._threads: list[threading.Thread] = []
        self._sub_lock = threading.Lock()
        self.failures = 0
        self.on_lag: Callable[[int], None] | None = None
        """Called (on the lag thread) with the lag each time the count differs from the last."""

    def start(self) -> MirrorFeed:
        self._start_threads((self._follow, ""), (self._count_lag, "-lag"))
        return self

    def _start_threads(self, *targets: tuple[Callable[[], None], str]) -> None:
        """One daemon thread per (function, name suffix); a feed starts once."""
        if self._threads:
            raise MirrorError("this feed is already started")
        for target, suffix in targets:
            thread = threading.Thread(target=target, name=self.name + suffix, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        self._running.set()
        self._end_subscription()
        for thread in self._threads:
            thread.join(timeout=5)

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def rescan(self) -> None:
        """Start over from the beginning; returns at once (ending a subscription may wait for
        its threads, e.g. PostgreSQL's listener: never on the caller's event loop)."""
        threading.Thread(target=self._restart, name=f"{self.name}-rescan", daemon=True).start()

    def _restart(self) -> None:
        with self._sub_lock:
            self._rescan = True
            if self._subscription is not None:
                self._subscription.stop()

    def _end_subscription(self) -> None:
        with self._sub_lock:
            if self._subscription is not None:
                self._subscription.stop()

    def _follow(self) -> None:
        after = self.after
        while not self._stopping.is_set():
            try:
                with self._sub_lock:  # stop() and rescan() end the subscription under it: none is missed
                    if self._stopping.is_set():
                        return
                    if self._rescan:
                        self._rescan = False
                        self.mirror.forget_evictions()
                        self.mirror.position = self.mirror.lag_events = after = None
                    subscription = self._subscription = self.stream.subscribe_all(
                        after, self.mirror.filter, include_checkpoints=True)
                try:
                    for item in subscription:
                        if not self._running.is_set():
                            self._running.wait()
                        if self._stopping.is_set() or self._rescan:
                            break
                        self.mirror.apply(item)
                        after = self.mirror.position
                finally:
                    subscription.stop()
            except Exception:
                self.failures += 1
                log.exception("mirror feed %s failed; resubscribing after position %s", self.name, after)
                self._stopping.wait(0.5)

    def _count_lag(self) -> None:
        last: int | None = None
        while not self._stopping.wait(self.lag_every_s):
            try:
                lag = self.count_lag()
                if lag != last and self.on_lag is not None:
                    self.on_lag(lag)
                last = lag
            except Exception:
                log.warning("mirror feed %s could not count its lag", self.name, exc_info=True)

    def count_lag(self) -> int:
        """Events of the mirrored categories stored after the mirror's position (up to LAG_CAP)."""
        lag = len(self.stream.read_all(self.mirror.position, LAG_CAP, self.mirror.filter))
        self.mirror.lag_events = lag
        self.mirror.metrics.lag.set(lag)
        return lag

    def wait_caught_up(self, timeout_s: float = 10.0) -> bool:
        """Wait until no event of the mirrored categories is stored after the mirror's position."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.count_lag() == 0:
                return True
            time.sleep(0.01)
        return False

