"""Crash failover of a state node under load, with real processes on loopback.

    python -m loadtests.bench_failover [--kills 10] [--lots 12] [--session 0.6] [--supervised]

ZooKeeper, PostgreSQL, 3 state nodes and 2 edges run as local processes (ops/local). One
chat client per lot (half through each edge) posts messages without pause; a posted chat
message is acknowledged only after its event is durable. Then, ``--kills`` times: kill -9
one state node, measure the time until every lot it owned has acknowledged a message
again, and start the node again. At the end every acknowledged message must be in its
lot's stream exactly once (``lost_acks`` counts those that are not).

Two ways to be fast: short sessions (the default here, 0.6 s: a crash is seen when the
session expires), or ``--supervised``: every state node runs under ``xplatform state-node
--supervised`` with the settings' default session (2 s, safe against pauses); the kill hits
the node, its supervisor ends the dead node's session at once and restarts it.

JSON: failover_p50_s, failover_max_s, lost_acks (+ per-kill times, messages acknowledged).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import msgpack

from edge.client import connect
from infrastructure.settings import Settings
from loadtests.common import emit, median
from ops.local.cluster import Cluster, cluster_token
from ops.local.servers import PostgresServer, ZooKeeperServer

SHARDS = 8

PACE_S = 0.025
"""Pause between a client's messages: with a cluster round trip of a few ms this keeps each
client under the edge's default per-connection limit (50 msg/s, burst 100). Faster, the
edge rightly closes it 1008 for flooding (seen once the round trip got faster)."""


def _token(sub: str) -> str:
    return cluster_token(sub, "viewer", ttl_s=3600)


def _owners(cluster: Cluster, lots: list[str]) -> dict[str, str]:
    return cluster.owners("Lot", lots, SHARDS)


async def _run(cluster: Cluster, edges: list[str], lots: list[str], kills: int,
               supervised: bool = False) -> tuple[list[float], dict[str, list[str]]]:
    acked: dict[str, list[str]] = {lot: [] for lot in lots}
    last_ack: dict[str, float] = {lot: 0.0 for lot in lots}
    answered: dict[str, float] = {lot: 0.0 for lot in lots}
    stop = asyncio.Event()

    async def chatter(i: int, lot: str) -> None:
        client = await connect(edges[i % len(edges)], "Lot", lot, _token(f"u{i}"), request_timeout_s=10)
        n = 0
        try:
            while not stop.is_set():
                n += 1
                mid = f"{lot}-m{n}"
                sent = time.monotonic()
                while not stop.is_set():  # resend with the same ID until answered
                    try:
                        reply = await client.request({"type": "chat", "text": f"hello {n}"}, message_id=mid, timeout=10)
                    except Exception:
                        await asyncio.sleep(0.05)
                        continue
                    if reply.ok:
                        acked[lot].append(mid)
                        last_ack[lot] = sent  # "answers again": a message SENT after the kill was acknowledged
                        answered[lot] = time.monotonic()
                        break
                    await asyncio.sleep(0.02)
                await asyncio.sleep(PACE_S)
        finally:
            await client.close()

    tasks = [asyncio.create_task(chatter(i, lot)) for i, lot in enumerate(lots)]
    await asyncio.sleep(2.0)  # warm up: every lot active
    times: list[float] = []
    for k in range(kills):
        owners = await asyncio.to_thread(_owners, cluster, lots)  # off the clients' loop
        victim = owners[lots[k % len(lots)]]  # a node that serves lots right now
        affected = [lot for lot, node in owners.items() if node == victim]
        if supervised:
            await asyncio.to_thread(cluster.processes[victim].kill9_child)  # the node, not its supervisor
        else:
            await asyncio.to_thread(cluster.processes[victim].kill9)
        killed = time.monotonic()
        deadline = killed + 30
        while time.monotonic() < deadline and not all(last_ack[lot] > killed for lot in affected):
            await asyncio.sleep(0.01)
        times.append(max(answered[lot] for lot in affected) - killed)
        if supervised:  # its supervisor restarts it
            if not await asyncio.to_thread(cluster.wait_member_back, victim, 30):
                raise RuntimeError(f"supervisor did not restart {victim}:\n{cluster.processes[victim].log()}")
        else:
            await asyncio.to_thread(_wait_gone, cluster, victim)  # its old session must have expired
            await asyncio.to_thread(cluster.start, "state-node", victim)  # back to three nodes (off the clients' loop)
        await asyncio.sleep(1.5)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return times, acked


def _wait_gone(cluster: Cluster, node: str) -> None:
    cluster.wait_member_gone(node)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--lots", type=int, default=12)
    parser.add_argument("--session", type=float, default=None,
                        help="ZooKeeper session timeout, seconds (default: 0.6; with --supervised the settings' default)")
    parser.add_argument("--supervised", action="store_true", help="run every state node under its local supervisor")
    args = parser.parse_args(argv)
    if args.session is None:
        args.session = Settings().zk_session_timeout_s if args.supervised else 0.6
    postgres, zookeeper = PostgresServer.start(), ZooKeeperServer.start()
    cluster = Cluster(zookeeper, postgres, name=f"bench{uuid.uuid4().hex[:6]}", session_timeout_s=args.session)
    try:
        for node in ("node-a", "node-b", "node-c"):
            cluster.start("state-node", node, supervised=args.supervised)
        edges = [cluster.start("edge", f"edge-{i}").ready_line.split("ready on ")[1].rstrip("/") for i in (1, 2)]
        lots = [f"lot-{i}" for i in range(args.lots)]
        times, acked = asyncio.run(_run(cluster, edges, lots, args.kills, args.supervised))
        journal = cluster.journal()
        lost = 0
        try:
            for lot, mids in acked.items():
                stored = [msgpack.unpackb(e.state)["message_id"] for e in journal.read(f"Lot-{lot}")
                          if e.topic.endswith("Chatted")]
                lost += sum(1 for mid in mids if stored.count(mid) != 1)
        finally:
            journal.close()
    finally:
        cluster.stop_all()
        zookeeper.destroy()
        postgres.stop()
    emit({"benchmark": "bench_failover", "state_nodes": 3, "edges": 2, "kills": args.kills, "session_timeout_s": args.session,
          "supervised": args.supervised,
          "failover_p50_s": round(median(times), 3), "failover_max_s": round(max(times), 3),
          "failover_s": [round(t, 3) for t in times], "lost_acks": lost,
          "acknowledged": sum(len(m) for m in acked.values())})


if __name__ == "__main__":
    main()
