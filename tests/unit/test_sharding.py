"""Golden vectors pin the shard function: if one changes, stored entities would move."""

from __future__ import annotations

import pytest

from domain import EntityRef
from infrastructure.runtime.sharding import StaticShards, shard_of

GOLDEN = [
    (EntityRef("Lot", "vase"), 64, 48),
    (EntityRef("Lot", "1"), 64, 27),
    (EntityRef("Bidder", "alice"), 64, 59),
    (EntityRef("Bidder", "550e8400-e29b-41d4-a716-446655440000"), 64, 45),
    (EntityRef("Bidder", "ünïcode"), 1024, 713),
]


@pytest.mark.parametrize(("ref", "shards", "expected"), GOLDEN)
def test_shard_function_golden_vectors(ref: EntityRef, shards: int, expected: int) -> None:
    assert shard_of(ref, shards) == expected


def test_static_ownership_serves_only_owned_shards() -> None:
    owned = StaticShards(64, {"Lot": {shard_of(EntityRef("Lot", "1"), 64)}})
    assert owned.owns(EntityRef("Lot", "1"))
    assert not owned.owns(EntityRef("Lot", "vase"))
    assert not owned.owns(EntityRef("Bidder", "1"))
