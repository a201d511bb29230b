"""The local supervisor (``xplatform state-node --supervised``) with real processes: a real
ZooKeeper and PostgreSQL, state nodes and an edge as subprocesses on loopback.

With LONG sessions (4 s) a ``kill -9``'d unsupervised node's shards would wait ~4 s for the
session to expire; supervised, the supervisor ends the dead child's session at once, so the
shards move and the entities answer again in well under that, and the child is restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient

from domain import EntityRef
from infrastructure.cluster.supervisor import ZkSession, end_session
from infrastructure.runtime.sharding import shard_of
from tests.support.chat_load import ChatLoad
from tests.support.cluster import Cluster
from tests.support.servers import PostgresServer, ZooKeeperServer

LONG_SESSION_S = 4.0


@pytest.fixture
def cluster(postgres_server: PostgresServer) -> Iterator[Cluster]:
    zk = ZooKeeperServer.start()
    c = Cluster(zk, postgres_server, name=f"s{uuid.uuid4().hex[:6]}", session_timeout_s=LONG_SESSION_S)
    try:
        yield c
    finally:
        c.stop_all()
        zk.destroy()


def _lots_on_both(cluster: Cluster, each: int = 3) -> list[str]:
    """Lot IDs, ``each`` of them owned by node-a and ``each`` by node-b in the map once both
    have joined (random IDs could all land on one node)."""
    deadline = time.monotonic() + 30
    while True:
        assignment = cluster.assignment()
        owners = {o.node for o in assignment.shards.get("Lot", []) if o is not None}
        if owners == {"node-a", "node-b"}:
            break
        assert time.monotonic() < deadline, owners
        time.sleep(0.1)
    picked: dict[str, list[str]] = {"node-a": [], "node-b": []}
    while any(len(ids) < each for ids in picked.values()):
        lot = f"lot-{uuid.uuid4().hex[:6]}"
        owner = assignment.owner("Lot", shard_of(EntityRef("Lot", lot), len(assignment.shards["Lot"])))
        if owner is not None and len(picked[owner.node]) < each:
            picked[owner.node].append(lot)
    return picked["node-a"] + picked["node-b"]


def test_kill_9_of_a_supervised_node_fails_over_before_its_long_session_could_expire(cluster: Cluster) -> None:
    supervised = cluster.start("state-node", "node-a", supervised=True)
    cluster.start("state-node", "node-b")
    url = cluster.start("edge", "edge-1").ready_line.split("ready on ")[1].rstrip("/")
    lots = _lots_on_both(cluster)

    async def scenario() -> tuple[ChatLoad, float, int, int]:
        load = ChatLoad([url], lots)
        load.start()
        await asyncio.sleep(1.5)  # every lot active
        owners = await asyncio.to_thread(cluster.owners, "Lot", lots)
        affected = [lot for lot, node in owners.items() if node == "node-a"]
        assert affected, owners  # 8 shards over two nodes: node-a owns some of these lots
        killed_pid = await asyncio.to_thread(supervised.kill9_child)
        killed = time.monotonic()
        while time.monotonic() < killed + 10 and not all(load.last_ok_sent[lot] > killed for lot in affected):
            await asyncio.sleep(0.01)
        failover = max(load.acked[lot][-1][1] for lot in affected) - killed
        back = await asyncio.to_thread(cluster.wait_member_back, "node-a", 15)  # the supervisor restarted it
        assert back, cluster.logs()
        new_children = await asyncio.to_thread(supervised.children)
        await asyncio.sleep(1.0)  # chatting goes on while node-a takes its share back
        await load.stop()
        assert not load.refused, load.refused
        return load, failover, killed_pid, (new_children or [0])[0]

    try:
        load, failover, killed_pid, new_pid = asyncio.run(scenario())
    except BaseException:
        print(cluster.logs())
        raise
    print(f"supervised failover with {LONG_SESSION_S} s sessions: {failover:.3f} s")
    assert failover < 1.5, cluster.logs()  # the session would have taken > 4 s to expire
    assert new_pid and new_pid != killed_pid, cluster.logs()
    log = supervised.log()
    assert "died with SIGKILL" in log and "ZooKeeper session: ended" in log, log
    journal = cluster.journal()
    try:  # versions contiguous, every acknowledged message stored exactly once
        load.check_stored(journal, more_than=10)
    finally:
        journal.close()
    edge_metrics = urllib.request.urlopen(cluster.processes["edge-1"].metrics_url, timeout=10).read().decode()
    assert 'xplatform_cluster_lane_queue_messages{lane="default",side="client"}' in edge_metrics  # links to nodes
    assert 'xplatform_cluster_ownership_state{state="serving"} 1.0' in edge_metrics  # its ZooKeeper session
    # SIGTERM to the supervisor: the child drains and leaves, the supervisor exits 0.
    supervised.process.send_signal(signal.SIGTERM)
    assert supervised.process.wait(15) == 0, supervised.log()
    assert not _alive(new_pid)
    cluster.wait_member_gone("node-a", timeout=2)  # left at once (drained), not by expiry


def test_a_cleanly_exiting_child_is_not_restarted(cluster: Cluster) -> None:
    """SIGTERM straight to the child (what a process-group signal also does): it drains and
    exits 0; the supervisor takes that as a stop, ends no session and exits 0 itself."""
    supervised = cluster.start("state-node", "node-a", supervised=True)
    children = supervised.children()
    assert len(children) == 1
    os.kill(children[0], signal.SIGTERM)
    assert supervised.process.wait(15) == 0, supervised.log()
    assert "exited cleanly (drained); not restarting" in supervised.log()
    assert "its ZooKeeper session:" not in supervised.log()  # no session to end: it left by itself


def test_end_session_ends_a_live_session_reports_expired_and_unreachable(cluster: Cluster) -> None:
    zk = KazooClient(cluster.zookeeper.hosts, timeout=LONG_SESSION_S)
    zk.start(5)
    try:
        zk.create("/owned-by-session", b"", ephemeral=True)
        session_id, password = zk.client_id
        started = time.monotonic()
        assert end_session(cluster.zookeeper.hosts, ZkSession(session_id, password)) == "ended"
        observer = KazooClient(cluster.zookeeper.hosts)
        observer.start(5)
        try:
            assert observer.exists("/owned-by-session") is None  # the ephemeral went with the session
        finally:
            observer.stop()
            observer.close()
        assert time.monotonic() - started < 1.0  # at once, not after the 4 s session timeout
        assert end_session(cluster.zookeeper.hosts, ZkSession(session_id, password)) == "expired"
    finally:
        zk.stop()
        zk.close()
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{s.getsockname()[1]}"
    started = time.monotonic()
    assert end_session(nobody, ZkSession(session_id, password), timeout_s=0.5) == "unreachable"
    assert time.monotonic() - started < 3.0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
