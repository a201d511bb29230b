"""Shard allocation: a pure function from (members, layout, previous assignment) to the
next assignment, run by the one elected allocator.

Sticky: a shard stays where it is while its owner is alive, eligible and not above its
share, so a join or leave moves as few shards as possible (every move is a handoff).
Balanced: each category's shards are spread in proportion to node weights. Deterministic:
ties break by node ID, so the same inputs give the same map on any allocator.

Every owner change gets a new epoch (the map's new version), a fencing token that only
grows: a node serves a shard only at the epoch it was given, and an older epoch's writes
and replies are refused (see ownership.py).

Standbys (hot mirrors, for categories whose layout rule says ``mirrors: 1``): each shard
also gets a standby node, never its owner, spread and sticky like owners and recorded in
the same map with the epoch of the map version that placed it. The standby keeps the
shard's entities mirrored (infrastructure/runtime/mirrors.py); when an owner goes, its
shards go to their standbys first (when eligible and within their share), so the new owner
takes over warm; then each such shard gets a new standby. Standbys are placed by each node's
room after the owner's loss (see ``_standbys``), so the loss of any one node is warm for all
its shards.
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
    standbys: dict[str, list[ShardOwner | None]] = field(default_factory=dict)
    """category → shard number → standby node (and the epoch that placed it); only the
    categories with mirrors. Absent from the JSON when empty: maps written before standbys
    existed read the same, and older readers ignore the key."""

    def owner(self, category: str, shard: int) -> ShardOwner | None:
        owners = self.shards.get(category)
        return None if owners is None or shard >= len(owners) else owners[shard]

    def standby(self, category: str, shard: int) -> ShardOwner | None:
        standbys = self.standbys.get(category)
        return None if standbys is None or shard >= len(standbys) else standbys[shard]

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"version": self.version, "shards": _owners_to_json(self.shards)}
        if self.standbys:
            data["standbys"] = _owners_to_json(self.standbys)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Assignment:
        return cls(int(data.get("version", 0)), _owners_from_json(data.get("shards")),  # type: ignore[call-overload]
                   _owners_from_json(data.get("standbys")))


def _owners_to_json(owners: Mapping[str, list[ShardOwner | None]]) -> dict[str, list[list[object] | None]]:
    return {c: [None if o is None else [o.node, o.epoch] for o in per_shard] for c, per_shard in owners.items()}


def _owners_from_json(data: object) -> dict[str, list[ShardOwner | None]]:
    return {c: [None if o is None else ShardOwner(o[0], int(o[1])) for o in per_shard]
            for c, per_shard in dict(data or {}).items()}  # type: ignore[call-overload]


def allocate(previous: Assignment, categories: Mapping[str, int], groups: Mapping[str, str], layout: Layout) -> Assignment:
    """Next assignment. ``categories``: category → shard count; ``groups``: live node → group."""
    version = previous.version + 1
    changed = False
    shards: dict[str, list[ShardOwner | None]] = {}
    standbys: dict[str, list[ShardOwner | None]] = {}
    for category, count in sorted(categories.items()):
        before = _sized(previous.shards.get(category, []), count)
        standbys_before = _sized(previous.standbys.get(category, []), count)
        nodes = eligible(layout, category, groups)
        after = _spread(before, nodes, count, version, standbys_before)
        changed |= after != before
        shards[category] = after
        if layout.mirrors(category):
            standbys[category] = _standbys(after, standbys_before, nodes, count, version)
            changed |= standbys[category] != standbys_before
    changed |= set(shards) != set(previous.shards) or set(standbys) != set(previous.standbys)
    if not changed:
        return previous
    return Assignment(version, shards, standbys)


def _sized(owners: list[ShardOwner | None], count: int) -> list[ShardOwner | None]:
    return list(owners)[:count] + [None] * (count - len(owners))


def _spread(before: list[ShardOwner | None], weights: Mapping[str, int], count: int, epoch: int,
            standbys: list[ShardOwner | None] | None = None) -> list[ShardOwner | None]:
    """Owners: keep what may stay; a shard to place goes to its standby when that node may
    take one more (warm takeover), else to the least loaded node."""
    if not weights:
        return [None] * count
    targets = _targets(weights, count)
    load = {node: 0 for node in weights}
    after: list[ShardOwner | None] = [None] * count
    for shard, owner in enumerate(before):  # keep what may stay
        if owner is not None and owner.node in load and load[owner.node] < targets[owner.node]:
            after[shard] = owner
            load[owner.node] += 1
    for shard in range(count):  # place the rest: on the standby, else on the least loaded (relative to target)
        if after[shard] is None:
            standby = standbys[shard] if standbys else None
            if standby is not None and standby.node in load and load[standby.node] < targets[standby.node]:
                node = standby.node
            else:
                node = min(load, key=lambda n: (load[n] - targets[n], load[n], n))
            after[shard] = ShardOwner(node, epoch)
            load[node] += 1
    return after


def _standbys(owners: list[ShardOwner | None], before: list[ShardOwner | None], weights: Mapping[str, int],
              count: int, epoch: int) -> list[ShardOwner | None]:
    """One standby per shard, never its owner, placed so that losing any one node is a warm
    takeover for every shard it owned.

    When an owner goes, ``_spread`` keeps the survivors' shards and gives each orphan to its
    standby only while that node is under its new share. So the standbys of one owner's
    shards are spread over the other nodes by their *room* after that owner's loss: the
    share each would have without it, minus what it owns now. The rooms add up to exactly
    what the owner holds, so every orphan fits on its standby. (Spread only by standby count,
    one owner's standbys could pile on one node, which could then take only some of them warm;
    the rest would load cold.) A standby that still fits stays with its epoch; the others go
    to the node with the most room left, then the fewest standbys. Overflow (a map still
    out of balance) goes to the node with the fewest standbys. None where no other node exists."""
    after: list[ShardOwner | None] = [None] * count
    if not weights:
        return after
    owned = {node: 0 for node in weights}
    for owner in owners:
        if owner is not None and owner.node in owned:
            owned[owner.node] += 1
    room: dict[str, dict[str, int]] = {}  # owner → other node → shards of that owner it may take
    for node in owned:
        others = {n: w for n, w in weights.items() if n != node}
        share = _targets(others, count) if others else {}
        room[node] = {n: max(0, share[n] - owned[n]) for n in others}
    load = {node: 0 for node in weights}

    def place(shard: int, node: str, keep: ShardOwner | None = None) -> None:
        owner = owners[shard]
        after[shard] = keep or ShardOwner(node, epoch)
        load[node] += 1
        if owner is not None and node in room.get(owner.node, {}):
            room[owner.node][node] -= 1

    for shard, standby in enumerate(before):  # keep what still fits
        owner = owners[shard]
        if standby is None or standby.node not in load or (owner is not None and owner.node == standby.node):
            continue
        if owner is None or room.get(owner.node, {}).get(standby.node, 0) > 0:
            place(shard, standby.node, standby)
    for shard in range(count):
        if after[shard] is None:
            owner = owners[shard]
            candidates = [n for n in sorted(load) if owner is None or n != owner.node]
            if not candidates:
                continue
            fits = room.get(owner.node, {}) if owner is not None else {}
            chosen = min(candidates, key=lambda n: (-fits.get(n, 0), load[n], n))
            place(shard, chosen)
    return after


def _targets(weights: Mapping[str, int], count: int) -> dict[str, int]:
    """Shards per node, proportional to weight, summing to ``count`` (largest remainder)."""
    total = sum(weights.values())
    exact = {n: count * w / total for n, w in weights.items()}
    targets = {n: int(x) for n, x in exact.items()}
    for node in sorted(exact, key=lambda n: (-(exact[n] - targets[n]), n))[: count - sum(targets.values())]:
        targets[node] += 1
    return targets
