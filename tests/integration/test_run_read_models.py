"""``xplatform run`` shows read models with no set-up (ops/wiring/readmodels.py): it starts
secantusdb as a child process, projects the sample auction in-process and serves the query
API, so a bid read with its reply's token is on the board; when its database cannot be had
it still serves, says so in one line, and reads answer 503 with the reason. Its /metrics
carries the read models' metrics (applied events, lag) beside the edge's and the node's."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from pathlib import Path

import aiohttp
import psutil

from edge.client import connect, read
from ops.local.xplatform_run import XplatformRun

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "XPLATFORM_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT), **extra}
    for name in ("XPLATFORM_EDGE_DEV_TOKENS", "XPLATFORM_EDGE_WORKERS", "XPLATFORM_MONGO_URI", "MONGO_URI",
                 "XPLATFORM_RUN_READ_MODELS"):
        if name not in extra:
            env.pop(name, None)
    return env


async def _token(url: str, sub: str, role: str) -> str:
    async with aiohttp.ClientSession() as session, \
            session.get(f"{url}dev/token", params={"sub": sub, "role": role}) as resp:
        return str((await resp.json())["token"])


async def _bid_and_read(url: str) -> None:
    ann, bob = await _token(url, "ann", "auctioneer"), await _token(url, "bob", "bidder")
    auctioneer = await connect(url, "Lot", "vase", ann)
    bidder = await connect(url, "Lot", "vase", bob)
    try:
        assert (await auctioneer.request({"type": "open", "title": "Vase", "increment": 5})).ok
        reply = await bidder.request({"type": "register", "limit": 1000})
        while reply.payload.get("status") != "registered":  # the account raised the line (a push says so too)
            await asyncio.sleep(0.05)
            reply = await bidder.request({"type": "register", "limit": 1000})
        bid = await bidder.request({"type": "bid", "amount": 50})
        assert bid.ok and bid.payload["status"] == "accepted" and bid.position is not None, bid
        lot = await read(url, "auction_board", bob, key="vase", after=bid.position, wait_ms=5000)
        assert (lot["high_amount"], lot["high_bidder"], lot["bid_count"]) == (50, "bob", 1)
        mine = await read(url, "bidder_summary", bob, key="bob", after=bid.position, wait_ms=5000)
        assert mine["bids"] == 1 and mine["best_bid"] == 50
    finally:
        await auctioneer.close()
        await bidder.close()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_run_serves_read_models_from_its_own_secantusdb(tmp_path: Path) -> None:
    server = XplatformRun.start(("--port", "0"), cwd=ROOT, env=_env(tmp_path, XPLATFORM_PROJECTOR_LAG_INTERVAL_S="0.2"))
    try:
        server.wait_for(r"read models on \(embedded secantusdb\): auction_board, bidder_summary", 60)
        databases = [p for p in psutil.Process(server.process.pid).children(recursive=True)
                     if "secantus" in " ".join(p.cmdline())]
        assert len(databases) == 1, server.log()
        asyncio.run(_bid_and_read(server.url))
        # its /metrics carries the read models' own: what they applied, and their lag once caught up
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(f"{server.url}metrics", timeout=10) as response:
                page = response.read().decode()
            seen = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                    for line in page.splitlines() if line.startswith("xplatform_projection_")}
            if all(seen.get(f'xplatform_projection_lag_events{{projection="{name}"}}') == 0
                   for name in ("auction_board", "bidder_summary")):
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.1)
        assert seen['xplatform_projection_events_total{outcome="applied",projection="auction_board"}'] >= 2, seen  # opened, bid
        assert seen['xplatform_projection_lag_seconds{projection="auction_board"}'] == 0, seen
        assert seen['xplatform_projection_parked_events{projection="auction_board"}'] == 0, seen
        assert seen['xplatform_projection_position{projection="auction_board"}'] > 0, seen
        assert server.stop(signal.SIGINT) == 0, server.log()
        assert _gone(databases[0].pid), "secantusdb outlived xplatform run"
    finally:
        server.close()


def test_run_without_its_database_still_serves_and_says_read_models_are_off(tmp_path: Path) -> None:
    env = _env(tmp_path, XPLATFORM_MONGO_URI="mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300&connectTimeoutMS=300")
    server = XplatformRun.start(("--port", "0"), cwd=ROOT, env=env)
    try:
        server.wait_for(r"read models off: ", 60)
        url = server.url

        async def scenario() -> None:
            ann = await _token(url, "ann", "auctioneer")
            auctioneer = await connect(url, "Lot", "vase", ann)
            try:
                assert (await auctioneer.request({"type": "open", "title": "Vase", "increment": 5})).ok
            finally:
                await auctioneer.close()
            async with aiohttp.ClientSession() as session, session.get(
                    f"{url}read/auction_board/vase", headers={"Authorization": f"Bearer {ann}"}) as resp:
                body = await resp.json()
                assert resp.status == 503 and body["error"] == "read_models_unavailable", body
                assert body["reason"].startswith("read models are off: ") and body["retryable"], body

        asyncio.run(scenario())
        assert server.log().count("read models off") == 1, server.log()
        assert server.stop(signal.SIGINT) == 0, server.log()
    finally:
        server.close()
