"""A state node's hot standby: it keeps the entities of the shards the map makes it the
standby of mirrored, so that it takes them over warm when it becomes their owner.

The allocator gives each shard of a category with ``mirrors: 1`` a standby node besides its
owner (allocation.py). This component follows the map (an :class:`Ownership` listener, on
the event loop): the mirror (:mod:`infrastructure.runtime.mirrors`) admits entities of the
shards it stands by for; the node's activations take entities from it (``StateNode.warm``).

- The feed: on EventStoreDB a persistent subscription group of this node's
  (:mod:`infrastructure.runtime.mirror_groups`), elsewhere a catch-up subscription.
- Shards gained as standby: the feed reads the store from its beginning again to find
  their entities (those already held are skipped by version, without decoding).
- Shards no longer stood by and not owned either: their entities are dropped.
- Shards that became ours (promoted): their mirrored entities stay until an activation takes
  them (warm takeover) or the budget's LRU lets them go.
"""

from __future__ import annotations

import logging

from domain.refs import EntityRef
from infrastructure.cluster.allocation import Assignment
from infrastructure.cluster.ownership import Ownership, OwnershipState
from infrastructure.metrics import MirrorMetrics
from infrastructure.persistence.subscriptions import EventStream, PersistentSubscriptions
from infrastructure.runtime.mirror_groups import GroupMirrorFeed
from infrastructure.runtime.mirrors import Mirror, MirrorFeed
from infrastructure.runtime.node import StateNode

log = logging.getLogger(__name__)


class Standby:
    """Hot mirror of the shards this node stands by for (see the module docstring). Its feed
    starts with the first shard stood by for; ``stop`` ends it and closes ``stream``."""

    def __init__(self, node: StateNode, ownership: Ownership, stream: EventStream, categories: list[str],
                 budget_bytes: int = 0, group: str | None = None) -> None:
        """``group``: on EventStoreDB (``stream`` is then also the persistent subscriptions
        port), the persistent subscription group that feeds the mirror
        (:mod:`infrastructure.runtime.mirror_groups`); else a catch-up subscription does."""
        self.ownership = ownership
        self.stream = stream
        self.standing: frozenset[tuple[str, int]] = frozenset()
        """(category, shard) pairs stood by for, as of the last map (replaced whole: the feed
        thread reads it)."""
        self.mirror = Mirror(node.types, node.journal, node.mapper, categories=categories, admit=self._admit,
                             budget_bytes=budget_bytes, metrics=MirrorMetrics(node.metrics.registry))
        name = f"xplatform-standby-{ownership.node_id}"
        self.feed: MirrorFeed = (GroupMirrorFeed(self.mirror, stream, stream, group, name=name)
                                 if group is not None and isinstance(stream, PersistentSubscriptions)
                                 else MirrorFeed(self.mirror, stream, name=name))
        self._started = False
        node.warm = self.mirror
        ownership.listeners.append(self._on_map)

    def _admit(self, ref: EntityRef) -> bool:
        """(feed thread) May ``ref`` enter the mirror: its shard is one we stand by for."""
        return self.ownership.shard_key(ref) in self.standing

    def _on_map(self, _state: OwnershipState, _assignment: Assignment) -> None:
        standing = frozenset(self.ownership.standby_shards())
        if standing == self.standing:
            return
        gained = standing - self.standing
        self.standing = standing
        owned = {(c, i) for c, shards in self.ownership.owned_shards().items() for i in shards}
        dropped = self.mirror.drop(lambda ref: (key := self.ownership.shard_key(ref)) not in standing and key not in owned)
        log.info("standing by for %d shards (%d new); %d mirrored entities dropped", len(standing), len(gained), dropped)
        if gained and not self._started:  # the feed reads the whole store: only once there is something to mirror
            self._started = True
            self.feed.start()
        elif gained:
            self.feed.rescan()

    def stop(self) -> None:
        if self._started:
            self.feed.stop()
        self.stream.close()
