"""Graceful drain of a state node under load (rolling-update step), real processes.

    python -m loadtests.bench_drain [--drains 3] [--lots 12] [--session 0.6]

Same setup as bench_failover (ZooKeeper, PostgreSQL, 3 state nodes, 2 edges; the load in a
process of its own, ``loadtests/lot_load.py``: one chat client per lot posting back to
back). ``--drains`` times: SIGTERM a node serving lots (it fences, flushes, leaves; the next
owner serves), then start it again (its shards come back: another handoff). Measured as a
client lives it: the longest any lot went without an answer around each drain and rejoin
(``unavailable_ms``, one per drain; ``max_unavailable_ms`` the longest), and every error a
client saw (``client_errors``: error replies and failed requests, by reason), next to the
ZooKeeper settings used (``zookeeper``).
"""

from __future__ import annotations

import argparse
import time
import uuid

from loadtests.common import emit
from loadtests.lot_load import SETTLE_S, WARM_UP_S, LoadProcess, LoadReport, longest_gap, lot_owners, zookeeper_settings
from ops.local.cluster import Cluster
from ops.local.servers import PostgresServer, ZooKeeperServer

LEAVE_S = 1.0
"""Load while the drained node is away, before it starts again."""


def _run(cluster: Cluster, edges: list[str], lots: list[str], drains: int) -> tuple[list[tuple[float, float]], LoadReport]:
    """Drain and restart nodes under the load; returns each drain's window (start, end)."""
    load = LoadProcess(edges, lots)
    try:
        load.wait_ready()
        time.sleep(WARM_UP_S)
        windows: list[tuple[float, float]] = []
        for k in range(drains):
            victim = lot_owners(cluster, lots)[lots[k % len(lots)]]
            started = time.monotonic()
            cluster.processes[victim].stop()  # SIGTERM: drain
            time.sleep(LEAVE_S)
            cluster.wait_member_gone(victim)
            cluster.start("state-node", victim)  # rejoin: shards move back (another handoff)
            time.sleep(SETTLE_S)
            windows.append((started, time.monotonic()))
        return windows, load.finish()
    finally:
        load.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drains", type=int, default=3)
    parser.add_argument("--lots", type=int, default=12)
    parser.add_argument("--session", type=float, default=Cluster.session_timeout_s,
                        help="ZooKeeper session timeout, seconds (default: %(default)s)")
    args = parser.parse_args(argv)
    postgres, zookeeper = PostgresServer.start(), ZooKeeperServer.start()
    cluster = Cluster(zookeeper, postgres, name=f"drain{uuid.uuid4().hex[:6]}", session_timeout_s=args.session)
    try:
        for node in ("node-a", "node-b", "node-c"):
            cluster.start("state-node", node)
        edges = [cluster.start("edge", f"edge-{i}").ready_line.split("ready on ")[1].rstrip("/") for i in (1, 2)]
        windows, seen = _run(cluster, edges, [f"lot-{i}" for i in range(args.lots)], args.drains)
    finally:
        cluster.stop_all()
        zookeeper.destroy()
        postgres.stop()
    gaps = [max(longest_gap(r.answered_at, start, end) for r in seen.lots.values()) for start, end in windows]
    emit({"benchmark": "bench_drain", "state_nodes": 3, "edges": 2, "drains": args.drains,
          "zookeeper": zookeeper_settings(args.session, False),
          "unavailable_ms": [round(g * 1000, 1) for g in gaps],
          "max_unavailable_ms": round(max(gaps, default=0.0) * 1000, 1),
          "client_errors": sum(seen.errors.values()), "error_reasons": dict(seen.errors),
          "acknowledged": sum(len(r.acked) for r in seen.lots.values()), "load_loop_lag": seen.loop_lag})


if __name__ == "__main__":
    main()
