"""The state node: hosts shards of entities, one message at a time per entity.

Messages are processed synchronously on the event loop, so one entity never sees two
messages at once, and there is no task or queue per entity (an ``asyncio.Queue`` alone
costs 3.3 KB; 1M resident entities must fit). Per entity the node keeps a small
:class:`Cell`; a deque exists only while the entity is loading.

Life of a message (see :mod:`domain.dispatch` for the handler side):

1. The cell is resident → the entity handles the message now; its events are encoded and
   handed to group commit as one :class:`PendingWrite`; the entity's in-memory state moves
   on, so the next message of the same entity is processed at once (pipelining).
2. The reply and the outbound effects wait on that write (or, for a message without
   events, on the entity's latest undurable write): nobody hears of a change, or of a state
   that depends on one, before it is durable.
3. If a write fails (conflict: someone else wrote the stream; or the store failed), every
   later undurable write of the entity is failed too, their senders get a retryable error,
   and the entity is reloaded from the store: never half-applied.
4. If a handler fails after triggering events, the entity is reloaded once its earlier
   writes settle, and the message is refused. Other entities are not affected.

A state proxy's remote call (a ``RemoteCall`` effect, :mod:`domain.proxy`) is released like
any effect, to the runner the wiring gave the node (:mod:`infrastructure.runtime.remote`),
which runs it beside the entity; its result comes back through :meth:`StateNode.deliver`.
Ordinary entities pay nothing for it but one type test per effect that is not a ``Tell``.

Entity lifecycle per cell: absent → LOADING (snapshot + tail read on a reader thread;
messages queue) → ACTIVE → (idle past ``passivate_after_s``, nothing pending, no timers)
passivated. Snapshots are taken every ``snapshot_every`` events, at the state right after
the message, and saved after that message's events are durable.

Hops: every message processed is timed on this node's clock (four ``perf_counter`` reads
and one histogram update): queue (received until its handler starts), handler, append
(handler end until durable) - ``xplatform_node_hop_seconds{hop}`` - and the durations go
back to the asker with the reply (:class:`~infrastructure.transport.port.NodeHops`), so an
edge can tell its own transport time from the node's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from eventsourcing.persistence import Mapper

from domain.dispatch import Outcome, handle
from domain.effects import RemoteCall, Reply, Tell
from domain.entity import Entity
from domain.errors import DomainError, HandlerFailed, RetryLater, UnknownCategory
from domain.messages import EntityMessage, Inbound, RemoteResult, TimerFired, remote_result_id, timer_message_id
from domain.refs import EntityRef
from infrastructure.errors import CodecError, PersistenceError, RuntimeStopped, WiringError
from infrastructure.metrics import NodeMetrics
from infrastructure.persistence.port import EventJournal, StreamWrite
from infrastructure.persistence.rehydrate import rehydrate
from infrastructure.runtime.group_commit import GroupCommitter, PendingWrite
from infrastructure.runtime.registry import EntityTypes
from infrastructure.runtime.sharding import ShardOwnership
from infrastructure.settings import Settings
from infrastructure.transport.port import NodeHops, OutboundSink, with_version

log = logging.getLogger(__name__)

ReplyTo = Callable[[Reply], None] | None

READER_THREADS = 2
"""Threads reading entities for activation; SQLite and PostgreSQL reads release the GIL."""
LOAD_BATCH = 256
"""Most activations read in one reader job: bounds the wait of the first in the batch."""
SNAPSHOT_SPREAD_FROM = 20
"""Snapshot intervals this long or longer are spread per stream (see ``_pending_write``);
shorter ones (tests, tiny entities) stay exact."""


class WarmSource(Protocol):
    """Where an activation may find an entity already in memory (a hot mirror,
    :mod:`infrastructure.runtime.mirrors`): caught up with the store's tail and handed over,
    with the version of the snapshot it was read from; None to load it from the store."""

    def promote(self, ref: EntityRef) -> tuple[Entity, int] | None: ...


class Router(Protocol):
    """Where entity-to-entity messages go (the transport routes them by shard map)."""

    def tell(self, to: EntityRef, message: EntityMessage) -> None: ...


class RemoteRunner(Protocol):
    """Where state proxies' remote calls run (:mod:`infrastructure.runtime.remote`)."""

    def attach(self, deliver: Callable[[EntityRef, Inbound], None]) -> None: ...

    def start(self, ref: EntityRef, call: RemoteCall) -> None: ...

    async def close(self) -> None: ...


