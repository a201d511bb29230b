"""Two clustered state nodes (ZooKeeper ownership + network transport) and an edge-side
client in one process: routing by the shard map, entity messages across nodes, and a node
crash (session expiry) after which its entities serve again on the other node."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path

import msgpack
import pytest

from domain import ClientMessage, Connect, EntityRef, Reply
from domain.messages import Inbound
from infrastructure.cluster.layout import Layout
from infrastructure.cluster.ownership import Ownership
from infrastructure.cluster.zookeeper import MemberInfo, ZooKeeperCoordinator, zookeeper_client
from infrastructure.persistence import RecorderJournal
from infrastructure.settings import Settings
from infrastructure.transport import LocalTransport
from infrastructure.transport.client import ClusterClient
from ops.wiring.node import stop_node
from ops.wiring.state_node import ClusteredStateNode
from tests.support.cluster import ClusterSecrets, crash
from tests.support.entities import Counter
from tests.support.journals import BlockingJournal
from tests.support.servers import ZooKeeperServer


@pytest.fixture(scope="module")
def zookeeper():  # type: ignore[no-untyped-def]
    server = ZooKeeperServer.start()
    yield server
    server.destroy()


def ask(node: ClusteredStateNode, to: EntityRef, message: Inbound) -> Awaitable[Reply]:
    """Ask an entity on ``node`` in-process (what a message over its transport server reaches)."""
    return LocalTransport(node.node, 10.0).ask(to, message)


async def until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_routing_cross_node_messages_and_failover(zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = f"c{uuid.uuid4().hex[:6]}"
        secrets = ClusterSecrets.write(tmp_path)
        base = Settings(store="sqlite", data_dir=str(tmp_path), zookeeper_hosts=zookeeper.hosts, cluster_name=cluster,
                        zk_session_timeout_s=0.6, shards_per_category=8, entities="domain.auction:ENTITIES",
                        **secrets.settings())  # the auction only: the shard counts below are of Lot and Bidder
        a = ClusteredStateNode(base.with_(node_id="a"))
        b = ClusteredStateNode(base.with_(node_id="b"))
        edge_view = ZooKeeperCoordinator(zookeeper.hosts, cluster, MemberInfo("edge-1", role="edge"),
                                         {"Lot": 8, "Bidder": 8}, Layout.everything(), Ownership("edge-1", 8),
                                         auth=secrets.zookeeper_auth())
        edge = ClusterClient("edge-1", "edge", route=edge_view.route, address_of=edge_view.address_of,
                             auth=secrets.link_auth("edge"))
        try:
            await run_cluster(a, b, edge_view, edge, zookeeper)
        finally:
            await edge.close()
            for part in (edge_view, a.coordinator, b.coordinator):
                await part.stop()
            await a.stop()
            await stop_node(b.node)  # b was killed: its node stops, nothing leaves ZooKeeper

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
        entity = node.node.resident(lot)
        return entity is not None and entity.high_amount == 5
    await until(lambda: all(accepted(lot) for lot in lots))

    # Crash b: its session expires without a goodbye (what kill -9 looks like to ZooKeeper).
    b_lots = [lot for lot in lots if b.ownership.owns(lot)]
    assert b_lots
    await crash(b, zookeeper.hosts)
    started = time.monotonic()
    await until(lambda: all(a.ownership.owns(lot) for lot in b_lots) and all(edge_view.route(ref)[0] == "a" for ref in b_lots))
    for lot in b_lots:  # served again by a, with the state b left behind
        peek = await edge.ask(lot, ClientMessage(f"again-{lot.entity_id}", time.time(), "bob",
                                                  msgpack.packb({"type": "bid", "amount": 9})))
        assert peek.ok, peek
    failover = time.monotonic() - started
    assert failover < 5
    await until(lambda: all(a.node.resident(ref) is not None and a.node.resident(ref).high_amount == 9
                            for ref in b_lots))
    from prometheus_client import generate_latest

    exposition = generate_latest(a.ownership.metrics.registry).decode()
    assert 'xplatform_cluster_shards_owned{category="Lot"} 8.0' in exposition  # all of them after b died
    assert 'xplatform_cluster_ownership_state{state="serving"} 1.0' in exposition
    gained = float(exposition.split('xplatform_cluster_handoffs_total{direction="gained"} ')[1].split()[0])
    assert gained >= 16  # at least its half of both categories at start, then the 8 b held
    for lot in b_lots:
        names = [e.topic.rsplit(".", 1)[-1] for e in a.journal.read(lot.stream_id)]
        assert names.count("OwnerChanged") == 2 and names[-1] == "BidAccepted"  # b's epoch, then a's


def test_a_rebuilt_cluster_can_serve_entities_marked_by_the_old_one(zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    """ZooKeeper's data lost (a new cluster root, map versions from 1 again): the entities'
    takeover markers from the old cluster must not outrank the new owners forever."""
    async def scenario() -> None:
        secrets = ClusterSecrets.write(tmp_path)
        base = Settings(store="sqlite", data_dir=str(tmp_path), zookeeper_hosts=zookeeper.hosts,
                        zk_session_timeout_s=0.6, shards_per_category=8, **secrets.settings())
        lot = EntityRef("Lot", "heirloom")
        for generation in ("old", "new"):
            node = ClusteredStateNode(base.with_(node_id=f"n-{generation}", cluster_name=f"{generation}{uuid.uuid4().hex[:6]}"))
            await node.start()
            try:
                await until(lambda: node.ownership.owns(lot))
                client = ClusterClient("edge", "edge", route=node.coordinator.route, address_of=lambda _n: node.server.address,
                                       auth=secrets.link_auth("edge"))
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


def test_drain_acknowledges_appends_in_flight_before_its_member_entry_disappears(
        zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    """A drain (``stop()``) while one append is blocked in the store and more collect behind
    it: every one is acknowledged and stored, and only then does the node's member entry
    leave ZooKeeper (the next owner never races one of its appends)."""
    secrets = ClusterSecrets.write(tmp_path)
    settings = Settings(store="sqlite", data_dir=str(tmp_path), zookeeper_hosts=zookeeper.hosts,
                        cluster_name=f"d{uuid.uuid4().hex[:6]}", zk_session_timeout_s=2.0, shards_per_category=8,
                        node_id="a", **secrets.settings())
    journal = BlockingJournal(RecorderJournal(settings.journal_env()))
    journal.release.set()
    node = ClusteredStateNode(settings, entities=[Counter], journal=journal)
    watcher = zookeeper_client(zookeeper.hosts, secrets.zookeeper_auth())  # the cluster's znodes are ACL'd
    seen: list[str] = []  # replies (loop thread) and the member entry's removal (kazoo thread), in order
    gone = threading.Event()
    refs = [EntityRef("Counter", f"drain-{i}") for i in range(4)]

    def add(i: int) -> ClientMessage:
        return ClientMessage(f"m-{i}", time.time(), "c", msgpack.packb({"type": "add", "n": 1}))

    def reply(r: Reply) -> None:
        seen.append(f"{r.message_id} {'ok' if r.ok else r.code}")

    def release_later() -> None:
        # A drain that leaves ZooKeeper before flushing shows here: the entry goes while the
        # append is still held. A correct one holds on, and the append is released after a while.
        gone.wait(2.0)
        journal.release.set()

    async def scenario() -> None:
        await node.start()
        stopping: asyncio.Task[None] | None = None
        try:
            await until(lambda: all(node.ownership.owns(r) for r in refs))
            for ref in refs:
                assert (await ask(node, ref, Connect(f"c-{ref.entity_id}", time.time(), "c",
                                                                          {"sub": "u"}))).ok
            member = f"{node.coordinator.root}/members/a"
            await asyncio.to_thread(watcher.start, 5)

            def on_member(data: bytes | None, stat: object, event: object = None) -> bool | None:
                if stat is None:
                    seen.append("member gone")
                    gone.set()
                    return False
                return None

            watcher.DataWatch(member, on_member)
            assert watcher.exists(member)
            journal.release.clear()
            journal.entered.clear()
            node.node.deliver(refs[0], add(0), reply)
            await asyncio.to_thread(journal.entered.wait, 5)  # in flight, held by the store
            for i, ref in enumerate(refs[1:], 1):
                node.node.deliver(ref, add(i), reply)  # collecting for the next append
            threading.Thread(target=release_later, daemon=True).start()
            stopping = asyncio.create_task(node.stop())
            await stopping
            await asyncio.to_thread(gone.wait, 10)
        finally:
            journal.release.set()
            if stopping is None:
                await node.stop()
            await asyncio.to_thread(watcher.stop)
            await asyncio.to_thread(watcher.close)
        assert sorted(seen[:-1]) == [f"m-{i} ok" for i in range(4)] and seen[-1] == "member gone", seen
        check = RecorderJournal(settings.journal_env())
        try:
            assert [[e.topic.rsplit(".", 1)[-1] for e in check.read(r.stream_id)][-1] for r in refs] == ["Added"] * 4
        finally:
            check.close()

    asyncio.run(scenario())


def test_a_shard_that_comes_back_is_served_from_the_store_not_from_the_old_copy(zookeeper: ZooKeeperServer,
                                                                                tmp_path: Path) -> None:
    """A serves X, X's shard moves to B (a join) which writes, and moves back (B leaves). A
    dropped X when the shard left - timers included, so none of them fires on A - and a
    message that writes nothing answers with B's writes, behind A's new takeover marker."""
    async def scenario() -> None:
        from tests.support.entities import Counter

        base = Settings(store="sqlite", data_dir=str(tmp_path), zookeeper_hosts=zookeeper.hosts,
                        cluster_name=f"back{uuid.uuid4().hex[:6]}", zk_session_timeout_s=2.0, shards_per_category=8,
                        **ClusterSecrets.write(tmp_path).settings())
        a = ClusteredStateNode(base.with_(node_id="a"), entities=[Counter])
        b = ClusteredStateNode(base.with_(node_id="b"), entities=[Counter])
        running = [a]
        await a.start()
        try:
            def counters(node: ClusteredStateNode) -> int:
                return len(node.ownership.owned_shards().get("Counter", []))

            def msg(mid: str, body: dict[str, object]) -> ClientMessage:
                return ClientMessage(mid, time.time(), "c", msgpack.packb(body))

            def handled_by_a() -> float:
                return sum(s.value for m in a.node.metrics.messages.collect() for s in m.samples
                           if s.name.endswith("_total") and s.labels.get("category") == "Counter")

            await until(lambda: counters(a) == 8)
            refs = [EntityRef("Counter", f"x{i}") for i in range(16)]
            for ref in refs:
                assert (await ask(a, ref, Connect(f"c-{ref.entity_id}", time.time(), "c",
                                                                    {"sub": "u"}))).ok
                assert (await ask(a, ref, msg(f"add-{ref.entity_id}", {"type": "add", "n": 1}))).ok
                remind = await ask(a, ref, msg(f"remind-{ref.entity_id}", {"type": "remind", "delay": 4.0}))
                assert remind.ok, remind
            running.append(b)
            await b.start()
            await until(lambda: counters(a) == 4 and counters(b) == 4
                        and a.ownership.assignment.version == b.ownership.assignment.version)
            moved = [ref for ref in refs if b.ownership.owns(ref)]
            assert moved and all(a.node.resident(ref) is not None for ref in refs if ref not in moved)
            assert not any(ref in a.node.cells for ref in moved)  # dropped, their timers with them
            seen_by_a = handled_by_a()

            for ref in moved:  # B takes over (its marker) and writes
                added = await ask(b, ref, msg(f"b-{ref.entity_id}", {"type": "add", "n": 10}))
                assert added.ok and added.payload == 11, added
            staying = [ref for ref in refs if ref not in moved]
            await until(lambda: all(b.node.resident(r).total == 111 for r in moved)  # their timers, on B
                        and all(a.node.resident(r).total == 101 for r in staying), timeout=30)
            await asyncio.sleep(0.2)  # all timers were due together: had A kept the moved ones, they ran by now
            assert handled_by_a() == seen_by_a + len(staying)  # only the timers of what A still owns fired on A

            running.remove(b)
            await b.stop()  # B leaves: its shards come back to A
            await until(lambda: counters(a) == 8)
            for ref in moved:  # a message that writes nothing
                peek = await ask(a, ref, msg(f"peek-{ref.entity_id}", {"type": "peek"}))
                assert peek.ok and peek.payload == 111, (ref, peek)
                stored = a.journal.read(ref.stream_id)
                markers = [(msgpack.unpackb(e.state)["node"], msgpack.unpackb(e.state)["epoch"])
                           for e in stored if e.topic.endswith("OwnerChanged")]
                assert [n for n, _ in markers] == ["a", "b", "a"] and markers[1][1] < markers[2][1]
                assert stored[-1].topic.endswith("OwnerChanged")  # A's marker came before any answer
            released = a.node.metrics.exposition().decode()
            assert f'xplatform_node_entities_released_total{{reason="shard_moved"}} {float(len(moved))}' in released
        finally:
            for node in running:
                await node.stop()

    asyncio.run(scenario())
