"""One hot Lot, 1,000 viewers: the sweep the hot-lot issue asks for, side by side with a peer.

    python -m loadtests.bench_hot_entity --sweep 1000,5000,10000,20000,40000 [--peer colyseus]
                                         [--viewers 1000] [--bidders 100] [--warmup 5] [--window 15]
    python -m loadtests.bench_hot_entity --fanout [--viewers 1000] [--fanout-rate 200] [--fanout-seconds 5]

Sweep: for each rate, a FRESH server process started the way a user starts it
(``python -m ops.cli run --port 0``, i.e. ``xplatform run``: SQLite in a new
temporary data directory, every setting at its default except the per-connection and
per-user frame-rate limits, raised through their documented ``XPLATFORM_EDGE_*`` variables
(:data:`SERVER_ENV`) so that a bidder sending hundreds of bids per second is not closed
1008 for flooding), then the load in a separate process over real sockets
(:mod:`loadtests.hotlot_load`: 1,000 viewers, 100 bidders in 10 ms slices with rising
amounts, 5 s warm-up, 15 s window; accepted bids counted at the server from the Lot's
stored stream, freshness at the viewers, both processes' CPU). One JSON line per rate,
then a final JSON line with ``max_rate_ok`` (the highest rate with p99 <= 100 ms and
>= 95 % accepted).

``--peer colyseus``: in the same invocation, the Colyseus harness
(``../shared/peers/colyseus``, its README) copied to a cache directory and run with the same
rates, viewers, bidders, warm-up and window (its ``run.sh``: ``npm install`` of its pinned
packages the first time, then one fresh Node server per rate); its summary line gives
``peer_max_rate_ok`` and ``ratio`` = ours / the peer's.

``--fanout`` (the older phase 2, in this process): coalescing off (every update a frame),
one bidder offering ``--fanout-rate`` bids/s to ``--viewers`` viewers; the frames/s the
edge delivers is compared with a plain aiohttp websocket broadcast of the same frame to the
same number of clients (``fanout_ratio`` = edge / raw).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import psutil
from aiohttp import web

from domain.auction import Bidder, Lot
from edge import protocol
from edge.config import EdgeConfig
from edge.sockets import raise_open_file_limit
from infrastructure.settings import Settings
from loadtests.common import emit
from loadtests.wsload import Stats, WsClient, get_token, open_clients
from ops.local.xplatform_run import XplatformRun
from ops.wiring.dev import build_platform, dev_app

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("colyseus",)
"""Peer harnesses: ``shared/peers/<name>`` beside the checkout (or above it), or under
``--peers-dir``; read-only where shared, so they are copied before running."""
SERVER_ENV = {
    "XPLATFORM_EDGE_RATE_PER_S": "1000000", "XPLATFORM_EDGE_RATE_BURST": "1000000",
    "XPLATFORM_EDGE_USER_RATE_PER_S": "1000000", "XPLATFORM_EDGE_USER_RATE_BURST": "1000000",
    "XPLATFORM_RUN_READ_MODELS": "0",
}
"""The only settings the sweep changes: a bidder sends up to rate/100 bids/s, in bursts of
rate x 10 ms (the defaults, 50/s per connection and 100/s per user, close it 1008); and the
read models off: this measures the write path and its fan-out (the read side has its own
benchmark, bench_projection; with --workers they run in the state node's process)."""
OK_P99_MS = 100.0
OK_ACCEPTED = 0.95
PHASE2_QUEUE = 1 << 40  # phase 2 send-queue bound (bytes): measure the backlog, drop nothing, do not close 1013
CREDIT_LINE = 10**12        # each bidder's registered credit line in phase 2


class BenchBidder(Bidder):
    """The sample ``Bidder`` with a credit that covers ``CREDIT_LINE``. The demo's 1,000,000
    credit is a demo rule; a bench that refused bids for credit would not measure load."""

    CATEGORY = "Bidder"  # an Entity subclass without its own CATEGORY gets its class name
    INITIAL_CREDIT = 10**15


# ---------------------------------------------------------------------------- the sweep
def run_rate(rate: float, args: argparse.Namespace) -> dict[str, Any]:
    """One rate: a fresh server, the load process against it, the load's JSON line."""
    with tempfile.TemporaryDirectory(prefix="xplatform-hot-") as data_dir:
        env = {**os.environ, "XPLATFORM_DATA_DIR": data_dir, "XPLATFORM_STORE": "sqlite", **SERVER_ENV,
               **dict(kv.split("=", 1) for kv in args.server_env)}
        server = XplatformRun.start(("--port", "0", "--workers", str(args.workers)), cwd=ROOT, env=env,
                                    log_path=os.path.join(data_dir, "server.log"))
        try:
            url = server.url.rstrip("/")
            print(f"[bench] rate {rate:.0f}/s: server pid {server.process.pid} at {url}", file=sys.stderr, flush=True)
            db = os.path.join(data_dir, "events.sqlite3")
            command = [sys.executable, "-m", "loadtests.hotlot_load", "--url", url, "--db", db,
                       "--server-pid", str(server.process.pid), "--rate", str(rate), "--viewers", str(args.viewers),
                       "--bidders", str(args.bidders), "--sample", str(args.sample), "--warmup", str(args.warmup),
                       "--window", str(args.window)]
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,  # noqa: S603
                                  timeout=args.warmup + args.window + 300)
            if done.returncode != 0:
                raise RuntimeError(f"load generator failed at {rate:.0f}/s:\n{done.stderr[-3000:]}")
            result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
            result["server_alive"] = server.process.poll() is None
            return result
        finally:
            server.stop(signal.SIGTERM, timeout_s=20)  # a service manager's stop
            server.close()


