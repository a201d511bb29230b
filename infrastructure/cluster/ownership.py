"""A state node's ownership state machine: may it serve (and write for) a shard right now?

    CONNECTING ──session up──▶ SERVING ──SUSPENDED──▶ FENCED ──reconnected──▶ SERVING
         ▲                        │                      │
         └──────── LOST (session expired: re-register) ◀─┘

- SERVING: the ZooKeeper session is connected; the node serves exactly the shards the
  current map gives it, at the epoch the map gives them.
- FENCED (kazoo SUSPENDED): the connection is gone but the session may still be alive
  (or may have expired on the server without us knowing). The node stops taking messages
  for every shard at once, *before* the session could expire and another node take over:
  the new owner never races a node that still believes it owns the shard. In-flight writes
  finish; the new owner's takeover marker makes any later stale append fail.
- LOST: the session expired; everything this node owned may already be elsewhere. It stays
  fenced until it has a new session and a fresh map.
- DRAINING (graceful stop): no new messages; pending appends finish; then the node leaves
  ZooKeeper and the allocator hands its shards to others at once.

``owns(ref)`` is the only question the runtime asks (``ShardOwnership``); ``epoch(ref)``
is the fencing token of the shard, written into takeover markers and carried on replies.

``may_speak_for(ref, node)`` is the transport's question about an entity message *from*
``ref`` arriving from ``node`` (infrastructure/transport/server.py): yes for the node our
map gives ``ref``'s shard, and for the shard's previous owner in our map history (the owner
before the current one) for ``previous_owner_window_s`` after we applied the move. A node
that loses a shard stops taking messages for it at once, but the writes it had in flight
finish and release what they caused (e.g. a Lot's ``credit_held`` to a Bidder); those are
its legitimate last words as owner and must not be dropped because the receiver's map
moved first. Any other node, and the previous owner after the window, is refused: the
window is one per shard move, kept per shard (bounded by the shard count).
Transitions arrive from kazoo's threads and are handed to the event loop thread
(``call_soon_threadsafe``): kazoo callbacks must not block, and the runtime reads this state
only on the loop thread.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

from domain.refs import EntityRef
from infrastructure.cluster.allocation import Assignment, ShardOwner
from infrastructure.metrics import ClusterMetrics
from infrastructure.runtime.sharding import shard_of

log = logging.getLogger(__name__)


EPOCH_BITS = 20
"""Map versions per cluster generation (1M). With generations in ms (< 2**42 until the year
2109) epochs stay below 2**62: signed 64-bit everywhere (msgpack, SQL, EventStoreDB)."""


PREVIOUS_OWNER_WINDOW_S = 5.0
"""Default of ``previous_owner_window_s`` (the setting ``transport_previous_owner_window_s``)."""


RELEASING_KEPT = 4096
"""Most shard handoffs kept waiting for their flush to be timed (more than a node owns)."""


class OwnershipState(enum.Enum):
    CONNECTING = "connecting"
    SERVING = "serving"
    FENCED = "fenced"
    LOST = "lost"
    DRAINING = "draining"


class Ownership:
    """This node's view of what it owns. Mutated only on the event loop thread."""

    def __init__(self, node_id: str, shards_per_category: int, metrics: ClusterMetrics | None = None,
                 previous_owner_window_s: float = PREVIOUS_OWNER_WINDOW_S) -> None:
        self.node_id = node_id
        self.shards_per_category = shards_per_category
        self.state = OwnershipState.CONNECTING
        self.assignment = Assignment()
        self.listeners: list[Callable[[OwnershipState, Assignment], None]] = []
        self.metrics = metrics or ClusterMetrics()
        self.generation = 0
        """Creation time (ms) of the cluster's ZooKeeper root: part of every epoch, so epochs
        keep growing even if ZooKeeper's data is lost and the map restarts at version 1
        (markers already in the store carry the older generation and never outrank us)."""
        self.lease_until: float | None = None
        """Monotonic time until which our ZooKeeper session is certainly alive (renewed by
        round trips; shorter than the session timeout). None: no lease (tests, dev)."""
        self._gaining: dict[tuple[str, int], float] = {}
        """Shards the map gave us that we do not serve yet (not connected), with when we learnt it."""
        self._releasing: list[float] = []
        """One start time per shard given up (map change or drain) whose writes may still be
        pending; ``take_releasing`` hands them to whoever waits for the flush (the state node)."""
        self.previous_owner_window_s = previous_owner_window_s
        self._previous: dict[tuple[str, int], tuple[str, float]] = {}
        """Per shard that moved: its previous owner and until when (monotonic) that owner's
        entity messages are still accepted (``may_speak_for``). One entry per shard at most."""
        self._taken: set[tuple[str, int]] = set()
        """Shards a map change took from us, until ``take_moved_away`` hands them to the state
        node, which drops their resident entities (a copy kept would be stale if they came back)."""
        self._record()

    # ---------------------------------------------------------------- queries (runtime)
    def owner_of(self, ref: EntityRef) -> ShardOwner | None:
        return self.assignment.owner(*self.shard_key(ref))

    def leased(self) -> bool:
        """False once the lease ran out: e.g. the process was stopped (SIGSTOP, a long GC
        or VM pause) longer than it can vouch for its session. Checked before every write,
        so a zombie that wakes up cannot append before kazoo even notices."""
        return self.lease_until is None or time.monotonic() < self.lease_until

    def renew(self, until: float) -> None:
        if self.lease_until is None or until > self.lease_until:
            self.lease_until = until

    def writable(self) -> bool:
        """May this node append at all right now (runtime's check before each batch)?"""
        return self.state in (OwnershipState.SERVING, OwnershipState.DRAINING) and self.leased()

    def is_mine(self, ref: EntityRef) -> bool:
        """Like owns() but not counted as a routing miss (local-vs-remote decisions)."""
        if self.state is not OwnershipState.SERVING or not self.leased():
            return False
        owner = self.owner_of(ref)
        return owner is not None and owner.node == self.node_id

    def owns(self, ref: EntityRef) -> bool:
        if self.state is OwnershipState.SERVING and self.leased():
            owner = self.owner_of(ref)
            if owner is not None and owner.node == self.node_id:
                return True
        self.metrics.routing_misses.inc()
        return False

    def may_speak_for(self, ref: EntityRef, node: str) -> bool:
        """May ``node`` send entity messages from ``ref``? Its shard's owner in our current
        map may; so may its previous owner within the window after the move (module docstring)."""
        key = self.shard_key(ref)
        owner = self.assignment.owner(*key)
        if owner is not None and owner.node == node:
            return True
        previous = self._previous.get(key)
        return previous is not None and previous[0] == node and time.monotonic() < previous[1]

    def epoch(self, ref: EntityRef) -> int:
        owner = self.owner_of(ref)
        return 0 if owner is None else (self.generation << EPOCH_BITS) | owner.epoch

    def owned_shards(self) -> dict[str, list[int]]:
        return {c: [i for i, o in enumerate(owners) if o is not None and o.node == self.node_id]
                for c, owners in self.assignment.shards.items()}

    # ---------------------------------------------------------------- transitions
    def connected(self) -> None:
        if self.state is not OwnershipState.DRAINING:
            self._become(OwnershipState.SERVING)
            self._observe_gained()

    def suspended(self) -> None:
        self._become(OwnershipState.FENCED)

    def lost(self) -> None:
        self._become(OwnershipState.LOST)

    def draining(self) -> None:
        """Graceful leave: refuse new messages (``retry``; callers resend to the next owner)
        while pending appends finish; never serve again in this session. Every shard we own
        is being handed off from now (``take_releasing``)."""
        if self.state is not OwnershipState.DRAINING:
            now = time.monotonic()
            self._releasing.extend(now for shards in self.owned_shards().values() for _ in shards)
            self._gaining.clear()
        self._become(OwnershipState.DRAINING)

    def map_changed(self, assignment: Assignment, received_at: float | None = None) -> None:
        """Apply a new shard map. ``received_at`` (monotonic) is when the watch brought it to
        this process (on kazoo's thread): handoff durations count from then, so a busy event
        loop that applies the map late shows in ``xplatform_cluster_handoff_duration_seconds``."""
        if assignment.version < self.assignment.version:
            log.warning("ignoring older shard map %s < %s", assignment.version, self.assignment.version)
            return
        received = time.monotonic() if received_at is None else received_at
        before = {(c, i) for c, shards in self.owned_shards().items() for i in shards}
        self._remember_previous_owners(assignment, received)
        self.assignment = assignment
        after = {(c, i) for c, shards in self.owned_shards().items() for i in shards}
        self.metrics.handoffs.labels("gained").inc(len(after - before))
        self.metrics.handoffs.labels("lost").inc(len(before - after))
        self._taken |= before - after
        if self.state is not OwnershipState.DRAINING:  # a draining node released everything at drain start
            for shard in after - before:
                self._gaining.setdefault(shard, received)
            for shard in before - after:
                if self._gaining.pop(shard, None) is None:  # never served: nothing to flush
                    self._releasing.append(received)
            del self._releasing[:-RELEASING_KEPT]  # bounded even if nobody takes them (bare Ownership)
            self._observe_gained()
        self._record()
        self._notify()

    def _remember_previous_owners(self, assignment: Assignment, received: float) -> None:
        """For every shard whose owner changes, its owner until now and its window's end. A
        shard left without an owner keeps the record of its last owner (a -> none -> b: a)."""
        until = received + self.previous_owner_window_s
        for category, owners in self.assignment.shards.items():
            for shard, old in enumerate(owners):
                new = assignment.owner(category, shard)
                if old is not None and (new is None or new.node != old.node):
                    self._previous[(category, shard)] = (old.node, until)

    def take_releasing(self) -> list[float]:
        """Start times of shard handoffs away from us still waiting for their writes to be
        flushed; the caller observes each once the node's pending appends are durable."""
        released, self._releasing = self._releasing, []
        return released

    def take_moved_away(self) -> set[tuple[str, int]]:
        """(category, shard) pairs the map took from us since the last call."""
        taken, self._taken = self._taken, set()
        return taken

    def shard_key(self, ref: EntityRef) -> tuple[str, int]:
        return ref.category, shard_of(ref, self.shards_per_category)

    def _observe_gained(self) -> None:
        """Gained shards are served from the moment we are SERVING with the new map."""
        if self._gaining and self.state is OwnershipState.SERVING and self.leased():
            now = time.monotonic()
            histogram = self.metrics.handoff_duration.labels("gained")
            for started in self._gaining.values():
                histogram.observe(max(0.0, now - started))
            self._gaining.clear()

    def _become(self, state: OwnershipState) -> None:
        if state is not self.state:
            log.info("ownership of %s: %s -> %s", self.node_id, self.state.value, state.value)
            self.state = state
            self._record()
            self._notify()

    def _record(self) -> None:
        m = self.metrics
        for state in OwnershipState:
            m.state.labels(state.value).set(1 if state is self.state else 0)
        m.map_version.set(self.assignment.version)
        for category, shards in self.owned_shards().items():
            m.shards_owned.labels(category).set(len(shards))
        for category, owners in self.assignment.shards.items():
            m.shards.labels(category).set(len(owners))

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener(self.state, self.assignment)
