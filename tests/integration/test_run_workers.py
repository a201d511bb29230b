"""``xplatform run --workers N``: a state node process and N edge worker processes on one port
(ops/wiring/workers.py), started as a user starts it, talked to over real websockets."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil
import pytest

from domain import EntityRef
from infrastructure.persistence import new_mapper, open_journal
from infrastructure.settings import Settings
from tests.support.xplatform_run import served

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "XPLATFORM_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}
    env.pop("XPLATFORM_EDGE_DEV_TOKENS", None)
    env.pop("XPLATFORM_EDGE_WORKERS", None)
    return env


def _workers_of(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if "ops.wiring.workers" in " ".join(p.cmdline())]


def _run_pid(url: str) -> int:
    """The ``xplatform run`` process listening on ``url``'s port (the test started it)."""
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    for proc in psutil.process_iter(["cmdline"]):
        if "ops.cli" in " ".join(proc.info["cmdline"] or []) and proc.children() and any(
                "ops.wiring.workers" in " ".join(c.cmdline()) for c in proc.children()):
            workers = _workers_of(proc.pid)
            if any(conn.laddr.port == port for w in workers for conn in w.net_connections("tcp")):
                return proc.pid
    raise AssertionError(f"no xplatform run with workers listens on {port}")


async def _token(session: aiohttp.ClientSession, url: str, sub: str, role: str) -> str:
    async with session.get(f"{url}dev/token", params={"sub": sub, "role": role}) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["token"])


async def _auction(url: str, lot_id: str) -> None:
    """An auctioneer opens a lot, a viewer watches, a bidder bids: replies, a state push, and
    tokens fetched from whichever worker answered are accepted by whichever worker serves the socket."""
    from edge.client import connect

    async with aiohttp.ClientSession() as session:
        tokens = {name: await _token(session, url, name, role)
                  for name, role in (("ann", "auctioneer"), ("vic", "viewer"), ("bob", "bidder"))}
    # Several sockets per user: with 2 workers sharing the port, both serve some of them.
    auctioneer = await connect(url, "Lot", lot_id, tokens["ann"])
    viewers = [await connect(url, "Lot", lot_id, tokens["vic"]) for _ in range(4)]
    bidder = await connect(url, "Lot", lot_id, tokens["bob"])
    try:
        opened = await auctioneer.request({"type": "open", "title": "Vase", "increment": 5})
        # the reply's position token crossed the network transport (worker <-> node) with it
        assert opened.ok and opened.position is not None and opened.position.startswith(f"Lot-{lot_id}@"), opened
        reply = await bidder.request({"type": "register", "limit": 1000})
        while reply.payload.get("status") != "registered":  # the account raises the line asynchronously
            await asyncio.sleep(0.05)
            reply = await bidder.request({"type": "register", "limit": 1000})
        for viewer in viewers:
            while True:  # pushes until the lot shows open
                state = await viewer.next_push(timeout=30)
                if isinstance(state, dict) and state.get("status") == "open":
                    break
        reply = await bidder.request({"type": "bid", "amount": 50})
        assert reply.ok and reply.payload["status"] == "accepted", reply
        for viewer in viewers:
            while True:
                state = await viewer.next_push(timeout=30)
                if isinstance(state, dict) and state.get("high_amount") == 50:
                    break
        low = await bidder.request({"type": "bid", "amount": 51})
        assert not low.ok and low.code == "rejected"  # below the increment: refused, nothing stored
    finally:
        for client in (auctioneer, *viewers, bidder):
            await client.close()


def _stored(tmp_path: Path, lot_id: str) -> list[str]:
    journal = open_journal(Settings(store="sqlite", data_dir=str(tmp_path / "data")))
    try:
        mapper = new_mapper()
        return [type(mapper.to_domain_event(e)).__name__ for e in journal.read(EntityRef("Lot", lot_id).stream_id)]
    finally:
        journal.close()


def _loads_uvloop(process: psutil.Process) -> bool:
    """Whether ``process`` has uvloop's loop extension mapped (it is imported only to run on it)."""
    return any("uvloop" in m.path for m in process.memory_maps())


def test_workers_serve_the_platform_on_one_port_and_everything_is_stored(tmp_path: Path) -> None:
    with served(tmp_path, _env(tmp_path), "--workers", "2") as url:
        run_pid = _run_pid(url)
        workers = _workers_of(run_pid)
        assert len(workers) == 2
        # the default event loop (setting event_loop=auto): uvloop in the node and in every worker
        assert _loads_uvloop(psutil.Process(run_pid)) and all(_loads_uvloop(w) for w in workers)
        asyncio.run(_auction(url, "w-1"))
    names = _stored(tmp_path, "w-1")
    assert names.count("BidAccepted") == 1 and "Opened" in names  # the refused bid stored nothing
    for worker in workers:
        _wait_gone(worker, "an edge worker after Ctrl-C")


def test_the_standard_loop_on_request_serves_the_same(tmp_path: Path) -> None:
    """XPLATFORM_EVENT_LOOP=asyncio (ruling uvloop out while chasing a loop-level bug): the
    same auction through a worker, and uvloop loaded nowhere."""
    with served(tmp_path, {**_env(tmp_path), "XPLATFORM_EVENT_LOOP": "asyncio"}, "--workers", "1") as url:
        run_pid = _run_pid(url)
        assert not _loads_uvloop(psutil.Process(run_pid)) and not any(map(_loads_uvloop, _workers_of(run_pid)))
        asyncio.run(_auction(url, "w-asyncio"))
    assert _stored(tmp_path, "w-asyncio").count("BidAccepted") == 1