def max_rate_ok(runs: list[dict[str, Any]]) -> float | None:
    good = [r["rate_offered"] for r in runs if r.get("ok")]
    return max(good) if good else None


def _peer_dir(name: str, given: str | None) -> Path:
    candidates = [Path(given) / name] if given else [p / "shared" / "peers" / name for p in ROOT.parents]
    for candidate in candidates:
        if (candidate / "run.sh").is_file():
            return candidate
    raise SystemExit(f"no {name} harness (run.sh) in {', '.join(map(str, candidates))}; give --peers-dir")


def run_peer(name: str, rates: list[float], args: argparse.Namespace) -> dict[str, Any]:
    """The peer's own harness, copied to a cache directory (its node_modules stay there
    between invocations), with the same scenario parameters; its last line is its summary."""
    source = _peer_dir(name, args.peers_dir)
    work = Path(tempfile.gettempdir()) / f"xplatform-peer-{name}"
    work.mkdir(exist_ok=True)
    for item in source.iterdir():
        if item.is_file():
            shutil.copy2(item, work / item.name)  # copy2 keeps mtimes: run.sh reinstalls only when they change
            (work / item.name).chmod(0o755 if item.name.endswith(".sh") else 0o644)
    env = {**os.environ, "RATES": " ".join(str(int(r)) for r in rates), "VIEWERS": str(args.viewers),
           "BIDDERS": str(args.bidders), "SAMPLE": str(args.sample), "WARMUP": str(int(round(args.warmup))),
           "DURATION": str(int(round(args.window)))}
    print(f"[bench] peer {name}: {work}/run.sh RATES={env['RATES']!r}", file=sys.stderr, flush=True)
    done = subprocess.run(["bash", str(work / "run.sh")], cwd=work, env=env, capture_output=True, text=True,  # noqa: S603
                          timeout=len(rates) * (args.warmup + args.window + 120) + 600)
    if done.returncode != 0:
        raise RuntimeError(f"peer {name} failed:\n{done.stderr[-3000:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    summary = lines[-1]
    summary["run_lines"] = lines[:-1]
    return summary


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in args.sweep.split(",") if r.strip()]
    runs = []
    for rate in rates:
        result = run_rate(rate, args)
        print(json.dumps(result), flush=True)
        runs.append(result)
    summary: dict[str, Any] = {
        "bench": "hot_entity_sweep", "server": f"python -m ops.cli run --workers {args.workers} (sqlite, defaults)",
        "server_env": {**SERVER_ENV, **dict(kv.split("=", 1) for kv in args.server_env)},
        "viewers": args.viewers, "bidders": args.bidders, "warmup_s": args.warmup, "window_s": args.window,
        "criterion": f"latency p99 <= {OK_P99_MS:.0f} ms and accepted >= {OK_ACCEPTED:.0%} of offered",
        "max_rate_ok": max_rate_ok(runs),
        "max_rate_is_top_of_sweep": max_rate_ok(runs) == max(rates),
        "runs": [{"rate": r["rate_offered"], "accepted_per_s": r["accepted_per_s"], "p50_ms": r["latency_ms"]["p50"],
                  "p99_ms": r["latency_ms"]["p99"], "max_ms": r["latency_ms"]["max"],
                  "frames_per_s": r["frames_per_s"], "server_cpu_pct": r["server_cpu_pct"],
                  "loadgen_cpu_pct": r["loadgen_cpu_pct"], "refused": r["refused_in_window"],
                  "disconnects": r["client_disconnects"], "ok": r["ok"]} for r in runs],
    }
    if args.peer:
        peer = run_peer(args.peer, rates, args)
        summary["peer"] = {k: v for k, v in peer.items() if k != "run_lines"}
        summary["peer_runs"] = peer["run_lines"]
        summary["peer_max_rate_ok"] = peer.get("max_rate_p99_le_100ms")
        ours, theirs = summary["max_rate_ok"], summary["peer_max_rate_ok"]
        summary["ratio"] = round((ours or 0) / theirs, 3) if theirs else None
    return summary


