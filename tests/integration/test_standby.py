"""Hot standbys in a cluster (three clustered state nodes in one process, real ZooKeeper,
one SQLite store): every shard of a mirrored category has a standby besides its owner; a
killed owner's shards go to their standbys, which take their entities over warm and serve
exactly what a replay of the store gives; new standbys are assigned and warm up."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter as Tally
from pathlib import Path

import msgpack
import pytest

from domain import ClientMessage, Connect, EntityRef
from infrastructure.persistence import open_journal
from infrastructure.persistence.rehydrate import rehydrate
from infrastructure.runtime.mirror_groups import GroupMirrorFeed
from infrastructure.runtime.mirrors import state_digest
from infrastructure.settings import Settings
from infrastructure.transport import LocalTransport
from ops.status import print_status, read_status
from ops.wiring.node import stop_node
from ops.wiring.state_node import ClusteredStateNode
from tests.conftest import eventstoredb_settings
from tests.support.cluster import ClusterSecrets, crash
from tests.support.entities import Counter
from tests.support.servers import ZooKeeperServer

LAYOUT = '[{"group": "default", "categories": ["*"], "mirrors": 1}]'


@pytest.fixture(scope="module")
def zookeeper():  # type: ignore[no-untyped-def]
    server = ZooKeeperServer.start()
    yield server
    server.destroy()


async def until(check, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def bury(node: ClusteredStateNode) -> None:
    if node.standby is not None:
        await asyncio.to_thread(node.standby.stop)
    await stop_node(node.node)


def settled(nodes: dict[str, ClusteredStateNode]) -> bool:
    """Every node has the same map, every shard an owner and a standby (among them), every
    node owns shards (the map already counts the last one that joined)."""
    maps = [node.ownership.assignment for node in nodes.values()]
    owners = maps[0].shards.get("Counter", [None])
    standbys = maps[0].standbys.get("Counter", [None])
    return (len({m.version for m in maps}) == 1 and all(len(n.coordinator.members) == len(nodes) for n in nodes.values())
            and all(o is not None and o.node in nodes for o in owners)
            and {o.node for o in owners if o is not None} == set(nodes)
            and all(s is not None and s.node in nodes for s in standbys))


def assert_equals_replay(base: Settings, nodes: dict[str, ClusteredStateNode], refs: list[EntityRef]) -> None:
    """Every served entity is what a fresh replay of its stream gives (they were sent only
    messages that write: a read's reply is remembered by the resident entity alone)."""
    journal = open_journal(base)
    try:
        for ref in refs:
            serving = next(node for node in nodes.values() if node.ownership.is_mine(ref)).node
            fresh, _ = rehydrate(journal, serving.mapper, Counter, ref)
            served = serving.resident(ref)
            assert served is not None
            assert (served.version, state_digest(served, serving.mapper)) == \
                (fresh.version, state_digest(fresh, serving.mapper))
    finally:
        journal.close()


def counted(node: ClusteredStateNode, sample: str) -> float:
    for line in node.node.metrics.exposition().decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("store", ["sqlite", "eventstoredb"])
def test_a_killed_owners_entities_are_taken_over_warm_by_their_standbys_and_equal_a_replay(
        store: str, request: pytest.FixtureRequest, zookeeper: ZooKeeperServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """On SQLite the standbys follow a catch-up subscription; on EventStoreDB each follows a
    persistent subscription group of its own (the design card)."""
    secrets = ClusterSecrets.write(tmp_path)
    cluster = dict(zookeeper_hosts=zookeeper.hosts, cluster_name=f"m{uuid.uuid4().hex[:6]}", zk_session_timeout_s=0.6,
                   shards_per_category=8, cluster_layout=LAYOUT, **secrets.settings())
    base = (eventstoredb_settings(request.getfixturevalue("eventstoredb_uri"), **cluster) if store == "eventstoredb"
            else Settings(store="sqlite", data_dir=str(tmp_path), **cluster))
    refs = [EntityRef("Counter", f"s{i}") for i in range(24)]
    rng = random.Random(5)

    async def scenario() -> None:
        nodes = {n: ClusteredStateNode(base.with_(node_id=n), entities=[Counter]) for n in ("a", "b", "c")}
        for node in nodes.values():
            await node.start()
        killed = None
        try:
            await until(lambda: settled(nodes))
            assignment = nodes["a"].ownership.assignment
            for owner, standby in zip(assignment.shards["Counter"], assignment.standbys["Counter"]):
                assert owner is not None and standby is not None and owner.node != standby.node

            def owner_of(ref: EntityRef) -> ClusteredStateNode:
                return next(node for node in nodes.values() if node.ownership.is_mine(ref))

            for ref in refs:
                connect = Connect(f"c-{ref.entity_id}", time.time(), "c", {"sub": "u"})
                assert (await LocalTransport(owner_of(ref).node, 10).ask(ref, connect)).ok
            for i in range(150):
                ref = rng.choice(refs)
                message = ClientMessage(f"m{i}", time.time(), "c", msgpack.packb({"type": "add", "n": rng.randint(1, 9)}))
                assert (await LocalTransport(owner_of(ref).node, 10).ask(ref, message)).ok
            for node in nodes.values():
                await node.node.drain()
            for node in nodes.values():  # every standby mirror caught up with the store
                assert node.standby is not None
                assert isinstance(node.standby.feed, GroupMirrorFeed) == (store == "eventstoredb")
                assert await asyncio.to_thread(node.standby.feed.wait_caught_up, 30)

            # kill -9 "b": its session expires without a goodbye, its node just stops
            killed = nodes.pop("b")
            victims = [ref for ref in refs if killed.ownership.is_mine(ref)]
            assert victims
            before = killed.ownership.assignment
            await crash(killed, zookeeper.hosts)
            await until(lambda: all(any(n.ownership.is_mine(ref) for n in nodes.values()) for ref in victims))
            after = nodes["a"].ownership.assignment
            warm_expected = 0
            for ref in victims:
                key = nodes["a"].ownership.shard_key(ref)
                previous_standby = before.standby(*key)
                if previous_standby is not None and previous_standby.node == after.owner(*key).node:
                    warm_expected += 1
            assert warm_expected > 0
            for ref in victims:  # served again, by the standby where the map put it there
                message = ClientMessage(f"again-{ref.entity_id}", time.time(), "c", msgpack.packb({"type": "add", "n": 1}))
                reply = await LocalTransport(owner_of(ref).node, 10).ask(ref, message)
                assert reply.ok, reply
            for node in nodes.values():
                await node.node.drain()
            warm = sum(counted(n, 'xplatform_node_takeovers_total{kind="warm"}') for n in nodes.values())
            assert warm == warm_expected
            assert_equals_replay(base, nodes, victims)
            # every shard has a standby again, never its owner, and the standbys warm up
            for owner, standby in zip(after.shards["Counter"], after.standbys["Counter"]):
                assert owner is not None and standby is not None and owner.node != standby.node
                assert standby.node in nodes
            for node in nodes.values():
                assert node.standby is not None
                assert await asyncio.to_thread(node.standby.feed.wait_caught_up, 30)
            for ref in refs:
                standby = after.standby(*nodes["a"].ownership.shard_key(ref))
                assert standby is not None
                await until(lambda: ref in nodes[standby.node].standby.mirror)  # type: ignore[union-attr]

            # `xplatform status`: each shard's owner and standby, each standby's lag
            ops = base.with_(node_id="ops")
            for _ in range(300):
                status = await asyncio.to_thread(read_status, ops)
                if all(status["members"].get(n, {}).get("mirror_lag") == 0 for n in nodes):
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail(f"standby lag never shown as 0: {status['members']}")
            current = nodes["a"].ownership.assignment
            assert status["shards"]["Counter"] == [[o.node, s.node] for o, s in
                                                   zip(current.shards["Counter"], current.standbys["Counter"])]
            assert status["standby"]["Counter"] == dict(Tally(s.node for s in current.standbys["Counter"]))
            await asyncio.to_thread(print_status, ops)
            shown = capsys.readouterr().out
            assert "standby lag=0 events" in shown and "Counter shards (owner/standby): 0:" in shown
        finally:
            for node in nodes.values():
                await node.stop()
            if killed is not None:
                await bury(killed)

    asyncio.run(scenario())


def test_a_killed_standby_is_replaced_and_an_owner_killed_with_its_standby_is_loaded_cold(
        zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    """Four nodes. The standby of some shards is killed: those shards get a new standby (not
    their owner) that warms up. Then an owner and the standby of its shards are killed
    together: their entities are loaded cold from the store and equal a replay."""
    secrets = ClusterSecrets.write(tmp_path)
    base = Settings(store="sqlite", data_dir=str(tmp_path), zookeeper_hosts=zookeeper.hosts,
                    cluster_name=f"m{uuid.uuid4().hex[:6]}", zk_session_timeout_s=0.6, shards_per_category=8,
                    cluster_layout=LAYOUT, **secrets.settings())
    refs = [EntityRef("Counter", f"t{i}") for i in range(24)]

    async def scenario() -> None:
        nodes = {n: ClusteredStateNode(base.with_(node_id=n), entities=[Counter]) for n in ("a", "b", "c", "d")}
        for node in nodes.values():
            await node.start()
        dead: list[ClusteredStateNode] = []
        try:
            await until(lambda: settled(nodes))

            async def send(ref: EntityRef, message: ClientMessage | Connect) -> None:
                for _attempt in range(100):  # resent while the map moves, as a client's transport does
                    owner = next((node for node in nodes.values() if node.ownership.is_mine(ref)), None)
                    if owner is not None:
                        reply = await LocalTransport(owner.node, 10).ask(ref, message)
                        if reply.ok or not reply.retryable:
                            break
                    await asyncio.sleep(0.05)
                assert reply.ok, reply

            for ref in refs:
                await send(ref, Connect(f"c-{ref.entity_id}", time.time(), "c", {"sub": "u"}))
                await send(ref, ClientMessage(f"m-{ref.entity_id}", time.time(), "c", msgpack.packb({"type": "add", "n": 2})))

            # the standby of a shard dies: the shard gets another standby, which warms up
            def any_node() -> ClusteredStateNode:  # a survivor's view of the map
                return next(iter(nodes.values()))

            target = any_node().ownership.shard_key(refs[0])
            held = [ref for ref in refs if any_node().ownership.shard_key(ref) == target]
            assignment = any_node().ownership.assignment
            standby = assignment.standby(*target)
            assert standby is not None
            dead.append(nodes.pop(standby.node))
            await crash(dead[-1], zookeeper.hosts)
            await until(lambda: settled(nodes))
            assignment = any_node().ownership.assignment
            replacement = assignment.standby(*target)
            assert replacement is not None and replacement.node != standby.node
            assert replacement.node != assignment.owner(*target).node  # type: ignore[union-attr]
            for ref in held:
                await until(lambda: ref in nodes[replacement.node].standby.mirror)  # type: ignore[union-attr]

            # an owner and its standby die together: cold loads, equal to a replay
            owner = assignment.owner(*target)
            assert owner is not None
            pair = [nodes.pop(owner.node), nodes.pop(replacement.node)]
            dead += pair
            for node in pair:
                await crash(node, zookeeper.hosts)
            await until(lambda: settled(nodes) or len(nodes) == 1 and all(
                any(n.ownership.is_mine(ref) for n in nodes.values()) for ref in refs))
            for ref in refs:
                await send(ref, ClientMessage(f"p-{ref.entity_id}", time.time(), "c", msgpack.packb({"type": "add", "n": 1})))
            for node in nodes.values():
                await node.node.drain()
            assert_equals_replay(base, nodes, refs)
            cold = sum(counted(n, 'xplatform_node_takeovers_total{kind="cold"}') for n in nodes.values())
            assert cold >= len(held)  # owner and standby gone: nothing warm to take them from
        finally:
            for node in nodes.values():
                await node.stop()
            for node in dead:
                await bury(node)

    asyncio.run(scenario())