def _wait_gone(process: psutil.Process, what: str) -> None:
    try:
        process.wait(timeout=60)
    except psutil.TimeoutExpired:
        raise AssertionError(f"{what} (pid {process.pid}) still runs") from None


def test_secrets_are_private_to_the_run_and_removed_at_exit(tmp_path: Path) -> None:
    with served(tmp_path, _env(tmp_path), "--workers", "1") as url:
        [worker] = _workers_of(_run_pid(url))
        args = worker.cmdline()
        key_file = Path(args[args.index("--dev-key") + 1])
        run_dir = key_file.parent
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
        files = sorted(p.name for p in run_dir.iterdir())
        assert files == ["dev-token-key.pem", "edge.secret", "state.secret"]
        assert all(stat.S_IMODE((run_dir / f).stat().st_mode) == 0o600 for f in files)
        env_of_worker = worker.environ()
        assert env_of_worker["XPLATFORM_CLUSTER_SECRET_FILE"] == ""  # a worker holds the edge secret only
    assert not run_dir.exists()


def test_a_killed_run_process_takes_its_workers_with_it(tmp_path: Path) -> None:
    server = subprocess.Popen([sys.executable, "-m", "ops.cli", "run", "--port", "0", "--workers", "2"],
                              cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    try:
        assert server.stdout is not None
        line = ""
        while "serving on" not in line:
            line = server.stdout.readline()
            assert line, "xplatform run --workers 2 exited before serving"
        workers = _workers_of(server.pid)
        assert len(workers) == 2
        server.send_signal(signal.SIGKILL)
        server.wait()
        for worker in workers:
            _wait_gone(worker, "an edge worker of a killed run process")  # its stdin closed: it exits
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_worker_that_dies_is_started_again_and_the_port_keeps_serving(tmp_path: Path) -> None:
    with served(tmp_path, _env(tmp_path), "--workers", "1") as url:
        pid = _run_pid(url)
        [worker] = _workers_of(pid)
        worker.send_signal(signal.SIGKILL)
        _wait_gone(worker, "the killed worker")
        replacement: list[psutil.Process] = []
        deadline = time.monotonic() + 60
        while not replacement and time.monotonic() < deadline:
            replacement = [w for w in _workers_of(pid) if w.pid != worker.pid]
            time.sleep(0.2)
        assert replacement, "no worker was started again"
        asyncio.run(_wait_serving(url))
        asyncio.run(_auction(url, "w-2"))


async def _wait_serving(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(f"{url}dev/token", params={"sub": "x"}) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("the port did not serve again")


@pytest.mark.parametrize("value", ["-1"])
def test_a_negative_worker_count_is_refused_in_one_line(tmp_path: Path, value: str) -> None:
    done = subprocess.run([sys.executable, "-m", "ops.cli", "run", "--port", "0", "--workers", value],
                          cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("xplatform: ConfigurationError: --workers must be at least")


def test_workers_serve_the_query_api_over_the_runs_read_models(tmp_path: Path) -> None:
    """The run process projects (its embedded database, as without --workers); every worker
    serves /read over it: a bid read with its reply's position token is on the board,
    whichever worker answers (a new connection each time: the kernel spreads them)."""
    from edge.client import ClientError, connect, read

    async def scenario(url: str) -> None:
        async with aiohttp.ClientSession() as session:
            ann, bob = await _token(session, url, "ann", "auctioneer"), await _token(session, url, "bob", "bidder")
        auctioneer, bidder = await connect(url, "Lot", "w-read", ann), await connect(url, "Lot", "w-read", bob)
        try:
            assert (await auctioneer.request({"type": "open", "title": "Vase", "increment": 5})).ok
            reply = await bidder.request({"type": "register", "limit": 1000})
            while reply.payload.get("status") != "registered":  # the account raised the line
                await asyncio.sleep(0.05)
                reply = await bidder.request({"type": "register", "limit": 1000})
            bid = await bidder.request({"type": "bid", "amount": 50})
            assert bid.ok and bid.position is not None, bid
            served_by_ready = 0
            for _ in range(200):  # a worker answers 503 read_models_unavailable until it reached the database
                try:
                    lot = await read(url, "auction_board", bob, key="w-read", after=bid.position, wait_ms=5000)
                except ClientError as refused:
                    assert refused.status == 503 and refused.error == "read_models_unavailable", refused
                    await asyncio.sleep(0.1)
                    continue
                assert (lot["high_amount"], lot["high_bidder"], lot["bid_count"]) == (50, "bob", 1), lot
                served_by_ready += 1
                if served_by_ready == 6:
                    break
            assert served_by_ready == 6
        finally:
            await auctioneer.close()
            await bidder.close()

    env = {**_env(tmp_path), "XPLATFORM_RUN_READ_MODELS": "1"}
    env.pop("XPLATFORM_MONGO_URI", None)
    with served(tmp_path, env, "--workers", "2") as url:
        asyncio.run(scenario(url))
