"""The shard function and shard ownership.

The shard of an entity is ``crc32("<category>/<entity_id>" as UTF-8) % shards``. Fixed
forever for stored data: Python's ``hash()`` is salted per process and would move
entities between nodes on every restart, so it is never used. Golden vectors in
``tests/unit/test_sharding.py`` pin the function across versions (rolling upgrades).

A state node serves an entity only while it owns the entity's shard. In the one-process
dev mode one node owns every shard (:class:`AllShards`); the cluster work replaces this
with ownership from ZooKeeper, with epochs.
"""

from __future__ import annotations

import zlib
from typing import Protocol

from domain.refs import EntityRef


def shard_of(ref: EntityRef, shards: int) -> int:
    """Shard number of ``ref`` among ``shards`` (see the module docstring)."""
    return zlib.crc32(f"{ref.category}/{ref.entity_id}".encode()) % shards


class ShardOwnership(Protocol):
    """Answers whether this node may serve an entity now, and at which epoch (fencing
    token; 0 when ownership does not move, as in dev mode: then no takeover markers)."""

    def owns(self, ref: EntityRef) -> bool: ...

    def epoch(self, ref: EntityRef) -> int: ...


class AllShards:
    """Dev mode: a single node owns every shard of every category."""

    def owns(self, ref: EntityRef) -> bool:
        return True

    def epoch(self, ref: EntityRef) -> int:
        return 0


class StaticShards:
    """A fixed set of (category, shard) pairs; for tests and static layouts."""

    def __init__(self, shards_per_category: int, owned: dict[str, set[int]], epoch: int = 0) -> None:
        self.shards_per_category = shards_per_category
        self.owned = owned
        self.current_epoch = epoch

    def owns(self, ref: EntityRef) -> bool:
        return shard_of(ref, self.shards_per_category) in self.owned.get(ref.category, ())

    def epoch(self, ref: EntityRef) -> int:
        return self.current_epoch
