"""The sample warehouse (ops/warehouse.py): its HTTP contract served to the real HTTP connector,
and when ``xplatform run`` starts it (start_sample_warehouse)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from domain.refs import EntityRef
from infrastructure.errors import PrimaryRefusedCall, PrimaryUnreachable
from infrastructure.proxies.breaker import CircuitBreaker
from infrastructure.proxies.http import HttpConnector, HttpSessions
from infrastructure.settings import Settings
from ops.local.xplatform_run import XplatformRun
from ops.warehouse import STARTING_STOCK, Warehouse
from ops.wiring.proxies import start_sample_warehouse

ROOT = Path(__file__).resolve().parents[2]
SKU = EntityRef("StockLevel", "vase")


def test_the_connector_pulls_and_commands_once_per_key_and_the_knobs_fail_it() -> None:
    async def main() -> None:
        warehouse = Warehouse()
        runner = web.AppRunner(warehouse.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        sessions = HttpSessions()
        connector = HttpConnector(f"http://127.0.0.1:{port}/stock", sessions, request_timeout_s=5, retries=0,
                                  backoff_s=0, breaker=CircuitBreaker(100, 1))
        try:
            first = await connector.pull(SKU)
            assert first.state == {"on_hand": STARTING_STOCK, "reserved": 0} and first.version == 1 and first.etag
            await connector.command(SKU, {"op": "reserve", "qty": 3}, "key-1")
            await connector.command(SKU, {"op": "reserve", "qty": 3}, "key-1")  # a retry: applied once
            after = await connector.pull(SKU)
            assert after.state == {"on_hand": STARTING_STOCK, "reserved": 3} and after.version == 2
            assert after.at is not None and first.at is not None and after.at >= first.at
            for bad in ({"op": "steal", "qty": 1}, {"op": "reserve", "qty": 0}, {"op": "reserve", "qty": 10**6}):
                try:
                    await connector.command(SKU, bad, f"key-{bad}")
                except PrimaryRefusedCall:
                    pass
                else:
                    raise AssertionError(f"{bad} was accepted")
            assert (await connector.pull(SKU)).version == 2  # refusals changed nothing
            warehouse.down = True
            try:
                await connector.pull(SKU)
            except PrimaryUnreachable:
                pass
            else:
                raise AssertionError("a down warehouse answered")
            assert warehouse.calls == {"GET": 4, "POST": 5}
        finally:
            await sessions.close()
            await runner.cleanup()

    asyncio.run(main())


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_run_starts_it_only_for_a_served_stock_level_without_a_named_primary(tmp_path: Any) -> None:
    named = Settings(data_dir=str(tmp_path), proxy_primaries="StockLevel=http://warehouse.example:8080/stock")
    off = Settings(data_dir=str(tmp_path), run_sample_warehouse=0)
    other_entities = Settings(data_dir=str(tmp_path), entities="domain.presence:ENTITIES")
    for settings in (named, off, other_entities):
        assert start_sample_warehouse(settings) == (settings, None)

    settings, warehouse = start_sample_warehouse(Settings(data_dir=str(tmp_path), proxy_primaries="Rate=http://r/x"))
    assert warehouse is not None
    try:
        assert settings.proxy_primaries == f"Rate=http://r/x,StockLevel={warehouse.url}"
        warehouse.wait_listening()
        assert _get(f"{warehouse.url}/vase")["state"] == {"on_hand": STARTING_STOCK, "reserved": 0}
        assert warehouse.set(delay=0.01, down=True) == {"delay": 0.01, "down": True, "calls": {"GET": 1, "POST": 0}}
    finally:
        warehouse.stop()
    assert warehouse.process.returncode is not None


def test_a_killed_run_leaves_no_warehouse_behind(tmp_path: Any) -> None:
    """``xplatform run`` SIGKILLed (no shutdown runs): its sample warehouse ends with it."""
    env = {**os.environ, "XPLATFORM_DATA_DIR": str(tmp_path), "XPLATFORM_STORE": "sqlite", "XPLATFORM_RUN_READ_MODELS": "0"}
    for name in ("XPLATFORM_ENTITIES", "XPLATFORM_PROXY_PRIMARIES", "XPLATFORM_RUN_SAMPLE_WAREHOUSE"):
        env.pop(name, None)
    run = XplatformRun.start(("--port", "0"), cwd=ROOT, env=env)
    try:
        url = run.wait_for(r"sample warehouse \(the StockLevel proxies' primary\) at (http://\S+/stock)", 10).group(1)
        warehouses = [child for child in psutil.Process(run.process.pid).children()
                      if "ops.warehouse" in " ".join(child.cmdline())]
        assert len(warehouses) == 1, psutil.Process(run.process.pid).children()
        deadline = time.monotonic() + 30
        while True:  # it listens (started, not waited for, by the run)
            try:
                assert _get(f"{url}/sku")["version"] == 1
                break
            except OSError:
                assert time.monotonic() < deadline, "the warehouse never listened"
                time.sleep(0.05)
    finally:
        run.close()  # SIGKILL
    assert run.process.returncode == -signal.SIGKILL
    psutil.wait_procs(warehouses, timeout=10)
    left = warehouses[0]
    assert not left.is_running() or left.status() == psutil.STATUS_ZOMBIE, f"warehouse pid {left.pid} outlived the run"
