"""Read-your-writes latency: a command sent → a read presenting its reply's position token answered.

    python -m loadtests.bench_read_your_writes [--bids 300] [--lots 4]

A fresh ``xplatform run`` (as a user starts it: SQLite in a new temporary data directory,
read models on: its embedded secantusdb and the sample projections caught up in-process),
an auctioneer opening ``--lots`` lots, one bidder with a credit line on each (so every bid
is accepted at once: one stored event), then ``--bids`` bids one after another, round robin
over the lots: each timed from sending the bid until ``GET /read/auction_board/<lot>?after=
<token>`` answered, and checked (the board shows that bid). Prints one JSON object last:
``read_your_writes_p50_ms`` / ``_p99_ms`` (the whole), ``command_p50_ms`` (until the reply)
and ``read_p50_ms`` / ``_p99_ms`` (the read's own share, its wait for the projector included).
Target (issue 12): p99 <= 150 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import aiohttp

from edge.client import connect, read
from loadtests.common import emit, percentile
from ops.local.xplatform_run import XplatformRun

ROOT = Path(__file__).resolve().parents[1]


async def _token(session: aiohttp.ClientSession, url: str, sub: str, role: str) -> str:
    async with session.get(f"{url}dev/token", params={"sub": sub, "role": role}) as resp:
        return str((await resp.json())["token"])


async def measure(url: str, bids: int, lots: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as session:
        ann, bob = await _token(session, url, "ann", "auctioneer"), await _token(session, url, "bob", "bidder")
        names = [f"ryw-{n}" for n in range(lots)]
        auctioneers = [await connect(url, "Lot", name, ann) for name in names]
        bidders = [await connect(url, "Lot", name, bob) for name in names]
        for auctioneer in auctioneers:
            assert (await auctioneer.request({"type": "open", "title": "bench", "increment": 1})).ok
        for bidder in bidders:
            while (await bidder.request({"type": "register", "limit": 10 * bids + 100})).payload["status"] != "registered":
                await asyncio.sleep(0.05)
        whole: list[float] = []
        commands: list[float] = []
        reads: list[float] = []
        for i in range(bids):
            n = i % lots
            amount = i // lots + 1
            started = time.perf_counter()
            reply = await bidders[n].request({"type": "bid", "amount": amount})
            replied = time.perf_counter()
            assert reply.ok and reply.payload["status"] == "accepted" and reply.position, reply
            lot = await read(url, "auction_board", bob, key=names[n], after=reply.position, session=session)
            done = time.perf_counter()
            assert lot["high_amount"] == amount, (lot, amount)
            whole.append((done - started) * 1000)
            commands.append((replied - started) * 1000)
            reads.append((done - replied) * 1000)
        for client in (*auctioneers, *bidders):
            await client.close()
    return {"read_your_writes_p50_ms": round(percentile(whole, 50), 2),
            "read_your_writes_p99_ms": round(percentile(whole, 99), 2),
            "command_p50_ms": round(percentile(commands, 50), 2),
            "read_p50_ms": round(percentile(reads, 50), 2), "read_p99_ms": round(percentile(reads, 99), 2),
            "samples": len(whole)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bids", type=int, default=300)
    parser.add_argument("--lots", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xplatform-bench-ryw-") as data_dir:
        env = {**os.environ, "XPLATFORM_DATA_DIR": data_dir, "XPLATFORM_STORE": "sqlite", "XPLATFORM_RUN_READ_MODELS": "1"}
        for name in ("XPLATFORM_MONGO_URI", "MONGO_URI", "XPLATFORM_EDGE_WORKERS"):
            env.pop(name, None)
        server = XplatformRun.start(("--port", "0"), cwd=ROOT, env=env)
        try:
            server.wait_for(r"read models on ", 60)
            result = asyncio.run(measure(server.url, args.bids, args.lots))
        finally:
            server.close()
    emit({"benchmark": "read_your_writes", "bids": args.bids, "lots": args.lots, "store": "sqlite",
          "read_models": "embedded secantusdb, catch-up projectors in the run process", **result})


if __name__ == "__main__":
    main()
