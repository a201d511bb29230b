"""``xplatform rebalance`` against real processes: a shard map off balance (written by hand,
as an allocator of other rules would) is shown as moves by ``--dry-run`` without change, then
applied with new epochs; the nodes follow it (a client is answered on every moved shard)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

from domain.refs import EntityRef
from edge.client import connect
from infrastructure.cluster.allocation import Assignment, ShardOwner
from infrastructure.runtime.sharding import shard_of
from tests.support.cluster import Cluster, cluster_token
from tests.support.runbook import report_of, shard_map, wait_for_map, xplatform


def test_rebalance_shows_then_applies_the_allocators_moves(cluster: Cluster) -> None:
    cluster.start("state-node", "node-a")
    cluster.start("state-node", "node-b")
    edge = cluster.start("edge", "edge-1")
    url = edge.ready_line.split("ready on ")[1].rstrip("/")
    balanced = wait_for_map(cluster, {"node-a", "node-b"})

    nothing = report_of(xplatform(cluster, "rebalance", "--json"))
    assert nothing["moves"] == [] and nothing["applied_version"] is None

    # Off balance: every Lot shard to node-a (a map the allocator would not make).
    skewed_version = balanced.version + 1
    skewed = Assignment(skewed_version, {c: list(owners) for c, owners in balanced.shards.items()})
    taken = [i for i, o in enumerate(skewed.shards["Lot"]) if o is not None and o.node == "node-b"]
    for i in taken:
        skewed.shards["Lot"][i] = ShardOwner("node-a", skewed_version)
    zk = cluster._zk()  # noqa: SLF001 - the test writes the map as an allocator does (compare-and-set)
    try:
        _data, stat = zk.get(f"/xplatform/{cluster.name}/assignment")
        zk.set(f"/xplatform/{cluster.name}/assignment", json.dumps(skewed.to_json()).encode(), version=stat.version)
    finally:
        zk.stop()
        zk.close()

    plan = report_of(xplatform(cluster, "rebalance", "--dry-run", "--json"))
    assert plan["map_version"] == skewed_version and plan["applied_version"] is None
    assert plan["before"]["Lot"] == {"node-a": 8} and plan["after"]["Lot"] == {"node-a": 4, "node-b": 4}
    moved = [m["shard"] for m in plan["moves"]]
    assert len(moved) == 4 and {(m["category"], m["from"], m["to"]) for m in plan["moves"]} == {("Lot", "node-a", "node-b")}
    assert shard_map(cluster).version == skewed_version  # the dry run wrote nothing

    applied = report_of(xplatform(cluster, "rebalance", "--json"))
    assert applied["moves"] == plan["moves"] and applied["applied_version"] == skewed_version + 1
    now = shard_map(cluster)
    assert now.version == skewed_version + 1
    assert Counter(o.node for o in now.shards["Lot"] if o) == {"node-a": 4, "node-b": 4}
    assert [now.shards["Lot"][i] for i in moved] == [ShardOwner("node-b", skewed_version + 1)] * 4  # new epochs

    # The nodes follow the applied map: a lot on each moved shard is served.
    lots: dict[int, str] = {}
    while len(lots) < len(moved):
        candidate = f"rebal-{uuid.uuid4().hex[:8]}"
        shard = shard_of(EntityRef("Lot", candidate), 8)
        if shard in moved:
            lots.setdefault(shard, candidate)

    async def chat() -> list[bool]:
        answers = []
        for i, lot in enumerate(lots.values()):
            client = await connect(url, "Lot", lot, cluster_token(f"r{i}", "auctioneer"), request_timeout_s=10)
            try:
                answers.append((await client.request({"type": "chat", "text": "after rebalance"}, timeout=10)).ok)
            finally:
                await client.close()
        return answers

    assert asyncio.run(chat()) == [True] * len(moved), cluster.logs()
    assert cluster.owners("Lot", list(lots.values())) == dict.fromkeys(lots.values(), "node-b")
    again = report_of(xplatform(cluster, "rebalance", "--json"))
    assert again["moves"] == [] and shard_map(cluster).version == skewed_version + 1
