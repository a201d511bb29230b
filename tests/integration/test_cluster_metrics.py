"""Cluster metrics move when they should: handoff durations as shards move between two
clustered state nodes (real ZooKeeper, in one process), and the per-lane transport queue
depth when a peer stops reading (real loopback sockets)."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from pathlib import Path

from domain import ClientMessage, EntityRef
from infrastructure.metrics import ClusterMetrics
from infrastructure.settings import Settings
from infrastructure.transport import handshake
from infrastructure.transport.auth import LinkAuth
from infrastructure.transport.client import ClusterClient
from ops.wiring.state_node import ClusteredStateNode
from tests.support.cluster import ClusterSecrets
from tests.support.servers import ZooKeeperServer

HANDOFF = "xplatform_cluster_handoff_duration_seconds"


def handoffs(node: ClusteredStateNode, direction: str) -> tuple[float, float]:
    """(count, sum) of the node's handoff-duration histogram for ``direction``."""
    registry = node.ownership.metrics.registry
    count = registry.get_sample_value(f"{HANDOFF}_count", {"direction": direction}) or 0.0
    total = registry.get_sample_value(f"{HANDOFF}_sum", {"direction": direction}) or 0.0
    return count, total


def owned(node: ClusteredStateNode) -> int:
    return sum(len(shards) for shards in node.ownership.owned_shards().values())


async def until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_handoff_durations_are_observed_per_shard_gained_and_lost(tmp_path: Path) -> None:
    zookeeper = ZooKeeperServer.start()

    async def scenario() -> None:
        base = Settings(store="sqlite", data_dir=str(tmp_path), zookeeper_hosts=zookeeper.hosts,
                        cluster_name=f"m{uuid.uuid4().hex[:6]}", zk_session_timeout_s=2.0, shards_per_category=8,
                        **ClusterSecrets.write(tmp_path).settings())
        a = ClusteredStateNode(base.with_(node_id="a"))
        b = ClusteredStateNode(base.with_(node_id="b", transport_lanes="Lot=bulk"))
        total = 8 * len(a.node.types.categories)
        await a.start()
        try:
            await until(lambda: owned(a) == total)
            assert handoffs(a, "gained")[0] == total and handoffs(a, "lost")[0] == 0
            await b.start()
            try:
                await until(lambda: owned(a) + owned(b) == total and owned(b) > 0)
                moved = owned(b)
                await until(lambda: handoffs(a, "lost")[0] == moved)  # after a's writes were flushed
                assert handoffs(b, "gained")[0] == moved
                assert handoffs(a, "lost")[1] < 2.0 and handoffs(b, "gained")[1] < 2.0
                # b's link to a for a Lot names lane "bulk" in its HELLO: a's queue metric has that lane.
                lot = next(EntityRef("Lot", f"l{i}") for i in range(100)
                           if a.coordinator.route(EntityRef("Lot", f"l{i}"))[0] == "a")  # type: ignore[index]
                await b.client.ask(lot, ClientMessage("m1", time.time(), "c1", b"\x80"))  # answered or refused: linked
                assert a.server.queued_by_lane().get("bulk") == 0
                a.record_transport_metrics()
                assert a.ownership.metrics.registry.get_sample_value(
                    "xplatform_cluster_lane_queue_messages", {"lane": "bulk", "side": "server"}) == 0
            finally:
                await b.stop()  # drain: every shard b owned is handed off
            assert handoffs(b, "lost")[0] == moved
            await until(lambda: owned(a) == total)
            assert handoffs(a, "gained")[0] == total + moved
        finally:
            await a.stop()

    try:
        asyncio.run(scenario())
    finally:
        zookeeper.destroy()


def test_lane_queue_depth_counts_envelopes_waiting_for_a_peer_that_does_not_read() -> None:
    async def scenario() -> None:
        paused = asyncio.Event()
        resume = asyncio.Event()
        received = 0

        async def slow_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal received
            await handshake.accept(reader, writer, auth, "slow", is_member=lambda node: True)
            paused.set()
            await resume.wait()  # reads nothing until told: the sender's buffers fill
            while chunk := await reader.read(1 << 20):
                received += len(chunk)
            writer.close()

        auth = LinkAuth({"edge": secrets.token_bytes(32)})
        server = await asyncio.start_server(slow_peer, "127.0.0.1", 0)
        address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        client = ClusterClient("edge-x", "edge", route=lambda ref: ("slow", 1), address_of=lambda node: address,
                               auth=auth, lane_of=lambda ref: "bulk")
        metrics = ClusterMetrics()
        try:
            payload = b"x" * 65_536
            for i in range(160):  # ~10 MB: more than loopback's kernel buffers, less than the 16 MB link limit
                client.send(EntityRef("Lot", "l1"), ClientMessage(f"m{i}", time.time(), "c1", payload))
            await until(lambda: client.queued_by_lane().get("bulk", 0) > 10)
            await paused.wait()
            metrics.record_lanes("client", client.queued_by_lane())
            depth = metrics.registry.get_sample_value("xplatform_cluster_lane_queue_messages",
                                                      {"lane": "bulk", "side": "client"})
            assert depth is not None and 10 < depth <= 160
            assert client.buffered_by_lane()["bulk"] > depth * 60_000  # the bytes behind those envelopes
            resume.set()
            await until(lambda: client.queued_by_lane().get("bulk", 0) == 0)
            metrics.record_lanes("client", client.queued_by_lane())
            assert metrics.registry.get_sample_value("xplatform_cluster_lane_queue_messages",
                                                     {"lane": "bulk", "side": "client"}) == 0
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
