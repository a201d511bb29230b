"""Two clustered state nodes (ZooKeeper ownership + network transport) and an edge-side
client in one process: routing by the shard map, entity messages across nodes, and a node
crash (session expiry) after which its entities serve again on the other node."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import msgpack
import pytest
from kazoo.client import KazooClient

from domain import ClientMessage, Connect, EntityRef
from infrastructure.cluster.layout import Layout
from infrastructure.cluster.ownership import Ownership
from infrastructure.cluster.state_node import ClusteredStateNode
from infrastructure.cluster.zookeeper import MemberInfo, ZooKeeperCoordinator
from infrastructure.persistence import RecorderJournal
from infrastructure.settings import Settings
from infrastructure.transport.client import ClusterClient
from tests.support.servers import ZooKeeperServer


@pytest.fixture(scope="module")
def zookeeper():  # type: ignore[no-untyped-def]
    server = ZooKeeperServer.start()
    yield server
    server.destroy()


async def until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_routing_cross_node_messages_and_failover(zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = f"c{uuid.uuid4().hex[:6]}"
        base = Settings(store="sqlite", data_dir=str(tmp_path), zookeeper_hosts=zookeeper.hosts, cluster_name=cluster,
                        zk_session_timeout_s=0.6, shards_per_category=8)
        a = ClusteredStateNode(base.with_(node_id="a"))
        b = ClusteredStateNode(base.with_(node_id="b"))
        edge_view = ZooKeeperCoordinator(zookeeper.hosts, cluster, MemberInfo("edge-1", role="edge"),
                                         {"Lot": 8, "Bidder": 8}, Layout.everything(), Ownership("edge-1", 8))
        edge = ClusterClient("edge-1", "edge", route=edge_view.route, address_of=edge_view.address_of)
        try:
            await run_cluster(a, b, edge_view, edge, zookeeper)
        finally:
            await edge.close()
            for part in (edge_view, a.coordinator, b.coordinator):
                await part.stop()
            await a.stop()
            await b.platform.stop()

    asyncio.run(scenario())


async def run_cluster(a: ClusteredStateNode, b: ClusteredStateNode, edge_view: ZooKeeperCoordinator,
                      edge: ClusterClient, zookeeper: ZooKeeperServer) -> None:
    await a.start()
    await b.start()
    await edge_view.start()
    await until(lambda: edge_view.ownership.assignment.version > 0 and len(edge_view.members) == 3
                and sum(len(v) for v in a.ownership.owned_shards().values()) == 8)

    lots = [EntityRef("Lot", f"lot-{i}") for i in range(6)]
    assert {edge_view.route(r)[0] for r in lots} == {"a", "b"}  # spread over both nodes
    for i, lot in enumerate(lots):
        assert (await edge.ask(lot, Connect(f"ca{i}", time.time(), "auct", {"sub": "ann", "role": "auctioneer"}))).ok
        assert (await edge.ask(lot, ClientMessage(f"open{i}", time.time(), "auct",
                                                   msgpack.packb({"type": "open", "title": "x"})))).ok
        assert (await edge.ask(lot, Connect(f"cb{i}", time.time(), "bob", {"sub": f"bob{i}", "role": "bidder"}))).ok
        bid = await edge.ask(lot, ClientMessage(f"bid{i}", time.time(), "bob", msgpack.packb({"type": "bid", "amount": 5})))
        assert bid.ok
    # Lot -> Bidder -> Lot crosses nodes whenever their shards live apart.
    def accepted(lot: EntityRef) -> bool:
        node = a if a.ownership.owns(lot) else b
        entity = node.platform.node.resident(lot)
        return entity is not None and entity.high_amount == 5
    await until(lambda: all(accepted(lot) for lot in lots))

    # Crash b: its session expires without a goodbye (what kill -9 looks like to ZooKeeper).
    b_lots = [lot for lot in lots if b.ownership.owns(lot)]
    assert b_lots
    await b.server.stop()
    session_id, password = b.coordinator.client.client_id
    killer = KazooClient(zookeeper.hosts, client_id=(session_id, password))
    killer.start(5)
    killer.stop()
    killer.close()
    await b.coordinator.stop()
    started = time.monotonic()
    await until(lambda: all(a.ownership.owns(lot) for lot in b_lots) and all(edge_view.route(l)[0] == "a" for l in b_lots))
    for lot in b_lots:  # served again by a, with the state b left behind
        peek = await edge.ask(lot, ClientMessage(f"again-{lot.entity_id}", time.time(), "bob",
                                                  msgpack.packb({"type": "bid", "amount": 9})))
        assert peek.ok, peek
    failover = time.monotonic() - started
    assert failover < 5
    await until(lambda: all(a.platform.node.resident(l) is not None and a.platform.node.resident(l).high_amount == 9
                            for l in b_lots))
    from prometheus_client import generate_latest

    exposition = generate_latest(a.ownership.metrics.registry).decode()
    assert 'xplatform_cluster_shards_owned{category="Lot"} 8.0' in exposition  # all of them after b died
    assert 'xplatform_cluster_ownership_state{state="serving"} 1.0' in exposition
    gained = float(exposition.split('xplatform_cluster_handoffs_total{direction="gained"} ')[1].split()[0])
    assert gained >= 16  # at least its half of both categories at start, then the 8 b held
    for lot in b_lots:
        names = [e.topic.rsplit(".", 1)[-1] for e in a.platform.journal.read(lot.stream_id)]
        assert names.count("OwnerChanged") == 2 and names[-1] == "BidAccepted"  # b's epoch, then a's


def test_a_rebuilt_cluster_can_serve_entities_marked_by_the_old_one(zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    """ZooKeeper's data lost (a new cluster root, map versions from 1 again): the entities'
    takeover markers from the old cluster must not outrank the new owners forever."""
    async def scenario() -> None:
        base = Settings(store="sqlite", data_dir=str(tmp_path), zookeeper_hosts=zookeeper.hosts,
                        zk_session_timeout_s=0.6, shards_per_category=8)
        lot = EntityRef("Lot", "heirloom")
        for generation in ("old", "new"):
            node = ClusteredStateNode(base.with_(node_id=f"n-{generation}", cluster_name=f"{generation}{uuid.uuid4().hex[:6]}"))
            await node.start()
            try:
                await until(lambda: node.ownership.owns(lot))
                client = ClusterClient("edge", "edge", route=node.coordinator.route, address_of=lambda _n: node.server.address)
                node.coordinator.members["edge"] = {"role": "edge"}  # let this bare client in
                reply = await client.ask(lot, Connect(f"c-{generation}", time.time(), "x", {"sub": "ann", "role": "auctioneer"}))
                assert reply.ok, reply
                await client.close()
            finally:
                await node.stop()
        journal = RecorderJournal(base.journal_env())
        names = [e.topic.rsplit(".", 1)[-1] for e in journal.read(lot.stream_id)]
        journal.close()
        assert names.count("OwnerChanged") == 2  # the new cluster took over with a higher epoch

    asyncio.run(scenario())