def _lot_path(lot: str) -> Any:
    return lambda i: f"/ws/Lot/{lot}?cid={uuid.uuid4()}"


class CpuMeter:
    """CPU seconds of this process and the server (parent) over a window, as cores busy."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.server = psutil.Process(os.getppid())

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = _cpu(self.me)
        self.s0 = _cpu(self.server)

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        return {"client_cpu": round((_cpu(self.me) - self.c0) / wall, 2),
                "server_cpu": round((_cpu(self.server) - self.s0) / wall, 2)}


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _open_lot(session: aiohttp.ClientSession, base_url: str, base: tuple[str, int], lot: str,
                    stats: Stats) -> WsClient:
    token = await get_token(session, base_url, "auctioneer", "auctioneer")
    [auctioneer] = await open_clients(base, _lot_path(lot), lambda i: token, 1, "bidder", stats)
    frame = await auctioneer.request({"type": "open", "title": "bench lot", "increment": 1})
    if not frame[2]:
        raise RuntimeError(f"could not open the lot: {frame[3]}")
    return auctioneer


async def _count_window(stats: Stats, warmup: float, window: float) -> tuple[float, dict[str, float]]:
    await asyncio.sleep(warmup)
    meter = CpuMeter()
    before, t0 = stats.push_frames, time.monotonic()
    meter.start()
    await asyncio.sleep(window)
    frames, wall = stats.push_frames - before, time.monotonic() - t0
    return frames / wall, meter.stop()


async def phase_fanout(edge_url: str, raw_url: str, viewers: int, rate: float, seconds: float) -> dict[str, Any]:
    """Phase 2 (client process): raw aiohttp broadcast, then the edge with coalescing off, to
    the same number of clients, counted the same way."""
    warmup = min(1.0, seconds)
    raw_stats = Stats()
    raw_base = ("127.0.0.1", int(raw_url.rsplit(":", 1)[1]))
    raw_clients = await open_clients(raw_base, lambda i: "/raw", lambda i: None, viewers, "raw", raw_stats)
    raw: dict[str, tuple[float, dict[str, float]]] = {}
    async with aiohttp.ClientSession() as session:
        for mode in ("loop", "tasks"):
            params = {"seconds": str(warmup + seconds), "mode": mode}
            async with session.post(f"{raw_url}/raw/start", params=params) as resp:
                resp.raise_for_status()
            raw[mode] = await _count_window(raw_stats, warmup, seconds)
            async with session.post(f"{raw_url}/raw/wait") as resp:  # the loop has ended
                resp.raise_for_status()
            await asyncio.sleep(1.0)  # the clients read what is still in flight
        for client in raw_clients:
            client.abort()
        best = max(raw, key=lambda m: raw[m][0])
        raw_rate, raw_cpu = raw[best]

        stats = Stats()
        base = ("127.0.0.1", int(edge_url.rsplit(":", 1)[1]))
        lot = f"fan-{uuid.uuid4().hex[:8]}"
        auctioneer = await _open_lot(session, edge_url, base, lot, stats)
        auctioneer.abort()  # viewers only (and the one bidder) receive the updates
        # one user per viewer: an entity holds at most MAX_CONNECTIONS_PER_USER connections of one user
        viewer_tokens = [await get_token(session, edge_url, f"{lot}-v{i}", "viewer") for i in range(viewers)]
        bidder_token = await get_token(session, edge_url, f"fan-{uuid.uuid4().hex[:6]}", "bidder")
    watchers = await open_clients(base, _lot_path(lot), lambda i: viewer_tokens[i], viewers, "count", stats)
    [bidder] = await open_clients(base, _lot_path(lot), lambda i: bidder_token, 1, "bidder", stats)
    await asyncio.sleep(0.5)
    stop = asyncio.Event()
    sent = 0

    async def offer() -> None:
        nonlocal sent
        started = time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - started) * rate) + 1
            while sent < due:
                sent += 1
                payload = msgpack.packb({"type": "bid", "amount": sent, "sent_at": time.time()})
                bidder.send(protocol.pack([protocol.MSG, f"f-{sent}", payload]))
            await asyncio.sleep(0.002)

    offering = asyncio.create_task(offer())
    bid_count_before = stats.replies
    started = time.monotonic()
    edge_rate, edge_cpu = await _count_window(stats, warmup, seconds)
    stop.set()
    await offering
    offered_s = time.monotonic() - started
    replies = stats.replies - bid_count_before
    for client in (*watchers, bidder):
        client.abort()
    return {
        "fanout_frames_per_s": edge_rate,
        "raw_broadcast_frames_per_s": raw_rate,
        "fanout_ratio": edge_rate / raw_rate if raw_rate else float("nan"),
        "fanout_offered_bids_per_s": sent / offered_s,
        "fanout_bids_answered_per_s": replies / offered_s,
        "fanout_cpu": edge_cpu,
        "raw_cpu": raw_cpu,
        "raw_broadcast_by_mode": {m: round(r[0]) for m, r in raw.items()},
        "raw_broadcast_mode": best,
        "phase2_errors": {**raw_stats.errors, **stats.errors},
        "phase2_rejected": dict(stats.rejected.most_common(5)),
    }


def _client_process(phase: str, args: tuple[Any, ...], out: Any) -> None:
    raise_open_file_limit()
    try:
        assert phase == "fanout", phase  # the only in-benchmark client phase left (the sweep has its own process)
        out.put(asyncio.run(phase_fanout(*args)))
    except BaseException as exc:  # report instead of leaving the server waiting
        out.put({"failed": f"{type(exc).__name__}: {exc}"})
        raise


# ---------------------------------------------------------------------------- server side
class Server:
    """The platform and its public edge on a free loopback port."""

    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self.runner = runner
        self.url = url

    @classmethod
    async def start(cls, data_dir: str, **edge: Any) -> Server:
        platform = build_platform(Settings(store="sqlite", data_dir=data_dir), entities=(Lot, BenchBidder))
        # every viewer shares one token's sub: the per-user caps are off here
        config = EdgeConfig(port=0, dev_tokens=True, rate_per_s=1e6, rate_burst=1e6, max_connections_per_user=0,
                            user_rate_per_s=0, **edge)
        app = dev_app(platform, config, static_dir=None)
        return await cls._serve(app)

    @classmethod
    async def _serve(cls, app: web.Application) -> Server:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return cls(runner, f"http://127.0.0.1:{port}")

    async def stop(self) -> None:
        await self.runner.cleanup()


def raw_broadcast_app(frame: bytes) -> web.Application:
    """A plain aiohttp websocket handler and a loop sending ``frame`` to every client."""
    clients: set[web.WebSocketResponse] = set()
    running: list[asyncio.Task[None]] = []

    async def ws_handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=(protocol.SUBPROTOCOL,), compress=False, autoping=True)
        await ws.prepare(request)
        clients.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            clients.discard(ws)
        return ws

    async def broadcast(seconds: float) -> None:
        """One loop over all clients (a client whose buffer is full makes everyone wait)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and clients:
            for ws in list(clients):
                try:
                    await ws.send_bytes(frame)
                except (ConnectionError, RuntimeError):
                    clients.discard(ws)
            await asyncio.sleep(0)

    async def send_to(ws: web.WebSocketResponse, end: float) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while time.monotonic() < end:
                for _ in range(64):
                    await ws.send_bytes(frame)
                await asyncio.sleep(0)  # let the other senders have the loop

    async def broadcast_per_client(seconds: float) -> None:
        """One sender task per client (as the edge's writers): nobody waits for a slow one."""
        end = time.monotonic() + seconds
        await asyncio.gather(*(send_to(ws, end) for ws in list(clients)))

    async def start(request: web.Request) -> web.Response:
        seconds = min(60.0, float(request.query["seconds"]))
        loop = broadcast if request.query.get("mode") == "loop" else broadcast_per_client
        running.append(asyncio.create_task(loop(seconds)))
        return web.json_response({"clients": len(clients)})

    async def wait(request: web.Request) -> web.Response:
        for task in running:
            await task
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/raw", ws_handler)
    app.router.add_post("/raw/start", start)
    app.router.add_post("/raw/wait", wait)
    return app


