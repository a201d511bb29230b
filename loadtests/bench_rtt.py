"""Client → edge → entity → durable → edge → client round trip over real websockets.

    python -m loadtests.bench_rtt [--connections 200] [--rate 2000] [--seconds 10] [--same-process]
    python -m loadtests.bench_rtt --cluster [--store sqlite|postgres] [--auth on|off|both]

The platform (SQLite file, in-process transport) and its public edge run in this process;
the clients run in a separate process by default (``--same-process`` puts them on the same
event loop, which then does both sides' work). Each of ``--connections`` websockets talks
to its own ``Tally`` entity; MSGs are sent open loop at ``--rate`` per second in total
(round robin), each an ``add`` with one event, and the time from send to its REPLY (which
leaves only after the event is durable) is measured at the client.

Last stdout line: JSON with ``p50_ms``, ``p99_ms``, ``rate`` (achieved send rate), ``errors``.

``--cluster --auth both`` measures what transport authentication costs: the same load on a
cluster with authenticated links (the default) and on one with ``XPLATFORM_CLUSTER_INSECURE=1``,
one after the other in this run (off first), and adds ``auth_on``/``auth_off`` (p50, p99, rate,
errors) and ``auth_p50_overhead`` (on/off - 1) to the JSON. The HMAC handshake runs once per
link at start, so the expected overhead per message is nil (noise); the top-level figures are
the authenticated run's.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
import uuid
from typing import Any

import aiohttp
import msgpack
from aiohttp import web

from edge import protocol
from edge.config import EdgeConfig
from infrastructure.gc_pauses import GcPauses
from infrastructure.settings import Settings
from loadtests.common import LoopLag, emit, percentile
from loadtests.entities import Tally
from ops.wiring.dev import build_platform, dev_app


async def drive(base_url: str, connections: int, rate: float, seconds: float, token: str | None = None,
                category: str = "Tally", body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Open ``connections`` websockets, send open loop, return latencies' percentiles.
    Without ``token`` one is fetched from the dev server's /dev/token."""
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    errors = 0
    lag = LoopLag().start()
    # limit=0: a websocket holds its connection, and the default pool stops at 100
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        if token is None:
            async with session.get(f"{base_url}/dev/token", params={"sub": "bench", "role": "bench"}) as resp:
                token = (await resp.json())["token"]
        headers = {"Authorization": f"Bearer {token}"}

        async def open_one(i: int) -> aiohttp.ClientWebSocketResponse:
            ws = await session.ws_connect(f"{base_url.replace('http', 'ws', 1)}/ws/{category}/rtt-{i}?cid={uuid.uuid4()}",
                                          protocols=(protocol.SUBPROTOCOL,), headers=headers, max_msg_size=0)
            welcome = msgpack.unpackb((await ws.receive()).data)
            assert welcome[0] == protocol.WELCOME, welcome
            return ws

        sockets: list[aiohttp.ClientWebSocketResponse] = []
        for start in range(0, connections, 50):
            sockets += await asyncio.gather(*(open_one(i) for i in range(start, min(connections, start + 50))))

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal errors
            async for msg in ws:
                frame = msgpack.unpackb(msg.data)
                if frame[0] == protocol.REPLY:
                    started = sent_at.pop(frame[1], None)
                    if started is not None:
                        latencies.append(time.perf_counter() - started)
                        errors += 0 if frame[2] else 1

        readers = [asyncio.create_task(read(ws)) for ws in sockets]
        payload = msgpack.packb(body or {"type": "add", "n": 1})

        async def run(total: int, record: bool) -> float:
            started = time.perf_counter()
            sent = 0
            while sent < total:
                due = min(total, int((time.perf_counter() - started) * rate) + 1)
                while sent < due:
                    mid = uuid.uuid4().hex
                    if record:
                        sent_at[mid] = time.perf_counter()
                    await sockets[sent % len(sockets)].send_bytes(protocol.pack([protocol.MSG, mid, payload]))
                    sent += 1
                await asyncio.sleep(0.0005)
            return total / (time.perf_counter() - started)

        await run(int(rate), record=False)  # one second of warm-up (activations, JIT-free caches)
        await asyncio.sleep(0.5)
        achieved = await run(int(rate * seconds), record=True)
        deadline = time.monotonic() + 10
        while sent_at and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        errors += len(sent_at)
        for ws in sockets:
            await ws.close()
        for task in readers:
            task.cancel()
    return {"p50_ms": percentile(latencies, 50) * 1000, "p90_ms": percentile(latencies, 90) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000, "max_ms": max(latencies, default=0.0) * 1000,
            "rate": achieved, "errors": errors, "replies": len(latencies), "client_loop_lag": lag.stop()}


def _client_process(base_url: str, connections: int, rate: float, seconds: float, out: Any,
                    token: str | None = None, category: str = "Tally", body: dict[str, Any] | None = None) -> None:
    pauses = GcPauses.install()
    result = asyncio.run(drive(base_url, connections, rate, seconds, token, category, body))
    out.put({**result, "client_gc": pauses.summary()})


