"""Crash failover of a state node under load, with real processes on loopback.

    python -m loadtests.bench_failover [--kills 10] [--lots 12] [--session 0.6] [--supervised]

ZooKeeper, PostgreSQL, 3 state nodes and 2 edges run as local processes (ops/local). The
load runs in a process of its own (``loadtests/lot_load.py``): one chat client per lot
(half through each edge) posting messages back to back, each resent with the same ID until
acknowledged (only after its event is durable). Then, ``--kills`` times: kill -9 one state
node serving lots and start it again. Measured as a client lives it: for every lot the
killed node served, the gap between its last answer before the kill and its first answer
after it; per kill the longest of those (``failover_s``). ``longest_gap_s`` is the longest
any lot went without an answer over the whole run (restarts and the handoffs back
included). At the end every acknowledged message must be in its lot's stream exactly once
(``lost_acks`` counts those that are not).

Two ways to be fast: short sessions (the default here, 0.6 s: a crash is seen when the
session expires), or ``--supervised``: every state node runs under ``xplatform state-node
--supervised`` with the settings' default session (2 s, safe against pauses); the kill hits
the node, its supervisor ends the dead node's session at once and restarts it. The JSON
reports the gaps next to those settings (``zookeeper``).

JSON: failover_p50_s, failover_max_s, failover_s, longest_gap_s, lost_acks, client_errors,
zookeeper {session_timeout_s, supervised}, load_loop_lag (the load process's own loop).
"""

from __future__ import annotations

import argparse
import time
import uuid

import msgpack

from infrastructure.settings import Settings
from loadtests.common import emit, median
from loadtests.lot_load import (
    SETTLE_S,
    WARM_UP_S,
    LoadProcess,
    LoadReport,
    gap_across,
    longest_gap,
    lot_owners,
    zookeeper_settings,
)
from ops.local.cluster import Cluster
from ops.local.servers import PostgresServer, ZooKeeperServer


def _run(cluster: Cluster, edges: list[str], lots: list[str], kills: int,
         supervised: bool = False) -> tuple[list[tuple[float, list[str]]], float, float, LoadReport]:
    """Kill and restart nodes under the load; returns (kill time, lots of the killed node)
    per kill, the window measured, and what the clients saw."""
    load = LoadProcess(edges, lots)
    try:
        load.wait_ready()
        time.sleep(WARM_UP_S)
        events: list[tuple[float, list[str]]] = []
        started = time.monotonic()
        for k in range(kills):
            owners = lot_owners(cluster, lots)
            victim = owners[lots[k % len(lots)]]  # a node that serves lots right now
            if supervised:
                cluster.processes[victim].kill9_child()  # the node, not its supervisor
            else:
                cluster.processes[victim].kill9()
            events.append((time.monotonic(), [lot for lot, node in owners.items() if node == victim]))
            if supervised:  # its supervisor restarts it
                if not cluster.wait_member_back(victim, 30):
                    raise RuntimeError(f"supervisor did not restart {victim}:\n{cluster.processes[victim].log()}")
            else:
                cluster.wait_member_gone(victim)  # its old session must have expired
                cluster.start("state-node", victim)  # back to three nodes
            time.sleep(SETTLE_S)
        ended = time.monotonic()
        return events, started, ended, load.finish()
    finally:
        load.kill()


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
        events, started, ended, seen = _run(cluster, edges, lots, args.kills, args.supervised)
        journal = cluster.journal()
        lost = 0
        try:
            for lot, record in seen.lots.items():
                stored = [msgpack.unpackb(e.state)["message_id"] for e in journal.read(f"Lot-{lot}")
                          if e.topic.endswith("Chatted")]
                lost += sum(1 for mid in record.acked if stored.count(mid) != 1)
        finally:
            journal.close()
    finally:
        cluster.stop_all()
        zookeeper.destroy()
        postgres.stop()
    times: list[float] = []
    for killed, affected in events:
        gaps = [gap_across(seen.lots[lot].answered_at, killed) for lot in affected]
        times.append(float("inf") if None in gaps else max(g for g in gaps if g is not None))
    emit({"benchmark": "bench_failover", "state_nodes": 3, "edges": 2, "kills": args.kills,
          "zookeeper": zookeeper_settings(args.session, args.supervised),
          "session_timeout_s": args.session, "supervised": args.supervised,
          "failover_p50_s": round(median(times), 3), "failover_max_s": round(max(times), 3),
          "failover_s": [round(t, 3) for t in times],
          "longest_gap_s": round(max(longest_gap(r.answered_at, started, ended) for r in seen.lots.values()), 3),
          "lost_acks": lost, "client_errors": sum(seen.errors.values()), "error_reasons": dict(seen.errors),
          "acknowledged": sum(len(r.acked) for r in seen.lots.values()), "load_loop_lag": seen.loop_lag})


if __name__ == "__main__":
    main()
