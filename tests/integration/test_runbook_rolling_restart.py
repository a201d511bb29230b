"""``xplatform rolling-restart`` against real processes under a process manager that restarts
what exits (``Cluster.keep_running``, as systemd's Restart=always): every member in turn,
in order, each replaced and the cluster healthy before the next, while a client chats; and
a member nobody restarts stops the roll there, leaving the members after it untouched."""

from __future__ import annotations

import json

from tests.support.cluster import Cluster
from tests.support.runbook import report_of, under_chat_load, wait_for_map, xplatform


def _incarnations(cluster: Cluster) -> dict[str, int]:
    zk = cluster._zk()  # noqa: SLF001 - the member entries' creation, as the command reads them
    try:
        root = f"/xplatform/{cluster.name}/members"
        return {n: zk.exists(f"{root}/{n}").czxid for n in zk.get_children(root)}
    finally:
        zk.stop()
        zk.close()


def test_rolling_restart_replaces_each_member_in_turn_and_stops_at_the_first_failure(cluster: Cluster) -> None:
    cluster.start("state-node", "node-a")
    cluster.start("state-node", "node-b")
    edge = cluster.start("edge", "edge-1")
    url = edge.ready_line.split("ready on ")[1].rstrip("/")
    port = url.rsplit(":", 1)[1]
    cluster.processes["edge-1"].stop()  # again on a fixed port: its replacement comes back where clients look
    cluster.start("edge", "edge-1", XPLATFORM_EDGE_PORT=port)
    cluster.keep_running("node-a", "node-b", "edge-1")
    wait_for_map(cluster, {"node-a", "node-b"})
    before = _incarnations(cluster)

    plan = report_of(xplatform(cluster, "rolling-restart", "--dry-run", "--json"))
    assert plan["order"] == ["node-a", "node-b", "edge-1"] and plan["steps"] == []
    assert _incarnations(cluster) == before and cluster.restarts == []

    load, report = under_chat_load(cluster, url, "rolling-restart", "--timeout", "60", lots=3)
    assert [s["node"] for s in report["steps"]] == ["node-a", "node-b", "edge-1"]
    assert cluster.restarts == ["node-a", "node-b", "edge-1"]  # one replacement each, in that order
    after = _incarnations(cluster)
    for step in report["steps"]:
        assert step["healthy"] and step["incarnation"] == before[step["node"]]
        assert step["replacement"] == after[step["node"]] != before[step["node"]]
    assert [s["shards_moved_away"] > 0 for s in report["steps"]] == [True, True, False]
    assert load.refused == [], load.refused
    journal = cluster.journal()
    try:
        load.check_stored(journal, more_than=2)
    finally:
        journal.close()

    # node-c has no process manager: the roll stops at it; node-a (after it) is not touched.
    cluster.start("state-node", "node-c")
    wait_for_map(cluster, {"node-a", "node-b", "node-c"})
    before = _incarnations(cluster)
    stopped = xplatform(cluster, "rolling-restart", "--nodes", "node-c,node-a", "--timeout", "5", "--json")
    assert stopped.returncode == 2, stopped.stdout + stopped.stderr
    partial = json.loads(stopped.stdout)  # for scripts: where it stopped, and why
    assert partial["steps"] == [] and partial["stopped_at"] == "node-c" and "no replacement" in partial["reason"]
    assert "rolling restart stopped at node-c (step 1 of 2; done: none)" in stopped.stderr
    assert "no replacement of node-c joined" in stopped.stderr
    assert _incarnations(cluster)["node-a"] == before["node-a"] and "node-c" not in _incarnations(cluster)
