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


# ---------------------------------------------------------------- standbys (hot mirrors)
MIRRORED = Layout.parse('[{"group": "g", "categories": ["Lot"], "mirrors": 1}, {"group": "g", "categories": ["*"]}]')


def standbys(a: Assignment, category: str) -> Counter[str]:
    return Counter(s.node for s in a.standbys[category] if s is not None)


def test_every_shard_of_a_mirrored_category_gets_a_standby_that_is_not_its_owner() -> None:
    a = allocate(Assignment(), CATS, {"n1": "g", "n2": "g", "n3": "g"}, MIRRORED)
    assert set(a.standbys) == {"Lot"}  # Bidder has no mirrors
    for owner, standby in zip(a.shards["Lot"], a.standbys["Lot"]):
        assert standby is not None and owner is not None and standby.node != owner.node and standby.epoch == a.version
    assert standbys(a, "Lot") == {"n1": 4, "n2": 4, "n3": 4}  # spread like owners
    alone = allocate(Assignment(), CATS, {"n1": "g"}, MIRRORED)
    assert alone.standbys["Lot"] == [None] * 12  # never the owner itself
    assert allocate(a, CATS, {"n1": "g", "n2": "g", "n3": "g"}, MIRRORED) is a  # stable: no new version


def test_a_dead_owners_shards_go_to_their_standbys_which_get_new_standbys() -> None:
    a = allocate(Assignment(), CATS, {"n1": "g", "n2": "g", "n3": "g"}, MIRRORED)
    b = allocate(a, CATS, {"n1": "g", "n3": "g"}, MIRRORED)
    for i in range(12):
        before_owner, before_standby = a.shards["Lot"][i], a.standbys["Lot"][i]
        after_owner, after_standby = b.shards["Lot"][i], b.standbys["Lot"][i]
        assert after_standby is not None and after_owner is not None and after_standby.node != after_owner.node
        if before_owner.node == "n2" and before_standby.node != "n2":
            assert after_owner == type(after_owner)(before_standby.node, b.version)  # warm takeover, new epoch
        elif before_owner.node != "n2":
            assert after_owner == before_owner  # stayed, same epoch
        if before_standby.node != "n2" and before_standby.node != after_owner.node:
            assert after_standby == before_standby  # a standby that may stay keeps its epoch
        else:
            assert after_standby.epoch == b.version  # moved with the map, at its new version
    assert owners(b, "Lot") == {"n1": 6, "n3": 6}


def test_standbys_move_with_a_join_and_survive_the_json_round_trip() -> None:
    a = allocate(Assignment(), CATS, {"n1": "g", "n2": "g"}, MIRRORED)
    b = allocate(a, CATS, {"n1": "g", "n2": "g", "n3": "g"}, MIRRORED)
    assert standbys(b, "Lot") == {"n1": 4, "n2": 4, "n3": 4}
    assert all(s.node != o.node for s, o in zip(b.standbys["Lot"], b.shards["Lot"]))
    assert Assignment.from_json(b.to_json()) == b
    plain = allocate(Assignment(), CATS, {"n1": "g"}, EVERYTHING)
    assert "standbys" not in plain.to_json()  # maps without mirrors are written as before


def test_layout_mirrors_are_zero_or_one() -> None:
    assert MIRRORED.mirrors("Lot") == 1 and MIRRORED.mirrors("Bidder") == 0 and MIRRORED.any_mirrors
    assert Layout.parse('[{"group": "g", "categories": ["*"], "mirrors": 1}]').mirrors("Bidder") == 1
    assert not EVERYTHING.any_mirrors
    with pytest.raises(ConfigurationError, match="mirrors must be 0 or 1"):
        Layout.parse('[{"group": "g", "categories": ["*"], "mirrors": 2}]')


@pytest.mark.parametrize("count", [7, 8, 12, 16])
@pytest.mark.parametrize("weights", [{"a": 1, "b": 1}, {"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 1, "c": 1, "d": 1},
                                     {"a": 2, "b": 1, "c": 1}, {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1}])
def test_the_loss_of_any_one_node_is_warm_for_every_shard_it_owned(count: int, weights: dict[str, int]) -> None:
    """The standbys of one owner's shards are spread by the other nodes' room after its loss,
    so every orphan lands on its standby — including after joins (the map built up one node
    at a time, as a cluster starts) and after a loss (the next loss is warm too)."""
    layout = Layout.parse("[" + ", ".join(
        f'{{"group": "{n}", "categories": ["*"], "mirrors": 1, "weight": {w}}}' for n, w in weights.items()) + "]")
    cats = {"Lot": count}
    built = Assignment()
    for i in range(1, len(weights) + 1):  # nodes join one by one
        built = allocate(built, cats, {n: n for n in list(weights)[:i]}, layout)
    for lost in weights:
        alive = {n: n for n in weights if n != lost}
        after = allocate(built, cats, alive, layout)
        for shard, (owner, standby) in enumerate(zip(built.shards["Lot"], built.standbys["Lot"])):
            assert owner is not None and standby is not None and standby.node != owner.node
            if owner.node == lost:
                assert after.shards["Lot"][shard].node == standby.node, (lost, shard)  # type: ignore[union-attr]
        if len(alive) >= 2:  # and from there, the next loss is warm as well
            for second in alive:
                again = allocate(after, cats, {n: n for n in alive if n != second}, layout)
                for shard, owner in enumerate(after.shards["Lot"]):
                    if owner is not None and owner.node == second:
                        assert again.shards["Lot"][shard].node == after.standbys["Lot"][shard].node  # type: ignore[union-attr]