def bench_cluster(connections: int, rate: float, seconds: float, store: str, auth: str = "on") -> dict[str, Any]:
    """Across processes: clients (one process) -> edge process -> state node process -> back,
    ZooKeeper and PostgreSQL as local servers. Each message is a Lot chat post (one durable
    event, reply after durability), one lot per connection. ``auth``: transport link
    authentication on, off (insecure mode), or both one after the other (see the module docstring)."""
    from ops.local.servers import PostgresServer, ZooKeeperServer

    postgres, zookeeper = PostgresServer.start(), ZooKeeperServer.start()
    try:
        if auth != "both":
            return _cluster_run(zookeeper, postgres, connections, rate, seconds, store, insecure=auth == "off")
        runs = {name: _cluster_run(zookeeper, postgres, connections, rate, seconds, store, insecure=name == "auth_off")
                for name in ("auth_off", "auth_on")}
        summary = {name: {k: r[k] for k in ("p50_ms", "p99_ms", "rate", "errors")} for name, r in runs.items()}
        overhead = runs["auth_on"]["p50_ms"] / runs["auth_off"]["p50_ms"] - 1 if runs["auth_off"]["p50_ms"] else None
        return {**runs["auth_on"], **summary, "auth_p50_overhead": overhead}
    finally:
        zookeeper.destroy()
        postgres.stop()


def _cluster_run(zookeeper: Any, postgres: Any, connections: int, rate: float, seconds: float, store: str,
                 insecure: bool) -> dict[str, Any]:
    """One cluster (its own name and secrets) on the shared servers, loaded once."""
    from ops.local.cluster import Cluster, cluster_token

    cluster = Cluster(zookeeper, postgres, name=f"rtt{uuid.uuid4().hex[:6]}", session_timeout_s=2.0, store=store,
                      insecure=insecure)
    try:
        cluster.start("state-node", "node-a")
        # every connection uses the same token (sub "bench"): the per-user caps are off here
        base_url = cluster.start("edge", "edge-1", XPLATFORM_EDGE_MAX_CONNECTIONS_PER_USER="0",
                                 XPLATFORM_EDGE_USER_RATE_PER_S="0").ready_line.split("ready on ")[1].rstrip("/")
        token = cluster_token("bench", "auctioneer", ttl_s=3600)  # its connect creates the lot
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        proc = ctx.Process(target=_client_process, args=(base_url, connections, rate, seconds, out, token, "Lot",
                                                         {"type": "chat", "text": "rtt"}))
        proc.start()
        result = out.get(True, seconds + 180)
        proc.join(10)
        return result
    finally:
        cluster.stop_all()


async def bench(connections: int, rate: float, seconds: float, same_process: bool) -> dict[str, Any]:
    pauses = GcPauses.install()
    lag = LoopLag().start()
    with tempfile.TemporaryDirectory() as data_dir:
        platform = build_platform(Settings(store="sqlite", data_dir=data_dir), entities=[Tally])
        config = EdgeConfig(port=0, dev_tokens=True, rate_per_s=max(50.0, 4 * rate / connections),
                            heartbeat_s=30, max_connections_per_user=0, user_rate_per_s=0)  # one sub for all
        app = dev_app(platform, config, static_dir=None)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base_url = f"http://127.0.0.1:{port}"
        try:
            if same_process:
                result = await drive(base_url, connections, rate, seconds)
            else:
                ctx = multiprocessing.get_context("spawn")
                out = ctx.Queue()
                proc = ctx.Process(target=_client_process, args=(base_url, connections, rate, seconds, out))
                proc.start()
                result = await asyncio.to_thread(out.get, True, seconds + 120)
                await asyncio.to_thread(proc.join, 10)
        finally:
            await runner.cleanup()
    return {**result, "server_gc": pauses.summary(), "server_loop_lag": lag.stop()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--same-process", action="store_true", help="clients on the edge's event loop")
    parser.add_argument("--cluster", action="store_true",
                        help="across processes: edge process + state node process (ZooKeeper)")
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite",
                        help="with --cluster: the state node's store (sqlite: a file; postgres: a local server)")
    parser.add_argument("--auth", choices=["on", "off", "both"], default="on",
                        help="with --cluster: transport link authentication on (default), off (insecure mode), "
                             "or both in this run, reporting the p50 overhead")
    args = parser.parse_args(argv)
    if args.cluster:
        result = bench_cluster(args.connections, args.rate, args.seconds, args.store, args.auth)
    else:
        result = asyncio.run(bench(args.connections, args.rate, args.seconds, args.same_process))
    print(f"{args.connections} connections, {result['rate']:.0f} msg/s: p50 {result['p50_ms']:.2f} ms, "
          f"p99 {result['p99_ms']:.2f} ms, errors {result['errors']}")
    if "auth_p50_overhead" in result:
        off, on = result["auth_off"], result["auth_on"]
        print(f"transport auth off: p50 {off['p50_ms']:.2f} ms p99 {off['p99_ms']:.2f} ms; on: p50 {on['p50_ms']:.2f} ms "
              f"p99 {on['p99_ms']:.2f} ms; p50 overhead {result['auth_p50_overhead']:+.1%}")
    emit({**result, "connections": args.connections, "offered_rate": args.rate, "seconds": args.seconds,
          "clients": "same process" if args.same_process else "separate process",
          "topology": "cluster: edge process + state node process" if args.cluster else "one process",
          "store": args.store if args.cluster else "sqlite", **({"auth": args.auth} if args.cluster else {})})


if __name__ == "__main__":
    main()
