"""``xplatform drain`` against real processes (ZooKeeper, PostgreSQL, two state nodes, an
edge): the node drains through a ZooKeeper request - no signal, no PID from the test - while
clients keep chatting; refusals change nothing."""

from __future__ import annotations

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from tests.support.cluster import Cluster
from tests.support.runbook import owned_by, report_of, shard_map, under_chat_load, wait_for_map, xplatform


def test_drain_moves_a_state_nodes_shards_and_an_edge_leaves(cluster: Cluster) -> None:
    node_a = cluster.start("state-node", "node-a")
    node_b = cluster.start("state-node", "node-b")
    edge = cluster.start("edge", "edge-1")
    url = edge.ready_line.split("ready on ")[1].rstrip("/")
    before = wait_for_map(cluster, {"node-a", "node-b"})
    of_a = owned_by(before, "node-a")
    assert of_a

    # Refused, nothing changes: unknown member, wrong credentials, a request without credentials.
    unknown = xplatform(cluster, "drain", "node-z")
    assert unknown.returncode == 2 and "no member named 'node-z'" in unknown.stderr, unknown.stderr
    wrong = cluster.root / "wrong.secret"
    wrong.write_text("not-the-password-of-this-cluster")
    wrong.chmod(0o600)
    stranger = xplatform(cluster, "drain", "node-a", XPLATFORM_ZOOKEEPER_PASSWORD_FILE=str(wrong))
    assert stranger.returncode == 2 and "ZooKeeper refused" in stranger.stderr, stranger.stderr
    anonymous = KazooClient(hosts=cluster.zookeeper.hosts)
    anonymous.start(10)
    try:
        with pytest.raises(NoAuthError):
            anonymous.create(f"/xplatform/{cluster.name}/requests/node-a", b'{"action": "drain", "incarnation": 0}',
                             ephemeral=True)
    finally:
        anonymous.stop()
        anonymous.close()

    # Dry run: the allocator's moves, and nothing else.
    plan = report_of(xplatform(cluster, "drain", "node-a", "--dry-run", "--json"))
    assert [(m["category"], m["shard"]) for m in plan["moves"]] == of_a
    assert {(m["from"], m["to"]) for m in plan["moves"]} == {("node-a", "node-b")}
    assert node_a.process.poll() is None and shard_map(cluster).version == before.version

    load, report = under_chat_load(cluster, url, "drain", "node-a")
    assert node_a.process.wait(15) == 0, node_a.log()  # it drained and exited by itself
    assert report["role"] == "state" and report["left_s"] is not None and report["unowned"] == 0
    assert [(s["category"], s["shard"]) for s in report["shards"]] == of_a
    assert {s["to"] for s in report["shards"]} == {"node-b"}
    assert all(s["unavailable_s"] is not None and s["unavailable_s"] >= 0 for s in report["shards"])
    assert owned_by(shard_map(cluster), "node-a") == []
    assert load.refused == [], load.refused
    journal = cluster.journal()
    try:
        load.check_stored(journal, more_than=2)  # every acknowledged message stored once; chatting went on
    finally:
        journal.close()

    # The last state node: draining it would leave every category without a node.
    last = xplatform(cluster, "drain", "node-b")
    assert last.returncode == 2 and "would leave" in last.stderr and "--force" in last.stderr, last.stderr
    assert node_b.process.poll() is None

    # An edge: leaves (GOING_AWAY to its clients), no shards to move.
    gone = report_of(xplatform(cluster, "drain", "edge-1", "--json"))
    assert gone["role"] == "edge" and gone["shards"] == [] and gone["left_s"] is not None
    assert edge.process.wait(15) == 0, edge.log()
