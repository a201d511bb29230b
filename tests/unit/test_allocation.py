"""Shard allocation and the distribution layout (pure functions)."""

from __future__ import annotations

from collections import Counter

import pytest

from infrastructure.cluster.allocation import Assignment, allocate
from infrastructure.cluster.layout import Layout
from infrastructure.errors import ConfigurationError

CATS = {"Lot": 12, "Bidder": 12}
EVERYTHING = Layout.everything()


def owners(a: Assignment, category: str) -> Counter[str]:
    return Counter(o.node for o in a.shards[category] if o is not None)


def test_balanced_and_every_shard_owned() -> None:
    a = allocate(Assignment(), CATS, {"n1": "g", "n2": "g", "n3": "g"}, EVERYTHING)
    assert a.version == 1
    assert owners(a, "Lot") == {"n1": 4, "n2": 4, "n3": 4}
    assert all(o is not None and o.epoch == 1 for o in a.shards["Bidder"])


def test_join_moves_only_what_it_must_with_new_epochs() -> None:
    a = allocate(Assignment(), CATS, {"n1": "g", "n2": "g"}, EVERYTHING)
    b = allocate(a, CATS, {"n1": "g", "n2": "g", "n3": "g"}, EVERYTHING)
    moved = [i for i in range(12) if a.shards["Lot"][i] != b.shards["Lot"][i]]
    assert len(moved) == 4 and {b.shards["Lot"][i].node for i in moved} == {"n3"}
    assert all(b.shards["Lot"][i].epoch == 2 for i in moved)
    assert all(b.shards["Lot"][i].epoch == 1 for i in range(12) if i not in moved)


def test_leave_reassigns_the_leavers_shards_only() -> None:
    a = allocate(Assignment(), CATS, {"n1": "g", "n2": "g", "n3": "g"}, EVERYTHING)
    b = allocate(a, CATS, {"n1": "g", "n3": "g"}, EVERYTHING)
    assert owners(b, "Lot") == {"n1": 6, "n3": 6}
    for before, after in zip(a.shards["Lot"], b.shards["Lot"], strict=True):
        if before.node != "n2":
            assert after == before  # stayed, same epoch
        else:
            assert after.epoch == b.version > before.epoch


def test_same_members_same_map_no_new_version() -> None:
    a = allocate(Assignment(), CATS, {"n1": "g"}, EVERYTHING)
    assert allocate(a, CATS, {"n1": "g"}, EVERYTHING) is not None
    assert allocate(a, CATS, {"n1": "g"}, EVERYTHING).version == a.version


def test_layout_weights_and_category_placement() -> None:
    layout = Layout.parse('[{"group": "hot", "categories": ["Lot"], "weight": 2},'
                          ' {"group": "default", "categories": ["*"]}]')
    a = allocate(Assignment(), CATS, {"h1": "hot", "d1": "default", "d2": "default"}, layout)
    assert owners(a, "Lot") == {"h1": 12}  # only the hot group hosts lots
    assert owners(a, "Bidder") == {"d1": 6, "d2": 6}
    weighted = Layout.parse('[{"group": "big", "categories": ["*"], "weight": 2}, {"group": "small", "categories": ["*"]}]')
    b = allocate(Assignment(), {"Lot": 12}, {"b": "big", "s": "small"}, weighted)
    assert owners(b, "Lot") == {"b": 8, "s": 4}


def test_layout_without_nodes_for_a_category_is_refused() -> None:
    layout = Layout.parse('[{"group": "hot", "categories": ["Lot"]}]')
    with pytest.raises(ConfigurationError, match="without nodes: Bidder"):
        layout.check_covers(["Lot", "Bidder"])
    with pytest.raises(ConfigurationError):
        Layout.parse('{"not": "a list"}')


def test_assignment_json_round_trip() -> None:
    a = allocate(Assignment(), CATS, {"n1": "g", "n2": "g"}, EVERYTHING)
    assert Assignment.from_json(a.to_json()) == a
