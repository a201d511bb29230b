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

``--heavy``: warm against cold takeover of entities whose cold load is slow (issue 13).

    python -m loadtests.bench_failover --heavy [--kills 10] [--heavy-lots 20] [--heavy-events 50000]
                                       [--small 10000] [--small-loaded 12] [--quick]

Two clusters in the same run, one after the other, on the same ZooKeeper and PostgreSQL
servers, each started as the README starts one (ops/local/cluster.py: 3 state nodes, 2
edges): first with hot standbys (layout ``"mirrors": 1`` for every category), then without
(``"mirrors": 0``). Before each, ``--heavy-lots`` HeavyLots (the auction's Lot; snapshots
follow XPLATFORM_SNAPSHOT_EVERY, set beyond reach for the run) with ``--heavy-events``
events each and no snapshot, and ``--small`` small Lots of ~10 events, are written to the
store in bulk from the entities' own events (loadtests/heavy_lots.py: a cold load of a
heavy lot, read + replay, is printed as ``heavy_cold_load_s``). The load process keeps a
chat client on every heavy lot and on ``--small-loaded`` small lots. Then ``--kills``
times: kill -9 of the owner of a heavy lot, and the node started again; with standbys,
the next kill waits until every node's mirror is caught up again (lag <= 100 events, as many mirrored
entities as the map gives it to stand by for). Per kill, per kind (heavy, small): the
longest time from the kill until a lot the dead node served answered its client again
(the load process's clock). The default 50,000 events per heavy lot make set-up ~15 s a
phase on our 2-core machines; ``--quick`` is a smoke run (2 heavy lots of 2,000 events,
200 small lots, 2 kills).

JSON (``--heavy``): warm_failover_p50_s/_max_s (heavy lots, with standbys),
cold_failover_p50_s/_max_s (heavy lots, without), small_failover_p50_s (small lots, with
standbys; ``cold_small_failover_p50_s`` without), lost_acks (both phases), mirror_bytes_per_entity
(the nodes' xplatform_mirror_bytes / xplatform_mirror_entities at the end of the warm phase),
heavy_state_bytes, takeovers (warm/cold counted by the survivors per phase), standby_warmup_s
(per kill: from the restarted node's start until every mirror was caught up), served_again (kills
after which every lot of the dead node was written to again within SERVED_AGAIN_TIMEOUT_S: each kill
waits for that, and after the node is back for every loaded lot, before the next), ratios
{cold_vs_warm_p50 (target >= 3), warm_heavy_vs_small_p50 (target <= 1.5)},
targets_met {warm_3x_faster_than_cold, warm_heavy_within_1_5x_of_small, warm_max_le_1s}.
"""

from __future__ import annotations

import argparse
import time
import uuid

from domain import EntityRef
from domain.auction.lot import Lot
from infrastructure.persistence import RecorderJournal
from infrastructure.runtime.sharding import shard_of
from infrastructure.settings import Settings
from loadtests import heavy_lots
from loadtests.common import emit, median
from loadtests.entities import HeavyLot
from loadtests.lot_load import (
    SETTLE_S,
    SHARDS,
    WARM_UP_S,
    LoadProcess,
    LoadReport,
    gap_across,
    longest_gap,
    lost_acks,
    lot_owners,
    zookeeper_settings,
)
from ops.local.cluster import Cluster, ClusterProcess
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


HEAVY_ENV = {"XPLATFORM_ENTITIES": "domain.auction:ENTITIES,domain.presence:ENTITIES,loadtests.entities:HeavyLot",
             "XPLATFORM_SNAPSHOT_EVERY": str(10**9)}
"""What every process of a --heavy cluster gets: the heavy lots' class, and no snapshots."""
HEAVY_PACE_S = 0.05
"""Pause between a --heavy client's messages: 32 clients (20 heavy + 12 small lots) at ~20
msg/s each write ~640 msg/s, close to the plain run's 12 clients at the load's default pace
(~480 msg/s), so the 2-core machine is loaded alike."""
WARM_CHECK_S = 2.5
"""A mirror is taken as warm when it looked caught up twice this far apart with the same map
(more than the feed's lag count interval, 1 s: a rescan that just began has counted)."""
WARM_TIMEOUT_S = 600.0
LAG_UNKNOWN = float("inf")
WARM_LAG_EVENTS = 100
"""A mirror within this many events of the store counts as caught up: under the live load a
count of exactly 0 is rare (events keep arriving), while one that is scanning the store
again counts thousands (up to the feed's cap of 10,000)."""


def _layout(mirrors: int) -> str:
    return f'[{{"group": "default", "categories": ["*"], "mirrors": {mirrors}}}]'


def _kill(cluster: Cluster, victim: str, supervised: bool) -> float:
    """kill -9 of ``victim`` (its node, not its supervisor); the moment, on the monotonic clock."""
    if supervised:
        cluster.processes[victim].kill9_child()
    else:
        cluster.processes[victim].kill9()
    return time.monotonic()


def _bring_back(cluster: Cluster, victim: str, supervised: bool, **env: str) -> None:
    """Until ``victim`` serves again: its supervisor restarted it, or we start it again."""
    if supervised:
        if not cluster.wait_member_back(victim, 30):
            raise RuntimeError(f"supervisor did not restart {victim}:\n{cluster.processes[victim].log()}")
    else:
        cluster.wait_member_gone(victim)  # its old session must have expired
        cluster.start("state-node", victim, 30.0, False, **env)


def _state_nodes(cluster: Cluster) -> dict[str, ClusterProcess]:
    return {name: p for name, p in cluster.processes.items() if name.startswith("node-") and p.process.poll() is None}


def _counted(cluster: Cluster, sample: str) -> dict[str, float]:
    return {name: p.metrics().get(sample, 0.0) for name, p in _state_nodes(cluster).items()}


def _wait_standbys_warm(cluster: Cluster, refs: list[EntityRef]) -> float:
    """Until every state node's mirror is caught up (lag at most WARM_LAG_EVENTS) and holds at least the entities of
    ``refs`` the map gives it to stand by for, seen twice WARM_CHECK_S apart with the same map;
    returns how long it took (raises after WARM_TIMEOUT_S)."""
    started = time.monotonic()
    shards = {ref: (ref.category, shard_of(ref, SHARDS)) for ref in refs}
    seen_at: tuple[int, float] | None = None
    while time.monotonic() - started < WARM_TIMEOUT_S:
        assignment = cluster.assignment()
        expected: dict[str, int] = {}
        for key in shards.values():
            standby = assignment.standby(*key)
            if standby is not None:
                expected[standby.node] = expected.get(standby.node, 0) + 1
        nodes = _state_nodes(cluster)
        samples = {name: p.metrics() for name, p in nodes.items()}
        warm = len(nodes) == 3 and all(
            samples[name].get("xplatform_mirror_lag_events", LAG_UNKNOWN) <= WARM_LAG_EVENTS
            and samples[name].get("xplatform_mirror_entities", 0) >= expected.get(name, 0) for name in nodes)
        if not warm:
            seen_at = None
        elif seen_at is None or seen_at[0] != assignment.version:
            seen_at = (assignment.version, time.monotonic())
        elif time.monotonic() - seen_at[1] >= WARM_CHECK_S:
            return seen_at[1] - started
        time.sleep(0.25)
    raise RuntimeError(f"standbys not warm in {WARM_TIMEOUT_S} s:\n{cluster.logs()}")


SERVED_AGAIN_TIMEOUT_S = 180.0
"""How long a --heavy kill waits for the dead node's lots to be written to again (and, after
the node is back, for every loaded lot) before it goes on anyway: a cold takeover of lots
of 50,000 events takes seconds per lot on a busy 2-core machine."""


class _Progress:
    """The head version of each loaded lot's stream, read from the store as it grows: a lot
    whose stream grew since a moment was served (its client's chat messages are stored)."""

    def __init__(self, journal: RecorderJournal, seeded: dict[EntityRef, int]) -> None:
        self.journal, self.head = journal, dict(seeded)

    def heads(self, refs: list[EntityRef]) -> dict[EntityRef, int]:
        for ref in refs:
            self.head[ref] += len(self.journal.read(ref.stream_id, self.head[ref]))
        return {ref: self.head[ref] for ref in refs}

    def wait_grown(self, refs: list[EntityRef], timeout_s: float = SERVED_AGAIN_TIMEOUT_S) -> bool:
        """Until every stream of ``refs`` grew past the head it has now (False after ``timeout_s``)."""
        before, deadline = self.heads(refs), time.monotonic() + timeout_s
        waiting = list(refs)
        while waiting and time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.heads(waiting)
            waiting = [ref for ref in waiting if now[ref] <= before[ref]]
        return not waiting


def _first_answer_after(answered_at: list[float], moment: float) -> float:
    """Seconds from ``moment`` (a kill) to the client's first answer after it (inf: none)."""
    return next((at - moment for at in answered_at if at > moment), float("inf"))


def _heavy_phase(postgres: PostgresServer, zookeeper: ZooKeeperServer, args: argparse.Namespace, mirrors: int,
                 heavy: heavy_lots.History, small: heavy_lots.History) -> dict[str, object]:
    """One cluster (standbys or not): set-up, load, kills; what the clients and nodes saw."""
    tag = "w" if mirrors else "c"
    heavy_ids = [f"{tag}-heavy-{i}" for i in range(args.heavy_lots)]
    small_ids = [f"{tag}-lot-{i}" for i in range(args.small)]
    seeded_at = time.monotonic()
    written = heavy_lots.write(postgres, [(heavy, heavy_ids), (small, small_ids)])
    cold_load_s = heavy_lots.check_seeded(postgres, heavy, heavy_ids[0])
    heavy_lots.check_seeded(postgres, small, small_ids[0])
    seed_s = time.monotonic() - seeded_at
    env = {**HEAVY_ENV, "XPLATFORM_CLUSTER_LAYOUT": _layout(mirrors)}
    cluster = Cluster(zookeeper, postgres, name=f"heavy{tag}{uuid.uuid4().hex[:6]}", session_timeout_s=args.session)
    loaded = [("HeavyLot", i) for i in heavy_ids] + [("Lot", i) for i in small_ids[:args.small_loaded]]
    loaded_refs = [EntityRef(category, i) for category, i in loaded]
    seeded = {ref: len(heavy.events) if ref.category == "HeavyLot" else len(small.events) for ref in loaded_refs}
    progress = _Progress(cluster.journal(), seeded)
    refs = [EntityRef("HeavyLot", i) for i in heavy_ids] + [EntityRef("Lot", i) for i in small_ids]
    kills: list[dict[str, object]] = []
    warmups: list[float] = []
    takeovers = {"warm": 0.0, "cold": 0.0}
    try:
        for node in ("node-a", "node-b", "node-c"):
            cluster.start("state-node", node, 30.0, args.supervised, **env)
        edges = [cluster.start("edge", f"edge-{i}", 30.0, False, **env).ready_line.split("ready on ")[1].rstrip("/") for i in (1, 2)]
        if mirrors:
            warmups.append(_wait_standbys_warm(cluster, refs))
        load = LoadProcess(edges, [], args.pace, targets=loaded)
        try:
            load.wait_ready()
            time.sleep(WARM_UP_S)
            for k in range(args.kills):
                owners = {**cluster.owners("HeavyLot", heavy_ids, SHARDS),
                          **cluster.owners("Lot", small_ids[:args.small_loaded], SHARDS)}
                victim = owners[heavy_ids[k % len(heavy_ids)]]
                counters = {kind: _counted(cluster, f'xplatform_node_takeovers_total{{kind="{kind}"}}')
                            for kind in takeovers}
                victim_heavy = [i for i in heavy_ids if owners[i] == victim]
                victim_small = [i for i in small_ids[:args.small_loaded] if owners[i] == victim]
                killed = _kill(cluster, victim, args.supervised)
                kills.append({"at": killed, "victim": victim, "heavy": victim_heavy, "small": victim_small})
                if not args.supervised:
                    cluster.wait_member_gone(victim)
                # until the dead node's lots are served again (a cold takeover can outlast any fixed pause:
                # bringing the node back meanwhile would move them again before they ever answered)
                kills[-1]["served_again"] = progress.wait_grown([EntityRef("HeavyLot", i) for i in victim_heavy]
                                                                + [EntityRef("Lot", i) for i in victim_small])
                time.sleep(SETTLE_S)
                for kind, before in counters.items():
                    after = _counted(cluster, f'xplatform_node_takeovers_total{{kind="{kind}"}}')
                    takeovers[kind] += sum(after.get(n, 0.0) - v for n, v in before.items() if n != victim)
                restarted = time.monotonic()
                _bring_back(cluster, victim, args.supervised, **env)
                time.sleep(SETTLE_S)
                progress.wait_grown(loaded_refs)  # every lot answers again (those handed back to it too)
                if mirrors:
                    warmups.append(time.monotonic() - restarted - SETTLE_S + _wait_standbys_warm(cluster, refs))
            seen = load.finish()
        finally:
            load.kill()
        mirror = {"bytes": 0.0, "entities": 0.0}
        if mirrors:
            for p in _state_nodes(cluster).values():
                sample = p.metrics()
                mirror["bytes"] += sample.get("xplatform_mirror_bytes", 0.0)
                mirror["entities"] += sample.get("xplatform_mirror_entities", 0.0)
        lost = sum(lost_acks(progress.journal, ref.stream_id, seen.lots[ref.entity_id].acked, seeded[ref])
                   for ref in loaded_refs)
    finally:
        progress.journal.close()
        cluster.stop_all()
    heavy_times, small_times = [], []
    for kill in kills:
        at = float(kill["at"])  # type: ignore[arg-type]
        times = [_first_answer_after(seen.lots[i].answered_at, at) for i in kill["heavy"]]  # type: ignore[attr-defined]
        heavy_times.append(round(max(times), 3) if times else None)
        times = [_first_answer_after(seen.lots[i].answered_at, at) for i in kill["small"]]  # type: ignore[attr-defined]
        small_times.append(round(max(times), 3) if times else None)
    return {"heavy_failover_s": heavy_times, "small_failover_s": small_times, "lost_acks": lost,
            "served_again": sum(bool(k["served_again"]) for k in kills),
            "takeovers": takeovers, "standby_warmup_s": [round(w, 2) for w in warmups],
            "mirror_bytes_per_entity": round(mirror["bytes"] / mirror["entities"]) if mirror["entities"] else None,
            "events_written": written, "set_up_s": round(seed_s, 1), "heavy_cold_load_s": round(cold_load_s, 3),
            "client_errors": sum(seen.errors.values()), "acknowledged": sum(len(r.acked) for r in seen.lots.values()),
            "load_loop_lag": seen.loop_lag}


def _p50(values: list[float | None]) -> float:
    return round(median([v for v in values if v is not None]), 3)


def _max(values: list[float | None]) -> float:
    return round(max((v for v in values if v is not None), default=float("nan")), 3)


def heavy_main(args: argparse.Namespace) -> None:
    """``--heavy``: see the module docstring."""
    if args.quick:
        args.heavy_lots, args.heavy_events, args.small, args.small_loaded, args.kills = 2, 2000, 200, 2, 2
    heavy = heavy_lots.history(HeavyLot, args.heavy_events)
    small = heavy_lots.history(Lot, heavy_lots.SMALL_CHATS)
    postgres, zookeeper = PostgresServer.start(), ZooKeeperServer.start()
    try:  # with standbys first: the store then holds only that phase's lots while its feeds read it whole
        warm = _heavy_phase(postgres, zookeeper, args, 1, heavy, small)
        cold = _heavy_phase(postgres, zookeeper, args, 0, heavy, small)
    finally:
        zookeeper.destroy()
        postgres.stop()
    warm_p50, cold_p50 = _p50(warm["heavy_failover_s"]), _p50(cold["heavy_failover_s"])  # type: ignore[arg-type]
    small_p50, warm_max = _p50(warm["small_failover_s"]), _max(warm["heavy_failover_s"])  # type: ignore[arg-type]
    ratios = {"cold_vs_warm_p50": round(cold_p50 / warm_p50, 2) if warm_p50 else None,
              "warm_heavy_vs_small_p50": round(warm_p50 / small_p50, 2) if small_p50 else None}
    emit({"benchmark": "bench_failover", "mode": "heavy", "state_nodes": 3, "edges": 2, "kills": args.kills,
          "heavy_lots": args.heavy_lots, "heavy_events": len(heavy.events), "small_lots": args.small,
          "small_loaded": args.small_loaded, "zookeeper": zookeeper_settings(args.session, args.supervised),
          "warm_failover_p50_s": warm_p50, "warm_failover_max_s": warm_max,
          "cold_failover_p50_s": cold_p50, "cold_failover_max_s": _max(cold["heavy_failover_s"]),  # type: ignore[arg-type]
          "small_failover_p50_s": small_p50,
          "cold_small_failover_p50_s": _p50(cold["small_failover_s"]),  # type: ignore[arg-type]
          "lost_acks": int(warm["lost_acks"]) + int(cold["lost_acks"]),  # type: ignore[call-overload]
          "mirror_bytes_per_entity": warm["mirror_bytes_per_entity"], "heavy_state_bytes": heavy.state_bytes,
          "ratios": ratios,
          "targets_met": {"warm_3x_faster_than_cold": bool(ratios["cold_vs_warm_p50"] and ratios["cold_vs_warm_p50"] >= 3),
                          "warm_heavy_within_1_5x_of_small": bool(ratios["warm_heavy_vs_small_p50"]
                                                                  and ratios["warm_heavy_vs_small_p50"] <= 1.5),
                          "warm_max_le_1s": warm_max <= 1.0},
          "warm": warm, "cold": cold})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--lots", type=int, default=12)
    parser.add_argument("--session", type=float, default=None,
                        help="ZooKeeper session timeout, seconds (default: 0.6; with --supervised the settings' default)")
    parser.add_argument("--supervised", action="store_true", help="run every state node under its local supervisor")
    heavy = parser.add_argument_group("--heavy: warm (hot standbys) against cold takeover of slow-to-load lots")
    heavy.add_argument("--heavy", action="store_true", help="run the heavy-entity benchmark (see above)")
    heavy.add_argument("--heavy-lots", type=int, default=20)
    heavy.add_argument("--heavy-events", type=int, default=50_000,
                       help="chat messages per heavy lot since its (absent) snapshot; a cold load of one is ~1 s here")
    heavy.add_argument("--small", type=int, default=10_000, help="small lots written to the store")
    heavy.add_argument("--small-loaded", type=int, default=12, help="small lots with a client under load")
    heavy.add_argument("--pace", type=float, default=HEAVY_PACE_S,
                       help="pause between a client's messages, seconds (default: %(default)s)")
    heavy.add_argument("--quick", action="store_true", help="smoke sizes: 2 heavy lots of 2,000 events, 200 small, 2 kills")
    args = parser.parse_args(argv)
    if args.session is None:
        args.session = Settings().zk_session_timeout_s if args.supervised else 0.6
    if args.heavy:
        heavy_main(args)
        return
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
                lost += lost_acks(journal, f"Lot-{lot}", record.acked)
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
