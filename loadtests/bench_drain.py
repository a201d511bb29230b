"""Graceful drain of a state node under load (rolling-update step), real processes.

    python -m loadtests.bench_drain [--drains 3] [--lots 12]

Same setup as bench_failover (ZooKeeper, PostgreSQL, 3 state nodes, 2 edges, one chat
client per lot posting without pause). ``--drains`` times: SIGTERM a node serving lots (it
fences, flushes, leaves; the next owner serves), then start it again (its shards come back:
another handoff). Measures the longest time any lot went without an acknowledged message
around those moves (``max_unavailable_ms``) and every error a client saw (``client_errors``:
error replies and failed requests).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import Counter

from edge.client import connect
from loadtests.bench_failover import PACE_S, _owners, _token, _wait_gone
from loadtests.common import emit
from ops.local.cluster import Cluster
from ops.local.servers import PostgresServer, ZooKeeperServer


async def _run(cluster: Cluster, edges: list[str], lots: list[str],
               drains: int) -> tuple[float, int, int, dict[str, int]]:
    stop = asyncio.Event()
    gaps = {"max": 0.0}
    errors = {"n": 0}
    reasons: Counter[str] = Counter()
    acked = {"n": 0}
    measuring = {"on": False}

    async def chatter(i: int, lot: str) -> None:
        client = await connect(edges[i % len(edges)], "Lot", lot, _token(f"u{i}"), request_timeout_s=10)
        last = time.monotonic()
        n = 0
        try:
            while not stop.is_set():
                n += 1
                try:
                    reply = await client.request({"type": "chat", "text": f"hi {n}"}, message_id=f"{lot}-{n}", timeout=10)
                except Exception as exc:
                    errors["n"] += 1
                    reasons[f"{type(exc).__name__}: {exc}"[:80]] += 1
                    # Yield before trying again: a request that fails at once (a client that
                    # gave up) would otherwise spin this loop and starve every other task,
                    # the benchmark's own deadline included (seen: a hung smoke run).
                    await asyncio.sleep(0.05)
                    continue
                now = time.monotonic()
                if reply.ok:
                    acked["n"] += 1
                    if measuring["on"]:
                        gaps["max"] = max(gaps["max"], now - last)
                    last = now
                else:
                    errors["n"] += 1
                    reasons[f"{reply.code}: {reply.reason}"[:80]] += 1
                await asyncio.sleep(PACE_S)
        finally:
            await client.close()

    tasks = [asyncio.create_task(chatter(i, lot)) for i, lot in enumerate(lots)]
    await asyncio.sleep(2.0)
    measuring["on"] = True
    for k in range(drains):
        # off the clients' loop: a ZooKeeper round trip here stalled every client ~110 ms,
        # which the gaps then counted as unavailability
        victim = (await asyncio.to_thread(_owners, cluster, lots))[lots[k % len(lots)]]
        await asyncio.to_thread(cluster.processes[victim].stop)  # SIGTERM: drain (off the clients' loop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(_wait_gone, cluster, victim)
        await asyncio.to_thread(cluster.start, "state-node", victim)  # rejoin: shards move back (another handoff)
        await asyncio.sleep(1.5)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return gaps["max"], errors["n"], acked["n"], dict(reasons)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drains", type=int, default=3)
    parser.add_argument("--lots", type=int, default=12)
    args = parser.parse_args(argv)
    postgres, zookeeper = PostgresServer.start(), ZooKeeperServer.start()
    cluster = Cluster(zookeeper, postgres, name=f"drain{uuid.uuid4().hex[:6]}")
    try:
        for node in ("node-a", "node-b", "node-c"):
            cluster.start("state-node", node)
        edges = [cluster.start("edge", f"edge-{i}").ready_line.split("ready on ")[1].rstrip("/") for i in (1, 2)]
        gap, errors, acked, reasons = asyncio.run(_run(cluster, edges, [f"lot-{i}" for i in range(args.lots)], args.drains))
    finally:
        cluster.stop_all()
        zookeeper.destroy()
        postgres.stop()
    emit({"benchmark": "bench_drain", "state_nodes": 3, "edges": 2, "drains": args.drains,
          "max_unavailable_ms": round(gap * 1000, 1), "client_errors": errors, "error_reasons": reasons, "acknowledged": acked})


if __name__ == "__main__":
    main()
