"""``xplatform doctor`` against real processes: a healthy cluster passes; then each thing
it checks is broken for real (an edge gone, a member with a skewed clock, a layout no live
node fits, the store unreachable) and each is named with its fix, exit 1."""

from __future__ import annotations

import json
import subprocess
import time

from tests.support.cluster import Cluster
from tests.support.runbook import wait_for_map, xplatform

CHECKS = ["zookeeper_quorum", "zookeeper_session", "store", "layout", "edges", "clock_skew"]
LENIENT = {"XPLATFORM_DOCTOR_STORE_SLOW_MS": "60000", "XPLATFORM_DOCTOR_MAX_CLOCK_SKEW_S": "5"}
"""A shared CI machine may be slow: the limits of what passes are not what this test checks."""


def _findings(done: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    report = json.loads(done.stdout)
    assert [f["check"] for f in report["findings"]] == CHECKS, report
    return {f["check"]: f for f in report["findings"]}


def test_doctor_passes_a_healthy_cluster_and_names_each_fault_with_its_fix(cluster: Cluster) -> None:
    cluster.start("state-node", "node-a")
    cluster.start("state-node", "node-b")
    edge = cluster.start("edge", "edge-1")
    wait_for_map(cluster, {"node-a", "node-b"})

    healthy = xplatform(cluster, "doctor", "--json", **LENIENT)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    found = _findings(healthy)
    assert found["zookeeper_quorum"]["status"] == "warn"  # one server: fine for a test, not for production
    assert "3 or 5" in found["zookeeper_quorum"]["fix"]
    assert {c: found[c]["status"] for c in CHECKS[1:]} == dict.fromkeys(CHECKS[1:], "ok"), found
    assert "edge-1" in found["edges"]["detail"]
    text = xplatform(cluster, "doctor", **LENIENT)
    assert text.returncode == 0 and "WARN zookeeper_quorum" in text.stdout and "healthy" in text.stdout

    # Break things for real: no edge, a member whose clock is 30 s off, a layout no live node fits,
    # a store that does not answer.
    edge.stop()
    cluster.wait_member_gone("edge-1")
    zk = cluster._zk()  # noqa: SLF001 - a member of its own, as a badly synchronised host registers
    try:
        zk.create(f"/xplatform/{cluster.name}/members/skewed", json.dumps(
            {"node_id": "skewed", "role": "observer", "clock": time.time() - 30}).encode(), ephemeral=True)
        sick = xplatform(cluster, "doctor", "--json", XPLATFORM_POSTGRES_PORT="1", **LENIENT,
                         XPLATFORM_CLUSTER_LAYOUT='[{"group": "hot", "categories": ["Lot"]}, '
                                                  '{"group": "default", "categories": ["*"]}]')
    finally:
        zk.stop()
        zk.close()
    assert sick.returncode == 1, sick.stdout + sick.stderr
    found = _findings(sick)
    assert {c: found[c]["status"] for c in ("store", "layout", "edges", "clock_skew")} == dict.fromkeys(
        ("store", "layout", "edges", "clock_skew"), "fail"), found
    assert "Lot" in found["layout"]["detail"] and "XPLATFORM_NODE_GROUP" in found["layout"]["fix"]
    assert "no edge" in found["edges"]["detail"] and "xplatform edge" in found["edges"]["fix"]
    assert "skewed" in found["clock_skew"]["fix"] and "NTP" in found["clock_skew"]["fix"]
    assert "unreachable" in found["store"]["detail"] and "XPLATFORM_POSTGRES_" in found["store"]["fix"]
    assert json.loads(sick.stdout)["ok"] is False

    # ZooKeeper unreachable: every check that needs it fails with the fix; the store is still checked.
    lost = xplatform(cluster, "doctor", "--json", XPLATFORM_ZOOKEEPER_HOSTS="127.0.0.1:1", **LENIENT)
    assert lost.returncode == 1, lost.stdout + lost.stderr
    found = _findings(lost)
    assert {c: f["status"] for c, f in found.items()} == {**dict.fromkeys(CHECKS, "fail"), "store": "ok"}, found
    assert "XPLATFORM_ZOOKEEPER_HOSTS" in found["zookeeper_quorum"]["fix"]
