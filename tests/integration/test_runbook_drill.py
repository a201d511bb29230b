"""``xplatform drill failover`` against real processes: a state node that allows drills is
killed through ZooKeeper under the drill's own load; the report names its entities, each
served again, and every acknowledged message found in the store. A node that does not allow
drills refuses, and stays up."""

from __future__ import annotations

import json
import signal

from tests.support.cluster import Cluster
from tests.support.runbook import report_of, wait_for_map, xplatform

CHAT = ["--category", "Lot", "--message", json.dumps({"type": "chat", "text": "drill"}), "--role", "auctioneer"]


def test_drill_kills_a_node_under_load_and_counts_what_was_lost(cluster: Cluster) -> None:
    cluster.start("state-node", "node-a", XPLATFORM_DRILLS_ENABLED="1")
    cluster.start("state-node", "node-b", XPLATFORM_DRILLS_ENABLED="1")
    edge = cluster.start("edge", "edge-1")
    url = edge.ready_line.split("ready on ")[1].rstrip("/")
    wait_for_map(cluster, {"node-a", "node-b"})

    plan = report_of(xplatform(cluster, "drill", "failover", "--edge", url, *CHAT, "--node", "node-a", "--dry-run", "--json"))
    assert plan["victim"] == "node-a" and "node-a" in plan["owners"].values()
    assert cluster.processes["node-a"].process.poll() is None  # the dry run harmed nobody

    report = report_of(xplatform(cluster, "drill", "failover", "--edge", url, *CHAT, "--entities", "4",
                                 "--node", "node-a", "--json"))
    assert report["ok"] and report["victim"] == "node-a" and report["mode"] == "kill"
    assert cluster.processes["node-a"].process.wait(15) == -signal.SIGKILL  # it died as kill -9 does
    assert report["affected"] == [e for e, n in report["owners"].items() if n == "node-a"] != []
    assert sorted(report["served_again_s"]) == sorted(report["affected"])
    assert all(t is not None and t > 0 for t in report["served_again_s"].values())
    assert report["acknowledged"] > 4 and report["lost_acks"] == 0 and report["lost"] == []

    # A node started without XPLATFORM_DRILLS_ENABLED refuses the kill; nothing happens to it.
    cluster.wait_member_gone("node-a")
    cluster.start("state-node", "node-c")
    wait_for_map(cluster, {"node-b", "node-c"})
    refused = xplatform(cluster, "drill", "failover", "--edge", url, *CHAT, "--node", "node-c", "--entities", "2")
    assert refused.returncode == 2 and "node-c refused to kill" in refused.stderr, refused.stdout + refused.stderr
    assert "XPLATFORM_DRILLS_ENABLED=1" in refused.stderr
    assert cluster.processes["node-c"].process.poll() is None
