"""Fault tests with real processes: ZooKeeper, PostgreSQL, two state nodes and an edge as
subprocesses on loopback; a client through the edge; kill -9 of the node serving it.
The ``cluster`` fixture is in conftest.py; load and store checks in tests/support/chat_load.py."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import msgpack

from edge.client import connect
from infrastructure.persistence import RecorderJournal
from tests.support.chat_load import ChatLoad, token
from tests.support.cluster import Cluster


def test_kill_9_of_a_state_node_fails_over_without_losing_acknowledged_messages(cluster: Cluster) -> None:
    cluster.start("state-node", "node-a")
    cluster.start("state-node", "node-b")
    edge = cluster.start("edge", "edge-1")
    base_url = edge.ready_line.split("ready on ")[1].rstrip("/")
    lot_id = f"lot-{uuid.uuid4().hex[:6]}"

    async def scenario() -> tuple[list[str], float]:
        auct = await connect(base_url, "Lot", lot_id, token("ann", "auctioneer"))
        bidder = await connect(base_url, "Lot", lot_id, token("bob", "bidder"))
        assert (await auct.request({"type": "open", "title": "Vase"})).ok
        acknowledged: list[str] = []
        amount = 0
        owners_before = None
        killed_at = 0.0
        recovered_at = 0.0
        for step in range(60):
            amount += 1
            mid = f"bid-{amount}"
            while True:  # resend with the same message ID until the entity answers
                reply = await bidder.request({"type": "bid", "amount": amount}, message_id=mid, timeout=5)
                if reply.ok or not reply.retryable:
                    break
                await asyncio.sleep(0.05)
            if reply.ok:
                acknowledged.append(mid)
                if killed_at and not recovered_at:
                    recovered_at = time.monotonic()
            if step == 20:
                owners_before = _owner_of_lot(cluster, lot_id)
                cluster.processes[owners_before].kill9()
                killed_at = time.monotonic()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # the last reservations settle
        await auct.close()
        await bidder.close()
        return acknowledged, recovered_at - killed_at

    try:
        acknowledged, failover_s = asyncio.run(scenario())
    except BaseException:
        print(cluster.logs())
        raise
    print(f"failover (kill -9 to the next acknowledged bid): {failover_s:.2f} s")
    assert len(acknowledged) == 60 and 0 < failover_s < 10, cluster.logs()
    journal = cluster.journal()
    try:
        lots = [s for s in _streams(journal) if s == f"Lot-{lot_id}"]  # (other tests' lots share the store)
        assert lots
        for stream in lots:
            events = journal.read(stream)
            assert [e.originator_version for e in events] == list(range(1, len(events) + 1))  # contiguous
            epochs = [msgpack.unpackb(e.state)["epoch"] for e in events if e.topic.endswith("OwnerChanged")]
            assert epochs == sorted(set(epochs)) and len(epochs) >= 2  # a takeover happened, epochs only grow
            bids = [msgpack.unpackb(e.state)["bid_id"] for e in events if e.topic.endswith("BidAccepted")]
            assert len(bids) == len(set(bids))  # every accepted bid exactly once
    finally:
        journal.close()


def _owner_of_lot(cluster: Cluster, lot_id: str) -> str:
    return cluster.owners("Lot", [lot_id])[lot_id]


def _streams(journal: RecorderJournal) -> list[str]:
    recorder = journal._events  # noqa: SLF001 - test inspection of the shared store
    notifications = recorder.select_notifications(start=1, limit=100000)  # type: ignore[attr-defined]
    return sorted({str(n.originator_id) for n in notifications})


def test_drain_under_load_is_invisible_to_clients(cluster: Cluster) -> None:
    """SIGTERM = graceful drain: stop taking messages, flush appends, leave ZooKeeper; the
    edge resends to the next owner. Clients see no error at all."""
    cluster.start("state-node", "node-a")
    cluster.start("state-node", "node-b")
    edge = cluster.start("edge", "edge-1")
    base_url = edge.ready_line.split("ready on ")[1].rstrip("/")

    async def scenario() -> tuple[int, float]:
        lot_id = f"lot-{uuid.uuid4().hex[:6]}"
        auct = await connect(base_url, "Lot", lot_id, token("ann", "auctioneer"))
        bidder = await connect(base_url, "Lot", lot_id, token("bob", "bidder"))
        assert (await auct.request({"type": "open", "title": "Vase"})).ok
        errors, slowest = 0, 0.0
        for amount in range(1, 61):
            started = time.monotonic()
            reply = await bidder.request({"type": "bid", "amount": amount}, timeout=5)
            slowest = max(slowest, time.monotonic() - started)
            errors += 0 if reply.ok else 1
            if amount == 20:
                cluster.processes[_owner_of_lot(cluster, lot_id)].stop()  # SIGTERM: drain
            await asyncio.sleep(0.01)
        await auct.close()
        await bidder.close()
        return errors, slowest

    try:
        errors, slowest = asyncio.run(scenario())
    except BaseException:
        print(cluster.logs())
        raise
    print(f"drain: slowest reply {slowest * 1000:.0f} ms, client errors {errors}")
    assert errors == 0, cluster.logs()
    assert slowest < 2.0


def test_sigstopped_zombie_cannot_write_or_answer_after_waking(cluster: Cluster) -> None:
    """SIGSTOP the lot's owner for longer than its session, keep bidding (the client resends
    to the new owner), then SIGCONT: the zombie's lease has run out, so it writes nothing and
    no client sees a success from it; the stream stays contiguous with growing epochs."""
    cluster.start("state-node", "node-a")
    cluster.start("state-node", "node-b")
    edge = cluster.start("edge", "edge-1")
    base_url = edge.ready_line.split("ready on ")[1].rstrip("/")
    lot_id = f"lot-{uuid.uuid4().hex[:6]}"

    zombie_name: list[str] = []

    async def scenario() -> int:
        auct = await connect(base_url, "Lot", lot_id, token("ann", "auctioneer"))
        bidder = await connect(base_url, "Lot", lot_id, token("bob", "bidder"))
        assert (await auct.request({"type": "open", "title": "Vase"})).ok
        acknowledged = 0
        zombie = None
        for amount in range(1, 41):
            mid = f"bid-{amount}"
            while True:
                reply = await bidder.request({"type": "bid", "amount": amount}, message_id=mid, timeout=5)
                if reply.ok or not reply.retryable:
                    break
                await asyncio.sleep(0.05)
            acknowledged += reply.ok
            if amount == 10:
                zombie = cluster.processes[_owner_of_lot(cluster, lot_id)]
                zombie_name.append(zombie.name)
                zombie.process.send_signal(signal.SIGSTOP)
            if amount == 25 and zombie is not None:
                zombie.process.send_signal(signal.SIGCONT)  # wakes up believing it still owns the lot
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)
        await auct.close()
        await bidder.close()
        return acknowledged

    try:
        acknowledged = asyncio.run(scenario())
    except BaseException:
        print(cluster.logs())
        raise
    assert acknowledged == 40
    noticed = f"ownership of {zombie_name[0]}: serving -> "
    deadline = time.monotonic() + 10
    while noticed not in cluster.processes[zombie_name[0]].log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert noticed in cluster.processes[zombie_name[0]].log(), cluster.logs()  # it noticed it lost the shard
    journal = cluster.journal()
    try:
        events = journal.read(f"Lot-{lot_id}")
        assert [e.originator_version for e in events] == list(range(1, len(events) + 1))
        epochs = [msgpack.unpackb(e.state)["epoch"] for e in events if e.topic.endswith("OwnerChanged")]
        assert len(epochs) >= 2 and epochs == sorted(set(epochs))
        bids = [msgpack.unpackb(e.state)["amount"] for e in events if e.topic.endswith("BidAccepted")]
        names = " ".join(e.topic.rsplit(".", 1)[-1] for e in events) + "\n" + cluster.logs()
        assert bids == sorted(set(bids)), names  # every accepted bid once, in order (safety)
        assert bids and bids[-1] > 25, names  # and bidding went on after the takeover (liveness)
    finally:
        journal.close()



def test_rolling_restart_of_every_node_under_load(cluster: Cluster) -> None:
    """Every state node (drain, restart), then every edge (GOING_AWAY, restart on its port),
    one at a time, while clients keep chatting: no acknowledged message lost, no client error
    other than reconnects (clients move to the other edge with the same connection ID)."""
    for node in ("node-a", "node-b", "node-c"):
        cluster.start("state-node", node)
    urls = [cluster.start("edge", f"edge-{i}").ready_line.split("ready on ")[1].rstrip("/") for i in (1, 2)]
    ports = {f"edge-{i}": url.rsplit(":", 1)[1] for i, url in zip((1, 2), urls, strict=True)}
    lots = [f"roll-{uuid.uuid4().hex[:6]}-{i}" for i in range(4)]

    async def scenario() -> ChatLoad:
        load = ChatLoad(urls, lots)  # clients move to the other edge (same connection ID) and resend
        load.start()
        await asyncio.sleep(1.0)
        for node in ("node-a", "node-b", "node-c"):
            await asyncio.to_thread(cluster.processes[node].stop)
            await asyncio.to_thread(cluster.wait_member_gone, node)
            await asyncio.to_thread(cluster.start, "state-node", node)
            await asyncio.sleep(0.5)
        for edge in ("edge-1", "edge-2"):
            await asyncio.to_thread(cluster.processes[edge].stop)
            await asyncio.to_thread(cluster.start, "edge", edge, XPLATFORM_EDGE_PORT=ports[edge])
            await asyncio.sleep(1.0)
        await asyncio.sleep(1.0)
        await load.stop()
        assert all(n >= 2 for n in load.connects), load.connects  # every client moved edge at least once
        return load

    try:
        load = asyncio.run(scenario())
    except BaseException:
        print(cluster.logs())
        raise
    assert load.refused == [], load.refused
    journal = cluster.journal()
    try:
        load.check_stored(journal, more_than=20)  # each acknowledged one exactly once; chatting went on throughout
    finally:
        journal.close()


def test_status_command_shows_members_and_shards(cluster: Cluster) -> None:
    import subprocess
    import sys

    cluster.start("state-node", "node-a")
    cluster.start("state-node", "node-b")
    cluster.start("edge", "edge-1")
    time.sleep(0.5)  # the allocator has written the map for both nodes
    done = subprocess.run([sys.executable, "-m", "ops.cli", "status"], env=cluster.env("ops"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "node-a" in out and "node-b" in out and "edge-1" in out and "shard map v" in out
    assert "Lot: node-a=4, node-b=4" in out and "UNOWNED" not in out
    import re
    import urllib.request

    metrics_url = re.search(r"metrics: (\S+)\)", cluster.processes["node-a"].ready_line).group(1)  # type: ignore[union-attr]
    metrics = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    assert 'xplatform_cluster_ownership_state{state="serving"} 1.0' in metrics
    assert "xplatform_node_messages_total" in metrics or "xplatform_node_entities_active" in metrics
    missing = subprocess.run([sys.executable, "-m", "ops.cli", "status"],
                             env={**cluster.env("ops"), "XPLATFORM_CLUSTER_NAME": "no-such-cluster"},
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "StatusError: no cluster named 'no-such-cluster'" in missing.stderr
