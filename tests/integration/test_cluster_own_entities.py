"""Issue 11 item 6, the cluster half: a package written by ``xplatform new`` in a temporary
directory, served by a two-node cluster (real processes, ZooKeeper, PostgreSQL) and an edge,
with nothing but ``PYTHONPATH`` and ``XPLATFORM_ENTITIES`` pointing at it; a client talks to
it over websockets. (The ``xplatform run`` half: tests/unit/test_scaffold.py.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import msgpack
from prometheus_client.parser import text_string_to_metric_families

from edge.client import connect
from tests.support.cluster import Cluster, cluster_token

ROOT = Path(__file__).resolve().parents[2]


def _scaffold(tmp_path: Path, name: str) -> Path:
    pkgs = tmp_path / "pkgs"
    pkgs.mkdir()
    done = subprocess.run([sys.executable, "-m", "ops.cli", "new", name, "--dir", str(pkgs)], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return pkgs


def _shop_messages(metrics_url: str) -> float:
    """Messages the node processed for ShopCounter entities, successful or not."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "xplatform_node_messages_total" and sample.labels.get("category") == "ShopCounter")


def test_a_two_node_cluster_serves_a_scaffolded_package_by_setting_alone(cluster: Cluster, tmp_path: Path) -> None:
    pkgs = _scaffold(tmp_path, "shop")
    own = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(pkgs)]), "XPLATFORM_ENTITIES": "shop.entities:ENTITIES"}
    nodes = ("node-a", "node-b")
    for node in nodes:
        cluster.start("state-node", node, **own)
    edge = cluster.start("edge", "edge-1", **own)
    base_url = edge.ready_line.split("ready on ")[1].rstrip("/")

    counters = [f"c{uuid.uuid4().hex[:6]}-{i}" for i in range(16)]
    deadline = time.monotonic() + 30
    owners: dict[str, str] = {}
    while set(owners.values()) != set(nodes):  # both nodes in the shard map (the second joins a moment later)
        assert time.monotonic() < deadline, f"the shard map never gave both nodes a ShopCounter: {owners}\n{cluster.logs()}"
        try:
            owners = cluster.owners("ShopCounter", counters)
        except Exception:  # noqa: BLE001 - no assignment written yet
            owners = {}
        time.sleep(0.1)

    async def scenario() -> None:
        for n, counter in enumerate(counters, start=1):
            client = await connect(base_url, "ShopCounter", counter, cluster_token(f"user-{n}", "member"))
            try:
                assert client.welcome == {"total": 0}
                while True:  # a shard moving between the two nodes answers retry: resend the same message ID
                    reply = await client.request({"type": "add", "amount": n}, message_id=f"add-{counter}", timeout=10)
                    if reply.ok or not reply.retryable:
                        break
                    await asyncio.sleep(0.05)
                assert reply.ok and reply.payload == n, reply
                refused = await client.request({"type": "add", "amount": 0})
                assert not refused.ok and refused.code == "rejected"
            finally:
                await client.close()

    try:
        asyncio.run(scenario())
    except BaseException:
        print(cluster.logs())
        raise

    served = {node: _shop_messages(cluster.processes[node].metrics_url) for node in nodes}
    assert all(count > 0 for count in served.values()), served  # entities landed on both nodes
    journal = cluster.journal()
    try:
        for n, counter in enumerate(counters, start=1):
            stored = journal.read(f"ShopCounter-{counter}")
            added = [msgpack.unpackb(e.state)["amount"] for e in stored if e.topic.endswith("Added")]
            assert added == [n], (counter, [e.topic for e in stored])  # the accepted add once, the refused one never
    finally:
        journal.close()
