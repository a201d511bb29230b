"""Shard allocation: a pure function from (members, layout, previous assignment) to the
next assignment, run by the one elected allocator.

Sticky: a shard stays where it is while its owner is alive, eligible and not above its
share, so a join or leave moves as few shards as possible (every move is a handoff).
Balanced: each category's shards are spread in proportion to node weights. Deterministic:
ties break by node ID, so the same inputs give the same map on any allocator.

Every owner change gets a new epoch (the map's new version), a fencing token that only
grows: a node serves a shard only at the epoch it was given, and an older epoch's writes
and replies are refused (see ownership.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from infrastructure.cluster.layout import Layout, eligible


@dataclass(frozen=True, slots=True)
class ShardOwner:
    node: str
    epoch: int


@dataclass
class Assignment:
    """The shard map: category → shard number → owner and epoch. ``version`` grows by one
    with every change and is the epoch of the shards that change in it."""

    version: int = 0
    shards: dict[str, list[ShardOwner | None]] = field(default_factory=dict)

    def owner(self, category: str, shard: int) -> ShardOwner | None:
        owners = self.shards.get(category)
        return None if owners is None or shard >= len(owners) else owners[shard]

    def to_json(self) -> dict[str, object]:
        return {"version": self.version,
                "shards": {c: [None if o is None else [o.node, o.epoch] for o in owners]
                           for c, owners in self.shards.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Assignment:
        shards = {c: [None if o is None else ShardOwner(o[0], int(o[1])) for o in owners]
                  for c, owners in dict(data.get("shards", {})).items()}  # type: ignore[call-overload]
        return cls(int(data.get("version", 0)), shards)  # type: ignore[call-overload]


def allocate(previous: Assignment, categories: Mapping[str, int], groups: Mapping[str, str], layout: Layout) -> Assignment:
    """Next assignment. ``categories``: category → shard count; ``groups``: live node → group."""
    version = previous.version + 1
    changed = False
    shards: dict[str, list[ShardOwner | None]] = {}
    for category, count in sorted(categories.items()):
        before = list(previous.shards.get(category, []))[:count]
        before += [None] * (count - len(before))
        nodes = eligible(layout, category, groups)
        after = _spread(before, nodes, count, version)
        changed |= after != before
        shards[category] = after
    changed |= set(shards) != set(previous.shards)
    return Assignment(version if changed else previous.version, shards if changed else previous.shards)


def _spread(before: list[ShardOwner | None], weights: Mapping[str, int], count: int, epoch: int) -> list[ShardOwner | None]:
    if not weights:
        return [None] * count
    targets = _targets(weights, count)
    load = {node: 0 for node in weights}
    after: list[ShardOwner | None] = [None] * count
    for shard, owner in enumerate(before):  # keep what may stay
        if owner is not None and owner.node in load and load[owner.node] < targets[owner.node]:
            after[shard] = owner
            load[owner.node] += 1
    for shard in range(count):  # place the rest on the least loaded (relative to target)
        if after[shard] is None:
            node = min(load, key=lambda n: (load[n] - targets[n], load[n], n))
            after[shard] = ShardOwner(node, epoch)
            load[node] += 1
    return after


def _targets(weights: Mapping[str, int], count: int) -> dict[str, int]:
    """Shards per node, proportional to weight, summing to ``count`` (largest remainder)."""
    total = sum(weights.values())
    exact = {n: count * w / total for n, w in weights.items()}
    targets = {n: int(x) for n, x in exact.items()}
    for node in sorted(exact, key=lambda n: (-(exact[n] - targets[n]), n))[: count - sum(targets.values())]:
        targets[node] += 1
    return targets