class Cell:
    """Per-entity bookkeeping (kept small: one per resident entity)."""

    __slots__ = ("entity", "queue", "tail", "loading", "snapshot_version", "timers", "last_used")

    def __init__(self) -> None:
        self.entity: Entity | None = None
        self.queue: deque[tuple[Inbound, ReplyTo, NodeHops]] | None = None
        self.tail: PendingWrite | None = None
        self.loading = False
        self.snapshot_version = 0
        self.timers: dict[str, asyncio.TimerHandle] | None = None
        self.last_used = 0.0

    @property
    def idle(self) -> bool:
        return self.entity is not None and not self.loading and self.tail is None and not self.queue and not self.timers


class StateNode:
    """Hosts entities of the shards it owns. See the module docstring."""

    def __init__(
        self,
        types: EntityTypes,
        journal: EventJournal,
        mapper: Mapper[str],
        settings: Settings,
        ownership: ShardOwnership,
        metrics: NodeMetrics | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.types = types
        self.journal = journal
        self.mapper = mapper
        self.settings = settings
        self.ownership = ownership
        self.metrics = metrics or NodeMetrics()
        self.now = now
        self.outbound: OutboundSink | None = None
        """Where client-bound effects go (an edge-facing transport); set once by :meth:`connect`."""
        self.router: Router | None = None
        """Where entity-to-entity messages go; set once by :meth:`connect`."""
        self.remote: RemoteRunner | None = None
        """Where state proxies' remote calls run (None: they end with ``no_connector``)."""
        self.warm: WarmSource | None = None
        """Hot mirror to activate entities from (warm takeover), set by the wiring of a node
        that stands by for shards; None: every activation reads the store."""
        self.cells: OrderedDict[EntityRef, Cell] = OrderedDict()
        self._committer: GroupCommitter | None = None
        self._reader = ThreadPoolExecutor(max_workers=READER_THREADS, thread_name_prefix="xplatform-reader")
        self._to_load: deque[tuple[EntityRef, Cell]] = deque()
        self._loads_in_flight = 0
        self._load_scheduled = False
        self._sweeper: asyncio.Task[None] | None = None
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle
    def connect(self, router: Router, outbound: OutboundSink, remote: RemoteRunner | None = None) -> None:
        """Give the node its router and outbound sink (and, with state proxies, the runner of
        their remote calls): once, by the process's wiring (``ops/wiring``), before
        :meth:`start`. Transports never set them themselves: which transport carries a
        node's effects (in-process, the network server) is the wiring's choice, made in one
        place. Raises WiringError when called twice."""
        if self.router is not None or self.outbound is not None:
            raise WiringError("this state node is already connected to its router and outbound sink")
        self.router, self.outbound, self.remote = router, outbound, remote
        if remote is not None:
            remote.attach(self.deliver)

    async def start(self) -> None:
        """Raises WiringError when :meth:`connect` was not called: a node that ran without
        its sinks would drop every effect."""
        if self.router is None or self.outbound is None:
            raise WiringError("a state node starts only after connect(router, outbound)")
        self._loop = asyncio.get_running_loop()
        writable = getattr(self.ownership, "writable", None)
        self._committer = GroupCommitter(self.journal, self.metrics, self.settings.max_batch_events,
                                         may_write=writable or (lambda: True))
        self._running = True
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="xplatform-passivation")

    async def stop(self) -> None:
        """Stop taking messages, wait for pending appends, release threads."""
        self._running = False
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._committer is not None:
            await self._committer.drain()
            self._committer.close()
        for cell in self.cells.values():
            self._disarm_all(cell)
        if self.remote is not None:
            await self.remote.close()
        self._reader.shutdown(wait=True)

    # ------------------------------------------------------------------ delivery
    def deliver(self, to: EntityRef, message: Inbound, reply_to: ReplyTo = None, hops: NodeHops | None = None) -> None:
        """Give ``message`` to entity ``to`` (event loop thread). ``reply_to`` receives the
        reply once it may leave (after durability), or an error reply; ``hops`` (the
        asker's, or a new one) is filled with this node's durations before that, unless
        the message is refused before an entity sees it."""
        if hops is None:
            hops = NodeHops()
        hops.received = time.perf_counter()
        if not self._running:
            _answer(reply_to, _error_reply(message.message_id, RuntimeStopped.__doc__ or "stopping", retryable=True))
            return
        entity_class = self.types.get(to.category)
        if entity_class is None:
            self.metrics.message("unknown", UnknownCategory.code)  # bounded label: not the category
            _answer(reply_to, _reply_for(message.message_id, UnknownCategory(f"no entity category {to.category!r}")))
            return
        if not self.ownership.owns(to):
            self.metrics.message(to.category, RetryLater.code)
            _answer(reply_to, _reply_for(message.message_id, RetryLater(f"shard of {to} is not on this node")))
            return
        cell = self.cells.get(to)
        if cell is None:
            cell = self.cells[to] = Cell()
            self.metrics.entities_active.inc()
        else:
            self.cells.move_to_end(to)
            if cell.entity is not None and cell.entity.owner_epoch != self.ownership.epoch(to):
                self._stale(to, cell)
        cell.last_used = time.monotonic()
        if cell.entity is None:
            if cell.queue is None:
                cell.queue = deque()
            cell.queue.append((message, reply_to, hops))
            if not cell.loading and cell.tail is None:
                self._load(to, cell)
            return
        self._process(to, cell, message, reply_to, hops)

    def _process(self, ref: EntityRef, cell: Cell, message: Inbound, reply_to: ReplyTo, hops: NodeHops) -> None:
        entity = cell.entity
        assert entity is not None
        version_before = entity.version
        started = time.perf_counter()
        outcome = handle(entity, message)
        hops.handled = time.perf_counter()
        hops.queue, hops.handler = started - hops.received, hops.handled - started
        if outcome.failure is not None:  # a bug in the entity: the sender got a generic reason
            log.error("handler of %s failed on message %s", ref, message.message_id, exc_info=outcome.failure,
                      extra={"entity": str(ref), "message_id": message.message_id})
        if outcome.events and not outcome.restore:
            pending = self._pending_write(ref, cell, entity, version_before, outcome)
            if pending is None:  # events not encodable: refused, entity restored
                outcome = Outcome(_reply_for(message.message_id, HandlerFailed("an event could not be encoded")),
                                  restore=True)
        self.metrics.message(ref.category, outcome.outcome_label)
        if outcome.restore:
            cell.entity = None  # later messages queue until the entity is rebuilt
            if cell.tail is None:
                self._load(ref, cell)
        # the reply's position token: the stream's version once this message's events (or,
        # without events, the earlier writes it waits for) are durable; none if nothing stands
        release = self._releaser(ref, cell, outcome, reply_to, hops, 0 if outcome.restore else entity.version)
        if outcome.events and not outcome.restore:
            assert cell.tail is not None
            cell.tail.waiters.append(release)
            assert self._committer is not None
            self._committer.submit(cell.tail)
        elif cell.tail is not None:
            cell.tail.waiters.append(release)
        else:
            release(None)

    def _pending_write(self, ref: EntityRef, cell: Cell, entity: Entity, version_before: int,
                       outcome: Outcome) -> PendingWrite | None:
        try:
            stored = tuple(map(self.mapper.to_stored_event, outcome.events))
            snapshot = None
            every = type(entity).SNAPSHOT_EVERY or self.settings.snapshot_every
            since = entity.version - cell.snapshot_version
            # Up to a quarter earlier, by a fixed per-stream offset: entities fed at the same
            # pace would otherwise all snapshot in the same batch (a burst of encoding on
            # the event loop). Activation still replays at most ``every`` events.
            spread = every // 4 if every >= SNAPSHOT_SPREAD_FROM else 0
            if since >= every or (spread and since >= every - spread
                                  and since >= every - zlib.crc32(ref.stream_id.encode()) % (spread + 1)):
                snapshot = self.mapper.to_stored_event(type(entity).Snapshot.take(entity))
                cell.snapshot_version = entity.version
        except CodecError:
            log.exception("event of %s not encodable; message %s refused", ref, outcome.reply.message_id,
                          extra={"entity": str(ref), "message_id": outcome.reply.message_id})
            return None
        pending = PendingWrite(StreamWrite(ref.stream_id, version_before, stored), snapshot)
        pending.waiters.append(lambda error: self._settled(ref, cell, pending, error))
        cell.tail = pending
        return pending

    def _settled(self, ref: EntityRef, cell: Cell, pending: PendingWrite, error: PersistenceError | None) -> None:
        """First waiter of every write: keep the cell consistent with what is durable."""
        if error is not None:
            log.warning("write of %s after version %s failed: %s", ref, pending.write.expected_version, error,
                        extra={"entity": str(ref)})
            assert self._committer is not None
            cell.entity = None
            cell.tail = None
            self._committer.discard_stream(ref.stream_id, error)  # later writes were built on it
        elif cell.tail is pending:
            cell.tail = None
        if cell.entity is None and cell.tail is None and not cell.loading and self.cells.get(ref) is cell:
            self._load(ref, cell)  # (a released cell is not reloaded: its shard is elsewhere)

    def _releaser(self, ref: EntityRef, cell: Cell, outcome: Outcome, reply_to: ReplyTo,
                  hops: NodeHops, version: int = 0) -> Callable[[PersistenceError | None], None]:
        def release(error: PersistenceError | None) -> None:
            hops.append = time.perf_counter() - hops.handled
            hops.node = self.settings.node_id
            self.metrics.hops.observe_each((hops.queue, hops.handler, hops.append))
            if error is not None:
                _answer(reply_to, _error_reply(outcome.reply.message_id, f"not applied: {error}", retryable=True))
                return
            if reply_to is not None:
                reply_to(with_version(outcome.reply, version))
            for effect in outcome.effects:
                if isinstance(effect, Tell):
                    if self.router is not None:
                        self.router.tell(effect.to, EntityMessage(effect.message_id, self.now(), ref, effect.type, effect.data))
                elif isinstance(effect, RemoteCall):  # a state proxy's I/O (domain/proxy.py)
                    self._remote_call(ref, effect)
                elif self.outbound is not None:
                    self.outbound.publish(ref, effect)
            if outcome.timers_armed or outcome.timers_disarmed:
                self._rearm(ref, cell, outcome.timers_disarmed, outcome.timers_armed)

        return release

    def _remote_call(self, ref: EntityRef, call: RemoteCall) -> None:
        """Run a state proxy's call beside it; without a runner, answer ``no_connector``."""
        if self.remote is not None:
            self.remote.start(ref, call)
            return
        result = RemoteResult(remote_result_id(call.op, call.attempt), self.now(), call.op, call.attempt, False,
                              error="no_connector", reason="this process runs no connectors (XPLATFORM_PROXY_PRIMARIES)")
        assert self._loop is not None
        self._loop.call_soon(self.deliver, ref, result)

    # ------------------------------------------------------------------ activation
    def _load(self, ref: EntityRef, cell: Cell) -> None:
        """Queue an activation. Activations are read in batches on the reader threads
        (like group commit for reads): a reconnect storm after a failover activates
        thousands of entities at once, and one thread hop per entity would dominate."""
        cell.loading = True
        self._to_load.append((ref, cell))
        if self._loads_in_flight < READER_THREADS and not self._load_scheduled:
            self._load_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._start_load_batch)

    def _start_load_batch(self) -> None:
        self._load_scheduled = False
        while self._to_load and self._loads_in_flight < READER_THREADS:
            batch = [self._to_load.popleft() for _ in range(min(LOAD_BATCH, len(self._to_load)))]
            self._loads_in_flight += 1
            assert self._loop is not None
            started = time.perf_counter()
            future = self._loop.run_in_executor(self._reader, self._read_batch, batch)
            future.add_done_callback(functools.partial(self._batch_loaded, batch, started))

    def _read_batch(self, batch: list[tuple[EntityRef, Cell]]) -> list[tuple[Entity, int, bool] | Exception]:
        results: list[tuple[Entity, int, bool] | Exception] = []
        for ref, _cell in batch:
            try:
                results.append(self._read(ref))
            except Exception as exc:  # one unreadable entity must not fail its batch-mates
                results.append(exc)
        return results

    def _read(self, ref: EntityRef) -> tuple[Entity, int, bool]:
        """(reader thread) The entity as stored, its snapshot version, and whether it came
        warm from the mirror (then only the store's tail after the mirror's version was read)."""
        if self.warm is not None:
            promoted = self.warm.promote(ref)
            if promoted is not None:
                return promoted[0], promoted[1], True
        entity, snapshot_version = rehydrate(self.journal, self.mapper, self.types[ref.category], ref)
        return entity, snapshot_version, False

    def _batch_loaded(self, batch: list[tuple[EntityRef, Cell]], started: float, future: asyncio.Future[Any]) -> None:
        self._loads_in_flight -= 1
        try:
            results = future.result()
        except Exception as exc:
            results = [exc] * len(batch)
        elapsed = time.perf_counter() - started
        for (ref, cell), result in zip(batch, results, strict=True):
            self._loaded(ref, cell, result, elapsed)
        if self._to_load:
            self._start_load_batch()

    def _loaded(self, ref: EntityRef, cell: Cell, result: tuple[Entity, int, bool] | Exception, elapsed: float) -> None:
        cell.loading = False
        if self.cells.get(ref) is not cell:
            return  # released while loading (its shard moved away); its queue was answered then
        if isinstance(result, Exception):
            log.error("activation of %s failed: %s", ref, result, extra={"entity": str(ref)})
            error = RetryLater(f"entity {ref} could not be loaded: {result}")
            for message, reply_to, _hops in cell.queue or ():
                self.metrics.message(ref.category, error.code)
                _answer(reply_to, _reply_for(message.message_id, error))
            self._forget(ref)
            return
        entity, snapshot_version, warm = result
        self.metrics.activation_duration.observe(elapsed)
        epoch = self.ownership.epoch(ref)
        if entity.owner_epoch > epoch:
            # A newer owner already took this entity over: we are the stale one.
            error = RetryLater(f"{ref} is served by a newer owner (epoch {entity.owner_epoch} > {epoch})")
            for message, reply_to, _hops in cell.queue or ():
                self.metrics.message(ref.category, error.code)
                _answer(reply_to, _reply_for(message.message_id, error))
            self._forget(ref)
            return
        cell.entity = entity
        cell.snapshot_version = snapshot_version
        if entity.owner_epoch < epoch:
            self._write_takeover_marker(ref, cell, entity, epoch, "warm" if warm else "cold")
        self._rearm(ref, cell, (), entity.timers())
        queue = cell.queue
        while queue and cell.entity is not None:
            message, reply_to, hops = queue.popleft()
            self._process(ref, cell, message, reply_to, hops)
        if not queue:
            cell.queue = None

    def _write_takeover_marker(self, ref: EntityRef, cell: Cell, entity: Entity, epoch: int, kind: str) -> None:
        """Before serving a moved entity, append the takeover marker with our epoch; the
        messages queued behind it are pipelined and released only once it is durable. The
        takeover is counted once the marker is durable: a refused marker (another writer got
        in first) is not a takeover, and the reload behind it writes and counts its own."""
        version_before = entity.version
        entity.platform.take_ownership(entity, epoch, self.settings.node_id)
        outcome = Outcome(Reply(f"takeover:{epoch}", True), list(entity.collect_events()))
        pending = self._pending_write(ref, cell, entity, version_before, outcome)
        assert pending is not None and self._committer is not None
        counted = self.metrics.takeovers.labels(kind)
        pending.waiters.append(lambda error: None if error is not None else counted.inc())
        self._committer.submit(pending)

    # ------------------------------------------------------------------ timers
    def _rearm(self, ref: EntityRef, cell: Cell, disarm: Iterable[str], arm: Iterable[str]) -> None:
        timers = cell.timers if cell.timers is not None else {}
        for key in disarm:
            old = timers.pop(key, None)
            if old is not None:
                old.cancel()
        assert self._loop is not None
        for key in arm:
            spec = cell.entity.timer(key) if cell.entity is not None else None
            old = timers.pop(key, None)
            if old is not None:
                old.cancel()
            if spec is None:
                continue
            due, name, data = spec
            delay = max(0.0, due - self.now())
            timers[key] = self._loop.call_later(delay, self._fire, ref, key, due, name, data)
        cell.timers = timers or None

    def _fire(self, ref: EntityRef, key: str, due: float, name: str, data: Mapping[str, Any]) -> None:
        cell = self.cells.get(ref)
        if cell is not None and cell.timers is not None:
            cell.timers.pop(key, None)
            if not cell.timers:
                cell.timers = None
        self.deliver(ref, TimerFired(timer_message_id(key, due), self.now(), name, key, data))

    # ------------------------------------------------------------------ passivation
    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.passivate_sweep_s)
            self.passivate_idle(time.monotonic() - self.settings.passivate_after_s)

    def passivate_idle(self, used_before: float) -> int:
        """Remove idle entities last used before ``used_before`` (monotonic seconds).
        Walks from the least recently used and stops at the first recent one."""
        removed = 0
        busy: list[EntityRef] = []
        for ref, cell in list(self.cells.items()):
            if cell.last_used >= used_before:
                break
            if cell.idle:
                self._forget(ref)
                removed += 1
            else:
                busy.append(ref)
        for ref in busy:  # keep the walk short next time
            self.cells.move_to_end(ref)
        self.metrics.passivations.inc(removed)
        return removed

    def _forget(self, ref: EntityRef) -> None:
        if self.cells.pop(ref, None) is not None:
            self.metrics.entities_active.dec()

    # ------------------------------------------------------------------ shards moving away
    def release(self, moved: Callable[[EntityRef], bool]) -> int:
        """Drop every resident entity for which ``moved(ref)`` is true: their shard now
        belongs to another node (the cluster calls this when the map takes shards from us).
        Nothing is written; timers are cancelled (the new owner arms them from the stored
        state); messages waiting for an activation get a retryable refusal; appends already
        submitted finish or fail as usual and their senders hear of it. Should the shard come
        back, the entity is read again and a new takeover marker is written before it
        answers anything: the other owner may have written in between."""
        dropped = [ref for ref in self.cells if moved(ref)]
        for ref in dropped:
            cell = self.cells[ref]
            self._disarm_all(cell)
            cell.entity = None
            error = RetryLater(f"shard of {ref} moved to another node")
            for message, reply_to, _hops in cell.queue or ():
                self.metrics.message(ref.category, error.code)
                _answer(reply_to, _reply_for(message.message_id, error))
            cell.queue = None
            self._forget(ref)
        self.metrics.released.labels("shard_moved").inc(len(dropped))
        return len(dropped)

    def _stale(self, ref: EntityRef, cell: Cell) -> None:
        """The resident copy was taken over at another epoch than the shard's current one:
        the shard went away and came back without us dropping it (a map we never saw, e.g.
        while our session was lost), and another owner may have written since. Never answer
        from it: rebuild from the store, behind a new takeover marker (``_loaded``), once
        this copy's own pending appends settle (they fail if the stream moved)."""
        log.info("%s: resident copy from epoch %s, shard now at epoch %s; reloading", ref,
                 cell.entity.owner_epoch if cell.entity is not None else None, self.ownership.epoch(ref))
        self._disarm_all(cell)
        cell.entity = None
        self.metrics.released.labels("stale_epoch").inc()

    @staticmethod
    def _disarm_all(cell: Cell) -> None:
        for handle_ in (cell.timers or {}).values():
            handle_.cancel()
        cell.timers = None

    # ------------------------------------------------------------------ introspection
    async def drain(self) -> None:
        """Wait until every write submitted so far is durable or failed."""
        if self._committer is not None:
            await self._committer.drain()

    def resident(self, ref: EntityRef) -> Entity | None:
        cell = self.cells.get(ref)
        return None if cell is None else cell.entity


def _answer(reply_to: ReplyTo, reply: Reply) -> None:
    if reply_to is not None:
        reply_to(reply)


def _reply_for(message_id: str, error: DomainError) -> Reply:
    return Reply(message_id, False, None, error.code, error.reason, error.retryable)


def _error_reply(message_id: str, reason: str, retryable: bool) -> Reply:
    return Reply(message_id, False, None, RetryLater.code, reason, retryable)

