"""Network and coordination faults with real processes: two state nodes and an edge as
subprocesses on loopback around a real ZooKeeper and PostgreSQL, websocket clients chatting
through the edge the whole time.

- ZooKeeper stops (shorter, then longer than the nodes' session timeout) and comes back:
  the nodes fence (nothing is acknowledged while they cannot vouch for their ownership),
  then serve again, without any process being restarted.
- The TCP connections between the edge and the state nodes are cut (a proxy owned by the
  test sits between them; the nodes publish its address, XPLATFORM_TRANSPORT_ADVERTISE):
  the edge reconnects, announces its interest again, pushes flow again.

After each: every acknowledged message is in the store exactly once, nothing is applied
twice, stream versions are contiguous and takeover epochs only grow.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from tests.support.chat_load import ChatLoad, PushWatcher
from tests.support.cluster import Cluster
from tests.support.servers import free_port
from tests.support.tcp_proxy import TcpProxy

FENCE_MARGIN_S = 0.5
"""A node fences as soon as kazoo sees its ZooKeeper connection drop (SUSPENDED), which is
milliseconds after the server process ends; a reply already on its way may still arrive
just after. From this long after the stop, no acknowledgement may arrive until ZooKeeper
is back."""


def edge_url(cluster: Cluster, name: str) -> str:
    return cluster.processes[name].ready_line.split("ready on ")[1].rstrip("/")


def transitions(cluster: Cluster, node: str) -> list[str]:
    """The node's ownership state changes so far, from its log ("serving -> fenced", ...)."""
    marker = f"ownership of {node}: "
    log = cluster.processes[node].log_path.read_text(errors="replace")
    return [line.split(marker, 1)[1].strip() for line in log.splitlines() if marker in line]


