"""Load generator of the hot-lot sweep: one process, real sockets, the peer's design.

    python -m loadtests.hotlot_load --url http://127.0.0.1:PORT --db EVENTS.sqlite3 --server-pid PID
                                    --rate 10000 [--viewers 1000] [--bidders 100] [--sample 100]
                                    [--warmup 5] [--window 15]

Started by ``loadtests.bench_hot_entity --sweep`` against a server it started as a user
would (``python -m ops.cli run``); prints ONE JSON line. The design follows the
Colyseus harness's ``load.mjs`` (``../shared/peers/colyseus``) so the two are comparable:

- an auctioneer opens a fresh ``Lot``; ``--viewers`` viewers join it, each its own user;
  every ``viewers/sample``-th one decodes every state frame (freshness samples), the others
  only count frames at the websocket layer;
- ``--bidders`` bidders join (each its own user) and register a credit line (the Lot ->
  Bidder -> Lot round trip once), so a bid within it is accepted by the Lot alone;
- a sender wakes every millisecond and sends the bids due by then (open loop, ``--rate``
  bids/s in total, amounts strictly rising, each carrying ``sent_at``, the sender's epoch
  seconds). Bidders take turns in 10 ms slices: all bids due in one slice go out in one
  write on that slice's bidder's socket, so they reach the lot in order (see the peer's
  README, "Bid ordering");
- after ``--warmup`` s the ``--window`` s measurement runs. Accepted bids are counted AT THE
  SERVER: the Lot's stored stream is read at the window's start and end (``--db``, the
  server's SQLite file, read-only): the ``BidAccepted`` events between the two versions,
  over the time between the reads. Only durable bids count, which is what the platform
  promises before anyone hears of a bid.
- freshness at the sampled viewers: on every state frame, now - ``sent_at`` of the newest
  bid it shows (one clock: both processes read the same wall clock).
- CPU of the server process (``--server-pid``, all its threads) and of this process.

``ok``: p99 <= 100 ms and accepted >= 95 % of offered (the peer's criterion).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
import msgpack
import psutil

from edge import protocol
from edge.sockets import raise_open_file_limit
from loadtests.common import percentile
from loadtests.wsload import Stats, WsClient, frame_bytes, get_token, open_clients

SLICE_S = 0.01
"""Bidders take turns in 10 ms slices (the peer's SLICE_MS)."""
TICK_S = 0.001
"""The sender's pacing timer (the peer's TICK_MS)."""
CREDIT = 999_999
"""Each bidder's credit line: the sample ``Bidder`` account holds 1,000,000 (a demo rule)."""


class LotStore:
    """Read-only view of the Lot's stream in the server's SQLite file (the server's count)."""

    def __init__(self, path: str, lot: str) -> None:
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        self.stream = f"Lot-{lot}"
        self.table = _events_table(self.db)

    def version(self) -> int:
        row = self.db.execute(f"SELECT MAX(originator_version) FROM {self.table} WHERE originator_id = ?",
                              (self.stream,)).fetchone()
        return int(row[0] or 0)

    def accepted_between(self, after: int, upto: int) -> int:
        row = self.db.execute(f"SELECT COUNT(*) FROM {self.table} WHERE originator_id = ? AND originator_version > ? "
                              "AND originator_version <= ? AND topic LIKE '%BidAccepted%'",
                              (self.stream, after, upto)).fetchone()
        return int(row[0])


def _events_table(db: sqlite3.Connection) -> str:
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for name in ("stored_events", "events"):
        if name in names:
            return name
    raise RuntimeError(f"no events table in the server's SQLite file (tables: {sorted(names)})")


def _cpu(process: psutil.Process) -> float:
    """CPU seconds of ``process`` and its live children (``xplatform run --workers``: the edge
    workers are the server too)."""
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _bid_frame(bidder: int, amount: int) -> bytes:
    payload = msgpack.packb({"type": "bid", "amount": amount, "sent_at": time.time()})
    return frame_bytes(protocol.pack([protocol.MSG, f"{bidder}-{amount}", payload]))


async def run(url: str, db: str, server_pid: int, rate: float, viewers: int, bidders: int, sample: int,
              warmup: float, window: float) -> dict[str, Any]:
    if rate * (warmup + window) * 1.2 >= CREDIT:
        raise SystemExit(f"{rate:.0f} bids/s for {warmup + window:.0f} s would outbid the sample credit ({CREDIT})")
    base = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
    lot = f"hot-{uuid.uuid4().hex[:8]}"
    run_id = uuid.uuid4().hex[:6]
    stats = Stats()
    path = lambda i: f"/ws/Lot/{lot}?cid={uuid.uuid4()}"  # noqa: E731
    joined_at = time.monotonic()
    async with aiohttp.ClientSession() as session:
        auctioneer_token = await get_token(session, url, f"auct-{run_id}", "auctioneer")
        viewer_tokens = [await get_token(session, url, f"v-{run_id}-{i}", "viewer") for i in range(viewers)]
        bidder_tokens = [await get_token(session, url, f"b-{run_id}-{i}", "bidder") for i in range(bidders)]
    [auctioneer] = await open_clients(base, path, lambda i: auctioneer_token, 1, "bidder", stats)
    opened = await auctioneer.request({"type": "open", "title": "hot lot", "increment": 1})
    if not opened[2]:
        raise RuntimeError(f"could not open the lot: {opened[3]}")
    every = max(1, viewers // max(1, sample))
    sampled = [i for i in range(viewers) if i % every == 0][:sample]
    watchers: list[WsClient] = []
    for i in range(0, viewers, 100):  # sampled viewers decode, the others count frames
        chunk = range(i, min(viewers, i + 100))
        for mode, ids in (("viewer", [j for j in chunk if j in set(sampled)]),
                          ("count", [j for j in chunk if j not in set(sampled)])):
            if ids:
                watchers += await open_clients(base, path, lambda k, ids=ids: viewer_tokens[ids[k]], len(ids),
                                               mode, stats)
    bidding = await open_clients(base, path, lambda i: bidder_tokens[i], bidders, "bidder", stats)
    for bidder in bidding:
        frame = await bidder.request({"type": "register", "limit": CREDIT})
        if not frame[2]:
            raise RuntimeError(f"registration refused: {frame[3]}")
    deadline = time.monotonic() + 60
    while stats.registered < bidders and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    if stats.registered < bidders:
        raise RuntimeError(f"only {stats.registered} of {bidders} credit lines arrived")
    join_s = time.monotonic() - joined_at
    print(f"[load] {viewers} viewers ({len(sampled)} sampled) + {bidders} bidders joined in {join_s:.1f} s; "
          f"rate {rate:.0f}/s", file=sys.stderr, flush=True)
    await asyncio.sleep(0.5)
    stats.rejected.clear()
    replies_before_send = stats.replies

    sent = 0
    stop = asyncio.Event()
    max_burst = max(1, int(rate * SLICE_S + 0.999))

    async def sender() -> None:
        nonlocal sent
        started = time.monotonic()
        while not stop.is_set():
            elapsed = time.monotonic() - started
            n = min(max_burst, int(elapsed * rate) - sent)
            if n > 0:
                who = int(elapsed / SLICE_S) % bidders
                transport = bidding[who].transport
                if transport is not None and not transport.is_closing():
                    transport.write(b"".join([_bid_frame(who, sent + k + 1) for k in range(n)]))
                sent += n
            await asyncio.sleep(TICK_S)

    sending = asyncio.create_task(sender())
    await asyncio.sleep(warmup)

    store = LotStore(db, lot)
    server, me = psutil.Process(server_pid), psutil.Process()
    v0, t0 = store.version(), time.monotonic()
    server_cpu0, my_cpu0, sent0 = _cpu(server), _cpu(me), sent
    frames0 = stats.state_frames + stats.push_frames
    rejected0 = Counter(stats.rejected)
    stats.measuring = True
    await asyncio.sleep(window)
    stats.measuring = False
    v1, t1 = store.version(), time.monotonic()
    server_cpu1, my_cpu1, sent1 = _cpu(server), _cpu(me), sent
    frames1 = stats.state_frames + stats.push_frames
    rejected_in_window = stats.rejected - rejected0
    stop.set()
    await sending
    wall = t1 - t0
    accepted = store.accepted_between(v0, v1)
    await asyncio.sleep(1.0)  # replies in flight arrive (counts below are diagnostics)
    closed = stats.closed
    for client in (*watchers, *bidding, auctioneer):
        client.abort()
    lat = stats.latencies
    p99 = percentile(lat, 99) * 1000
    accepted_per_s = accepted / wall
    return {
        "rate_offered": rate,
        "viewers": viewers,
        "bidders": bidders,
        "latency_sample_viewers": len(sampled),
        "window_s": round(wall, 2),
        "sent_per_s": round((sent1 - sent0) / wall),
        "accepted_per_s": round(accepted_per_s),
        "accepted_ratio": round(accepted_per_s / rate, 3),
        "accepted_in_window": accepted,
        "accepted_counted_by": "server store: BidAccepted events of the Lot's stream between window start and end",
        "refused_in_window": dict(rejected_in_window.most_common(6)),
        "replies_total": stats.replies - replies_before_send,
        "bids_sent_total": sent,
        "frames_per_s": round((frames1 - frames0) / wall),
        "latency_ms": {"samples": len(lat), "p50": round(percentile(lat, 50) * 1000, 1),
                       "p90": round(percentile(lat, 90) * 1000, 1), "p99": round(p99, 1),
                       "max": round(max(lat, default=float("nan")) * 1000, 1)},
        "server_cpu_pct": round((server_cpu1 - server_cpu0) / wall * 100, 1),
        "loadgen_cpu_pct": round((my_cpu1 - my_cpu0) / wall * 100, 1),
        "join_s": round(join_s, 1),
        "client_disconnects": closed,
        "client_errors": dict(stats.errors),
        "ok": bool(lat) and p99 <= 100 and accepted_per_s >= 0.95 * rate,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--db", required=True, help="the server's SQLite file (read-only)")
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--bidders", type=int, default=100)
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=15.0)
    args = parser.parse_args(argv)
    raise_open_file_limit()
    result = asyncio.run(run(args.url, args.db, args.server_pid, args.rate, args.viewers, args.bidders,
                             args.sample, args.warmup, args.window))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