def lot_state_frame() -> bytes:
    """A PUSH frame like the Lot's state updates in phase 2 (the Lot's own view, typical values)."""
    lot: Any = Lot.blank("fan-0123abcd")
    lot.status, lot.title, lot.high_amount, lot.high_bidder = "open", "bench lot", 123456, "fan-0123ab"
    lot.bid_count, lot.high_bid_at = 123456, time.time()
    return protocol.push({"type": "state", **lot.view(), "present": 1001})


async def _run_clients(phase: str, args: tuple[Any, ...], timeout: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_client_process, args=(phase, args, out))
    proc.start()
    try:
        result: dict[str, Any] = await asyncio.to_thread(out.get, True, timeout)
    finally:
        await asyncio.to_thread(proc.join, 30)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    if "failed" in result:
        raise RuntimeError(f"client process ({phase}) failed: {result['failed']}")
    return result


async def fanout_bench(viewers: int, fanout_rate: float, fanout_seconds: float) -> dict[str, Any]:
    """``--fanout``: the edge with coalescing off vs a raw aiohttp broadcast (this process serves)."""
    raise_open_file_limit()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as data_dir:
        frame = lot_state_frame()
        server = await Server.start(os.path.join(data_dir, "phase2"), coalesce_hz=0.0,
                                    send_queue_bytes=PHASE2_QUEUE)
        raw = await Server._serve(raw_broadcast_app(frame))
        try:
            result.update(await _run_clients("fanout", (server.url, raw.url, viewers, fanout_rate, fanout_seconds),
                                             2 * fanout_seconds + 240))
        finally:
            await raw.stop()
            await server.stop()
    result["errors"] = sum(result["phase2_errors"].values())
    result["raw_frame_bytes"] = len(frame)
    result["phase2_send_queue_bytes"] = PHASE2_QUEUE
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", default="", help="comma-separated offered bid rates, e.g. 1000,5000,10000")
    parser.add_argument("--peer", choices=PEERS, default=None, help="also run this peer's harness")
    parser.add_argument("--peers-dir", default=None, help="folder holding the peer harnesses (default: shared/peers "
                        "beside or above this checkout)")
    parser.add_argument("--workers", type=int, default=0,
                        help="edge worker processes of the server (xplatform run --workers N; 0: one process)")
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--bidders", type=int, default=100)
    parser.add_argument("--sample", type=int, default=100, help="viewers whose freshness is recorded")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before the window")
    parser.add_argument("--window", type=float, default=15.0, help="measurement window, seconds")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra XPLATFORM_* setting for the server (A/B of a setting; reported)")
    parser.add_argument("--fanout", action="store_true", help="run the coalescing-off fan-out vs raw aiohttp phase")
    parser.add_argument("--fanout-rate", type=float, default=200.0, help="bids/s offered in --fanout (one bidder)")
    parser.add_argument("--fanout-seconds", type=float, default=5.0, help="--fanout counted windows")
    args = parser.parse_args(argv)
    if not args.sweep and not args.fanout:
        parser.error("give --sweep RATES and/or --fanout")
    started = time.monotonic()
    result: dict[str, Any] = {}
    if args.sweep:
        result.update(sweep(args))
    if args.fanout:
        fan = asyncio.run(fanout_bench(args.viewers, args.fanout_rate, args.fanout_seconds))
        print(f"fan-out: edge {fan['fanout_frames_per_s']:.0f} frames/s, raw {fan['raw_broadcast_frames_per_s']:.0f} "
              f"frames/s, ratio {fan['fanout_ratio']:.2f}", file=sys.stderr)
        result.update(fan)
    emit({**result, "wall_s": round(time.monotonic() - started, 1)})


if __name__ == "__main__":
    main()