async def until(condition, timeout: float, step: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True


def test_zookeeper_restart_under_load_fences_then_resumes_without_process_restarts(cluster: Cluster) -> None:
    cluster.session_timeout_s = 2.0
    for node in ("node-a", "node-b"):
        cluster.start("state-node", node)
    cluster.start("edge", "edge-1")
    pids = {name: p.process.pid for name, p in cluster.processes.items()}
    lots = [f"zk-{uuid.uuid4().hex[:6]}-{i}" for i in range(4)]
    outages = (1.0, 4.0)  # shorter, then longer than the 2 s session timeout

    async def scenario() -> tuple[ChatLoad, list[dict[str, float]]]:
        load = ChatLoad([edge_url(cluster, "edge-1")], lots)
        load.start()
        phases: list[dict[str, float]] = []
        try:
            assert await until(lambda: all(len(load.acked[lot]) >= 5 for lot in lots), 15), load.acked
            for outage in outages:
                acked_before = sum(map(len, load.acked.values()))
                stopped = time.monotonic()
                await asyncio.to_thread(cluster.zookeeper.stop)
                down = time.monotonic()
                await asyncio.sleep(outage)
                restarting = time.monotonic()
                await asyncio.to_thread(cluster.zookeeper.start_again)
                up = time.monotonic()
                back = sum(map(len, load.acked.values()))
                phase = len(phases) + 1
                # Every node fenced once more and serves again (kazoo reconnects with backoff).
                served = await until(lambda phase=phase: all(
                    transitions(cluster, node).count("serving -> fenced") >= phase
                    and transitions(cluster, node)[-1].endswith("-> serving") for node in ("node-a", "node-b")), 30)
                assert served, f"a node is not serving 30 s after ZooKeeper's return:\n{cluster.logs()}"
                serving = time.monotonic()
                resumed = await until(lambda: all(any(at > up for _mid, at in load.acked[lot]) for lot in lots), 10)
                assert resumed, f"service did not resume on every lot after ZooKeeper's return:\n{cluster.logs()}"
                phases.append({"stopped": stopped, "down": down, "restarting": restarting, "up": up,
                               "serving": serving, "resumed": time.monotonic(), "acked_before": acked_before,
                               "acked_at_restart": back})
                await asyncio.sleep(1.0)  # serving normally again before the next phase
        finally:
            await load.stop()
        return load, phases

    started = time.monotonic()
    try:
        load, phases = asyncio.run(scenario())
    except BaseException:
        print(cluster.logs())
        print("----- zookeeper\n" + cluster.zookeeper.log())
        raise
    for outage, phase in zip(outages, phases, strict=True):
        fenced = load.acked_between(phase["down"] + FENCE_MARGIN_S, phase["restarting"])
        retried = [t for t in load.retryable if phase["down"] <= t <= phase["up"]]
        print(f"ZooKeeper down {outage:.1f} s: {len(retried)} retryable answers/timeouts while down, "
              f"every node serving {phase['serving'] - phase['up']:.2f} s and acks on every lot "
              f"{phase['resumed'] - phase['up']:.2f} s after it was back")
        assert fenced == [], f"acknowledged while ZooKeeper was down ({outage} s): {fenced}\n{cluster.logs()}"
        assert retried, f"no client was refused or kept waiting during the {outage} s outage"
    assert load.refused == [], load.refused
    for name, pid in pids.items():  # no process restarted or died
        assert cluster.processes[name].process.pid == pid and cluster.processes[name].process.poll() is None, name
    for node in ("node-a", "node-b"):
        changes = transitions(cluster, node)
        print(f"{node}: {' | '.join(changes)}")
        assert changes.count("serving -> fenced") == len(outages), changes  # fenced once per outage
        assert changes[-1].endswith("-> serving"), changes
    journal = cluster.journal()
    try:
        load.check_stored(journal, more_than=20)
    finally:
        journal.close()
    print(f"wall {time.monotonic() - started:.1f} s; acknowledged {sum(map(len, load.acked.values()))}")


def test_cut_edge_to_node_connections_reconnect_and_pushes_resume(cluster: Cluster) -> None:
    proxies: dict[str, TcpProxy] = {}
    try:
        for node in ("node-a", "node-b"):
            port = free_port()
            proxies[node] = TcpProxy(port).start()
            cluster.start("state-node", node, XPLATFORM_TRANSPORT_PORT=str(port),
                          XPLATFORM_TRANSPORT_ADVERTISE=proxies[node].address)
        cluster.start("edge", "edge-1")
        _run_cut_scenario(cluster, proxies)
    finally:
        for proxy in proxies.values():
            proxy.stop()


def _run_cut_scenario(cluster: Cluster, proxies: dict[str, TcpProxy]) -> None:
    url = edge_url(cluster, "edge-1")
    lots = [f"cut-{uuid.uuid4().hex[:6]}-{i}" for i in range(4)]
    cuts: list[tuple[float, int, int]] = []  # (when, connections cut, accepted before)
    after_cut_s = 2.0  # load between a cut and the next (or the end)

    def accepted() -> int:
        return sum(p.accepted for p in proxies.values())

    async def scenario() -> tuple[ChatLoad, dict[str, PushWatcher], list[int]]:
        watchers = {lot: await PushWatcher.open([url], lot, f"w{i}") for i, lot in enumerate(lots)}
        load = ChatLoad([url], lots)
        load.start()
        reconnected: list[int] = []
        try:
            assert await until(lambda: all(len(load.acked[lot]) >= 5 for lot in lots), 15), load.acked
            for _ in range(2):
                before = accepted()
                n = sum(await asyncio.gather(*(asyncio.to_thread(p.cut) for p in proxies.values())))
                cuts.append((time.monotonic(), n, before))
                # The edge reconnects (the next message or its interest re-announcement opens a new link).
                assert await until(lambda before=before: accepted() > before, 10), "no reconnect after the cut"
                reconnected.append(accepted() - before)
                await asyncio.sleep(after_cut_s)
        finally:
            await load.stop()
        cuts.append((time.monotonic(), 0, 0))  # the end of the last window
        await asyncio.sleep(0.5)  # the last pushes arrive
        for watcher in watchers.values():
            await watcher.close()
        return load, watchers, reconnected

    started = time.monotonic()
    try:
        load, watchers, reconnected = asyncio.run(scenario())
    except BaseException:
        print(cluster.logs())
        raise
    print(f"cuts (connections cut, new connections after): {[(c[1], r) for c, r in zip(cuts, reconnected)]}")
    assert all(n >= 1 for _when, n, _before in cuts[:-1]), cuts  # each cut really ended live connections
    assert load.refused == [], load.refused
    for lot, watcher in watchers.items():
        texts = [text for text, _at in watcher.texts]
        assert len(texts) == len(set(texts)), f"{lot}: a push arrived twice"
        for (cut_at, _, _), (next_at, _, _) in zip(cuts, cuts[1:]):
            # Pushes are at most once: one caused by a message in flight at the cut may be lost
            # with the old link. Everything acknowledged once the edge is back must be pushed.
            expected = [f"m{mid.rsplit('-', 1)[1]}" for mid, at in load.acked[lot] if cut_at + 0.5 < at < next_at]
            assert len(expected) >= 5, f"{lot}: chatting did not go on after the cut: {expected}"
            lost = sorted(set(expected) - set(texts))
            assert not lost, f"{lot}: pushes of messages sent after the reconnect never arrived: {lost}"
    journal = cluster.journal()
    try:
        load.check_stored(journal, more_than=20)
    finally:
        journal.close()
    print(f"scenario wall {time.monotonic() - started:.1f} s; acknowledged {sum(map(len, load.acked.values()))}")
