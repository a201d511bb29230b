"""Hot standbys with real processes: three state nodes (layout ``"mirrors": 1``), an edge,
ZooKeeper and PostgreSQL as subprocesses; kill -9 of a lot's owner: its standby takes the
lot over warm and answers with the exact state (no acknowledged bid lost or doubled)."""

from __future__ import annotations

import asyncio
import time
import uuid

import msgpack

from domain import EntityRef
from edge.client import connect
from infrastructure.runtime.sharding import shard_of
from tests.support.chat_load import token
from tests.support.cluster import Cluster

LAYOUT = '[{"group": "default", "categories": ["*"], "mirrors": 1}]'


def scrape(cluster: Cluster, node: str) -> dict[str, float]:
    return cluster.processes[node].metrics()


def test_kill_9_of_a_lots_owner_its_standby_takes_it_over_warm_with_the_exact_state(cluster: Cluster) -> None:
    for node in ("node-a", "node-b", "node-c"):
        cluster.start("state-node", node, XPLATFORM_CLUSTER_LAYOUT=LAYOUT)
    edge = cluster.start("edge", "edge-1", XPLATFORM_CLUSTER_LAYOUT=LAYOUT)
    base_url = edge.ready_line.split("ready on ")[1].rstrip("/")
    lot_id = f"lot-{uuid.uuid4().hex[:6]}"
    shard = ("Lot", shard_of(EntityRef("Lot", lot_id), 8))

    async def bid(bidder, amount: int) -> bool:  # type: ignore[no-untyped-def]
        while True:  # resend with the same message ID until the entity answers
            reply = await bidder.request({"type": "bid", "amount": amount}, message_id=f"bid-{amount}", timeout=5)
            if reply.ok or not reply.retryable:
                return bool(reply.ok)
            await asyncio.sleep(0.05)

    async def scenario() -> tuple[list[int], str, str]:
        auct = await connect(base_url, "Lot", lot_id, token("ann", "auctioneer"))
        bidder = await connect(base_url, "Lot", lot_id, token("bob", "bidder"))
        assert (await auct.request({"type": "open", "title": "Vase"})).ok
        acknowledged = [amount for amount in range(1, 31) if await bid(bidder, amount)]
        assignment = cluster.assignment()
        owner, standby = assignment.owner(*shard), assignment.standby(*shard)
        assert owner is not None and standby is not None and owner.node != standby.node
        deadline = time.monotonic() + 30
        while True:  # the standby's mirror holds the lot and is caught up
            seen = await asyncio.to_thread(scrape, cluster, standby.node)
            if seen.get("xplatform_mirror_lag_events") == 0 and seen.get("xplatform_mirror_entities", 0) >= 1:
                break
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.1)
        cluster.processes[owner.node].kill9()
        acknowledged += [amount for amount in range(31, 61) if await bid(bidder, amount)]
        await asyncio.sleep(0.5)  # the last reservations settle
        await auct.close()
        await bidder.close()
        return acknowledged, owner.node, standby.node

    try:
        acknowledged, killed, standby = asyncio.run(scenario())
    except BaseException:
        print(cluster.logs())
        raise
    assert len(acknowledged) == 60, cluster.logs()
    new_owner = cluster.owners("Lot", [lot_id])[lot_id]
    assert new_owner == standby, (new_owner, standby)  # the allocator handed the shard to its standby
    seen = scrape(cluster, new_owner)
    assert seen.get('xplatform_node_takeovers_total{kind="warm"}', 0) >= 1, seen
    assert seen.get('xplatform_mirror_promotions_total{outcome="discarded"}', 0) == 0, seen
    journal = cluster.journal()
    try:
        events = journal.read(f"Lot-{lot_id}")
        assert [e.originator_version for e in events] == list(range(1, len(events) + 1))  # contiguous
        epochs = [msgpack.unpackb(e.state)["epoch"] for e in events if e.topic.endswith("OwnerChanged")]
        assert epochs == sorted(set(epochs)) and len(epochs) >= 2  # taken over, epochs only grow
        bids = [msgpack.unpackb(e.state)["bid_id"] for e in events if e.topic.endswith("BidAccepted")]
        assert len(bids) == len(set(bids))  # every accepted bid exactly once
    finally:
        journal.close()
    assert killed != new_owner
