"""The ownership gauges the Prometheus rules build on (ops/prometheus/rules/xplatform.yml):
``xplatform_cluster_shards`` (the map's shard count per category, the same on every process)
and ``xplatform_cluster_shards_owned`` (this node's share). The unserved-shards rule is the
first minus the serving nodes' sum of the second."""

from __future__ import annotations

from infrastructure.cluster.allocation import Assignment, ShardOwner
from infrastructure.cluster.ownership import Ownership


def test_shards_in_the_map_and_owned_follow_each_map_change() -> None:
    a = Ownership("a", shards_per_category=4)
    registry = a.metrics.registry
    assert registry.get_sample_value("xplatform_cluster_shards", {"category": "Lot"}) is None  # no map yet
    a.map_changed(Assignment(1, {"Lot": [ShardOwner("a", 1), None, ShardOwner("b", 1), None],
                                 "Bidder": [ShardOwner("b", 1)] * 4}))
    assert registry.get_sample_value("xplatform_cluster_shards", {"category": "Lot"}) == 4
    assert registry.get_sample_value("xplatform_cluster_shards", {"category": "Bidder"}) == 4
    assert registry.get_sample_value("xplatform_cluster_shards_owned", {"category": "Lot"}) == 1
    assert registry.get_sample_value("xplatform_cluster_shards_owned", {"category": "Bidder"}) == 0
    a.map_changed(Assignment(2, {"Lot": [ShardOwner("a", 2)] * 4, "Bidder": [ShardOwner("b", 1)] * 4}))
    assert registry.get_sample_value("xplatform_cluster_shards", {"category": "Lot"}) == 4
    assert registry.get_sample_value("xplatform_cluster_shards_owned", {"category": "Lot"}) == 4


def test_shards_stood_by_follow_each_map_change() -> None:
    a = Ownership("a", shards_per_category=2)
    registry = a.metrics.registry
    a.map_changed(Assignment(1, {"Lot": [ShardOwner("b", 1), ShardOwner("a", 1)]},
                             {"Lot": [ShardOwner("a", 1), ShardOwner("b", 1)]}))
    assert a.standby_shards() == {("Lot", 0)}
    assert registry.get_sample_value("xplatform_cluster_shards_standby", {"category": "Lot"}) == 1
    a.map_changed(Assignment(2, {"Lot": [ShardOwner("a", 2), ShardOwner("a", 1)]},
                             {"Lot": [ShardOwner("b", 2), ShardOwner("b", 1)]}))
    assert a.standby_shards() == set()
    assert registry.get_sample_value("xplatform_cluster_shards_standby", {"category": "Lot"}) == 0
