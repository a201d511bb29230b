"""One hot entity watched by 1,000 websocket clients: freshness with coalescing, fan-out without.

    python -m loadtests.bench_hot_entity [--viewers 1000] [--bidders 100] [--rate 10000] [--seconds 10]
                                         [--fanout-rate 200] [--fanout-seconds 5]

The server is the one-process platform (SQLite in a temporary directory, in-process
transport) with its public edge and dev tokens, in this process; the clients run in a
separate process (``spawn``), so client work does not steal the server's event loop.

Phase 1 (coalescing on, the default 20 Hz tick): ``--viewers`` websockets watch one ``Lot``;
``--bidders`` bidder connections (each its own user, so its own ``Bidder`` account entity)
offer ``--rate`` bids/s in total for ``--seconds``. Bidders take turns in 10 ms slices (the
bidder of slice k sends that slice's bids in one write), amounts strictly increase and every
bid carries ``sent_at`` (the sender's epoch seconds), so bids arrive in order and each one
is meant to be a new highest bid. Before the window each bidder registers a credit line
(``register``: the Lot -> Bidder -> Lot round trip once per bidder), so a bid within it is
accepted by the Lot alone with one durable event; the Lot's pushed state carries
``bid_count`` and ``sent_at`` of the newest accepted bid. Measured at the clients:

- ``accepted_updates_per_s``: bids accepted by the entity (the final ``bid_count``) over the
  time from the first bid sent until a viewer first saw that final count (the run waits,
  bounded, for the backlog to drain: nothing offered is dropped or left uncounted);
- ``frames_per_s``: state frames delivered to the viewers per second while bids are offered;
- ``update_to_client_p50_ms``/``p99_ms`` (freshness): for every state frame a viewer receives
  that reflects a bid, its arrival time minus ``sent_at`` of the newest bid it reflects.

Phase 2 (coalescing off: ``coalesce_hz`` 0, every update a frame; fresh platform and edge):
one bidder offers ``--fanout-rate`` bids/s, meant to ask for more frames than one process
can send (``--fanout-rate`` x viewers); the most frames/s the edge delivers to the viewers is
counted over ``--fanout-seconds`` after a one-second warm-up. The send-queue bound is raised
for this phase (reported) so that the backlog is measured instead of closing viewers 1013.
In the same run the same client process connects the same number of clients to a plain
aiohttp websocket handler in the server process that sends one pre-encoded frame (a real
Lot state PUSH frame, same bytes and size as the edge's) to every client in a loop, counted
the same way; ``fanout_ratio`` = edge / raw.

The clients are a minimal asyncio websocket protocol (RFC 6455 framing, zero mask key),
not ``edge.client``: at ~100k frames/s the client process must stay cheaper per frame than
the server, or the benchmark would measure the client. Both processes' CPU use over each
window is reported (``*_cpu``: 1.0 = one core busy).

Last stdout line: JSON with the keys above, ``fanout_frames_per_s``,
``raw_broadcast_frames_per_s``, ``fanout_ratio``, and the offered rate, rejected bids and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
import msgpack
import psutil
from aiohttp import web

from domain.auction import Bidder, Lot
from edge import protocol
from edge.app import build_edge_app
from edge.config import EdgeConfig
from edge.sockets import raise_open_file_limit
from infrastructure.bootstrap import build_platform
from infrastructure.gc_pauses import GcPauses
from infrastructure.settings import Settings
from loadtests.common import emit, percentile

SLICE_S = 0.01            # bidders take turns in 10 ms slices
DRAIN_TIMEOUT_S = 120.0   # after the offered window: most time waited for the backlog
QUIET_S = 1.0             # the backlog is drained when all replies are in and bid_count rests this long
PHASE2_QUEUE = 1 << 40  # phase 2 send-queue bound (bytes): measure the backlog, drop nothing, do not close 1013
_PUSH_HEAD = bytes([0x92, protocol.PUSH])  # msgpack fixarray(2), then the PUSH kind


CREDIT_LINE = 10**12        # each bidder's registered credit line: far above the ~100k amounts reached


class BenchBidder(Bidder):
    """The sample ``Bidder`` with a credit that covers ``CREDIT_LINE``. The demo's 1,000,000
    credit is a demo rule; a bench that refused bids for credit would not measure load."""

    CATEGORY = "Bidder"  # an Entity subclass without its own CATEGORY gets its class name
    INITIAL_CREDIT = 10**15


# ---------------------------------------------------------------------------- client side
class Stats:
    """Counters of the client process (one event loop: no locks)."""

    def __init__(self) -> None:
        self.measuring = False
        self.latencies: list[float] = []     # freshness samples, seconds
        self.state_frames = 0                # state frames (reflecting a bid) received by viewers
        self.push_frames = 0                 # every PUSH received by viewers (count mode)
        self.bid_count = 0                   # highest bid_count seen
        self.bid_count_seen_at = 0.0         # when it was first seen (epoch s)
        self.replies = 0
        self.rejected: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.closed = 0
        self.registered = 0                  # bidders whose credit line is in place


class WsClient(asyncio.Protocol):
    """A minimal websocket client: handshake, binary frames in and out, pong, nothing else.

    ``mode``: ``viewer`` decodes state pushes (freshness), ``count`` counts PUSH frames
    without decoding, ``bidder`` reads replies and rejections, ``raw`` counts frames of
    the plain broadcast server (no WELCOME)."""

    def __init__(self, stats: Stats, mode: str, request: bytes) -> None:
        self.stats = stats
        self.mode = mode
        self.upgrade = request
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.open = False
        self.ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.replies: dict[str, asyncio.Future[list[Any]]] = {}

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.upgrade)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc}"))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[:end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace")))
                return
            self.open = True
            if self.mode == "raw":
                self.ready.set_result(None)
        off, n = 0, len(buf)
        count_only = self.mode in ("count", "raw") and self.ready.done()
        pushes = 0
        while n - off >= 2:
            length = buf[off + 1] & 0x7F
            if length < 126:
                head = 2
            elif length == 126:
                if n - off < 4:
                    break
                length, head = int.from_bytes(buf[off + 2:off + 4], "big"), 4
            else:
                if n - off < 10:
                    break
                length, head = int.from_bytes(buf[off + 2:off + 10], "big"), 10
            start = off + head
            if n - start < length:
                break
            opcode = buf[off] & 0x0F
            off = start + length
            if opcode == 2:
                if count_only:
                    if buf[start] == 0x92 and buf[start + 1] == protocol.PUSH:
                        pushes += 1
                else:
                    self._binary(bytes(buf[start:off]), now)
            elif opcode == 9:  # server ping: answer (the edge closes silent connections)
                self.send(bytes(buf[start:off]), 0x8A)
            elif opcode == 8:
                self.stats.errors[f"close_{int.from_bytes(buf[start:start + 2], 'big') if length >= 2 else 0}"] += 1
        del buf[:off]
        if pushes:
            self.stats.push_frames += pushes

    # -- frames
    def _binary(self, data: bytes, now: float) -> None:
        frame = msgpack.unpackb(data, raw=False)
        kind = frame[0]
        stats = self.stats
        if kind == protocol.PUSH:
            payload = frame[1]
            if self.mode == "viewer" and isinstance(payload, dict) and payload.get("type") == "state":
                sent_at = payload.get("sent_at") or 0.0
                if stats.measuring and sent_at > 0:
                    stats.latencies.append(now - sent_at)
                    stats.state_frames += 1
                count = payload.get("bid_count", 0)
                if count > stats.bid_count:
                    stats.bid_count, stats.bid_count_seen_at = count, now
            elif self.mode == "count":
                stats.push_frames += 1
            elif isinstance(payload, dict) and payload.get("type") == "bid_rejected":
                stats.rejected[f"credit: {payload.get('reason', '')[:40]}"] += 1
            elif isinstance(payload, dict) and payload.get("type") == "registered":
                stats.registered += 1
        elif kind == protocol.REPLY:
            waiter = self.replies.pop(frame[1], None)
            if waiter is not None:
                waiter.set_result(frame)
                return
            stats.replies += 1
            if not frame[2]:
                stats.rejected[f"{frame[3].get('code')}: {frame[3].get('reason', '')[:40]}"] += 1
        elif kind == protocol.WELCOME:
            if not self.ready.done():
                self.ready.set_result(frame[2])
        elif kind == protocol.TERMINATE:
            stats.errors[f"terminate: {frame[1]}"] += 1
        elif kind == protocol.ERROR:
            stats.errors[f"error: {frame[1]}"] += 1

    def send(self, payload: bytes, first: int = 0x82) -> None:
        """One frame, FIN set, masked with the zero key (valid RFC 6455; XOR is a no-op)."""
        assert self.transport is not None
        self.transport.write(frame_bytes(payload, first))

    async def request(self, payload: dict[str, Any], timeout: float = 10.0) -> list[Any]:
        """Send and await the REPLY; a retryable refusal (e.g. ``overloaded`` while the
        other clients connect) is resent with the same message ID, as a client would."""
        mid = uuid.uuid4().hex
        deadline = time.monotonic() + timeout
        while True:
            waiter: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self.replies[mid] = waiter
            self.send(protocol.pack([protocol.MSG, mid, msgpack.packb(payload)]))
            frame = await asyncio.wait_for(waiter, max(0.01, deadline - time.monotonic()))
            if frame[2] or not frame[3].get("retryable") or time.monotonic() > deadline:
                return frame
            await asyncio.sleep(0.05)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def frame_bytes(payload: bytes, first: int = 0x82) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def upgrade_request(host: str, port: int, path: str, token: str | None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}", "Sec-WebSocket-Version: 13",
             f"Sec-WebSocket-Protocol: {protocol.SUBPROTOCOL}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_clients(base: tuple[str, int], path_of: Any, token_of: Any, count: int, mode: str,
                       stats: Stats, batch: int = 100) -> list[WsClient]:
    """Open ``count`` clients in batches; each is ready after its WELCOME (or the 101, raw)."""
    loop = asyncio.get_running_loop()
    host, port = base
    clients: list[WsClient] = []
    for first in range(0, count, batch):
        made = []
        for i in range(first, min(count, first + batch)):
            request = upgrade_request(host, port, path_of(i), token_of(i))
            _, client = await loop.create_connection(lambda r=request: WsClient(stats, mode, r), host, port)
            made.append(client)
        await asyncio.wait_for(asyncio.gather(*(c.ready for c in made)), 60)
        clients += made
    return clients


async def viewer_tokens_for(session: aiohttp.ClientSession, base_url: str, viewers: int) -> list[str]:
    """A token per viewer: an entity caps the connections of one user (``MAX_CONNECTIONS_PER_USER``)."""
    run = uuid.uuid4().hex[:6]
    return list(await asyncio.gather(*(get_token(session, base_url, f"v-{run}-{i}", "viewer") for i in range(viewers))))


async def get_token(session: aiohttp.ClientSession, base_url: str, sub: str, role: str) -> str:
    async with session.get(f"{base_url}/dev/token", params={"sub": sub, "role": role}) as resp:
        resp.raise_for_status()
        return str((await resp.json())["token"])


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


async def phase_coalesced(base_url: str, viewers: int, bidders: int, rate: float, seconds: float) -> dict[str, Any]:
    """Phase 1 (client process): freshness and accepted bids with coalescing on."""
    stats = Stats()
    base = ("127.0.0.1", int(base_url.rsplit(":", 1)[1]))
    lot = f"hot-{uuid.uuid4().hex[:8]}"
    run = uuid.uuid4().hex[:6]
    async with aiohttp.ClientSession() as session:
        auctioneer = await _open_lot(session, base_url, base, lot, stats)
        viewer_tokens = await viewer_tokens_for(session, base_url, viewers)
        bidder_tokens = [await get_token(session, base_url, f"b-{run}-{i}", "bidder") for i in range(bidders)]
    watchers = await open_clients(base, _lot_path(lot), lambda i: viewer_tokens[i], viewers, "viewer", stats)
    bidding = await open_clients(base, _lot_path(lot), lambda i: bidder_tokens[i], bidders, "bidder", stats)
    await asyncio.sleep(1.0)  # the joins' state pushes settle
    # Registration, as in a real sale: each bidder asks for a credit line on the lot before
    # bidding (its Bidder entity holds the credit), so its bids are accepted by the lot alone.
    for bidder in bidding:
        frame = await bidder.request({"type": "register", "limit": CREDIT_LINE})
        if not frame[2]:
            raise RuntimeError(f"registration refused: {frame[3]}")
    deadline = time.monotonic() + 30
    while stats.registered < len(bidding) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    if stats.registered < len(bidding):
        raise RuntimeError(f"only {stats.registered} of {len(bidding)} credit lines arrived")
    # warm-up: one bid per bidder, one at a time (each connection's first message warms its path)
    amount = 0
    for bidder in bidding:
        amount += 1
        frame = await bidder.request({"type": "bid", "amount": amount})
        if not frame[2]:
            raise RuntimeError(f"warm-up bid refused: {frame[3]}")
    deadline = time.monotonic() + 10
    while stats.bid_count < amount and time.monotonic() < deadline:
        await asyncio.sleep(0.002)
    warm_bids, warm_count = amount, stats.bid_count
    stats.rejected.clear()

    per_slice = rate * SLICE_S
    slices = max(1, round(seconds / SLICE_S))
    carry = 0.0
    meter = CpuMeter()
    print(f"phase 1: offering {rate:.0f} bids/s for {seconds:.0f} s", file=sys.stderr, flush=True)
    stats.measuring = True
    started_wall = time.time()
    started = time.monotonic()
    meter.start()
    for k in range(slices):
        due = started + k * SLICE_S
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        carry += per_slice
        n, carry = int(carry), carry - int(carry)
        bidder = bidding[k % len(bidding)]
        frames = []
        for _ in range(n):
            amount += 1
            payload = msgpack.packb({"type": "bid", "amount": amount, "sent_at": time.time()})
            frames.append(frame_bytes(protocol.pack([protocol.MSG, f"{k % len(bidding)}-{amount}", payload])))
        if frames:
            assert bidder.transport is not None
            bidder.transport.write(b"".join(frames))
    offered_s = time.monotonic() - started
    window_frames = stats.state_frames
    window_count = stats.bid_count - warm_count
    cpu = meter.stop()
    # drain: every bid answered and bid_count at rest (bounded)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    last, rested = -1, time.monotonic()
    while time.monotonic() < deadline:
        if stats.bid_count != last:
            last, rested = stats.bid_count, time.monotonic()
        if stats.replies >= amount - warm_bids and time.monotonic() - rested >= QUIET_S:
            break
        await asyncio.sleep(0.05)
    drained = stats.replies >= amount - warm_bids  # warm-up replies were awaited by request()
    stats.measuring = False
    for client in (*watchers, *bidding, auctioneer):
        client.abort()
    busy_s = max(1e-9, stats.bid_count_seen_at - started_wall)
    rejected = sum(stats.rejected.values())
    accepted = stats.bid_count - warm_count
    offered = amount - warm_bids
    return {
        "accepted_updates_per_s": accepted / busy_s,
        "accepted_bids": accepted,
        "accepted_during_offer_per_s": window_count / offered_s,
        "bids_offered": offered,
        "offered_rate": offered / offered_s,
        "rejected_bids": rejected,
        "rejected_reasons": dict(stats.rejected.most_common(5)),
        "unanswered_bids": max(0, amount - warm_bids - stats.replies),
        "drained": drained,
        "drain_s": round(max(0.0, stats.bid_count_seen_at - started_wall - offered_s), 2),
        "frames_per_s": window_frames / offered_s,
        "frames_total": stats.state_frames,
        "update_to_client_p50_ms": percentile(stats.latencies, 50) * 1000,
        "update_to_client_p90_ms": percentile(stats.latencies, 90) * 1000,
        "update_to_client_p99_ms": percentile(stats.latencies, 99) * 1000,
        "update_to_client_max_ms": max(stats.latencies, default=float("nan")) * 1000,
        "phase1_cpu": cpu,
        "phase1_errors": dict(stats.errors),
    }


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
        viewer_tokens = await viewer_tokens_for(session, edge_url, viewers)
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
        func = phase_coalesced if phase == "coalesced" else phase_fanout
        out.put(asyncio.run(func(*args)))  # type: ignore[operator]
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
        app = build_edge_app(platform, config, manage_platform=True, static_dir=None)
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


async def bench(viewers: int, bidders: int, rate: float, seconds: float, fanout_rate: float,
                fanout_seconds: float) -> dict[str, Any]:
    raise_open_file_limit()
    print(f"server pid {os.getpid()}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as data_dir:
        server = await Server.start(os.path.join(data_dir, "phase1"))
        pauses = GcPauses.install()
        try:
            result.update(await _run_clients("coalesced", (server.url, viewers, bidders, rate, seconds),
                                             seconds + DRAIN_TIMEOUT_S + 180))
            result["phase1_server_gc"] = pauses.summary()
        finally:
            await server.stop()
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
    result["errors"] = (result["unanswered_bids"] + sum(result["phase1_errors"].values())
                        + sum(result["phase2_errors"].values()))
    result["raw_frame_bytes"] = len(frame)
    result["phase2_send_queue_bytes"] = PHASE2_QUEUE
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--bidders", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10_000.0, help="bids/s offered in phase 1, all bidders")
    parser.add_argument("--seconds", type=float, default=10.0, help="phase 1 offered window")
    parser.add_argument("--fanout-rate", type=float, default=200.0, help="bids/s offered in phase 2 (one bidder)")
    parser.add_argument("--fanout-seconds", type=float, default=5.0, help="phase 2 counted windows")
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = asyncio.run(bench(args.viewers, args.bidders, args.rate, args.seconds, args.fanout_rate,
                               args.fanout_seconds))
    print(f"phase 1: {result['offered_rate']:.0f} bids/s offered, {result['accepted_updates_per_s']:.0f} accepted/s, "
          f"{result['frames_per_s']:.0f} frames/s, freshness p50 {result['update_to_client_p50_ms']:.1f} ms "
          f"p99 {result['update_to_client_p99_ms']:.1f} ms; phase 2: edge {result['fanout_frames_per_s']:.0f} "
          f"frames/s, raw {result['raw_broadcast_frames_per_s']:.0f} frames/s, ratio {result['fanout_ratio']:.2f}")
    emit({**result, "viewers": args.viewers, "bidders": args.bidders, "rate": args.rate, "seconds": args.seconds,
          "fanout_rate": args.fanout_rate, "fanout_seconds": args.fanout_seconds,
          "wall_s": round(time.monotonic() - started, 1), "clients": "separate process", "store": "sqlite"})


if __name__ == "__main__":
    main()
