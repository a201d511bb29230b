"""A real HTTP primary for state proxy tests: a warehouse's stock levels behind the HTTP
connector's contract (infrastructure/proxies/http.py), with knobs to make it slow, down or
forgetful of idempotency keys, and a log of every request in arrival order.

Run it in the test's event loop (``async with Warehouse() as primary``) or on a thread of
its own (``WarehouseThread``, for tests whose state nodes are other processes).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web


class Warehouse:
    """Stock levels per SKU: ``{"on_hand", "reserved"}`` with a version per SKU."""

    def __init__(self, honour_keys: bool = True) -> None:
        self.honour_keys = honour_keys
        self.levels: dict[str, dict[str, int]] = {}
        self.versions: dict[str, int] = {}
        self.log: list[tuple[str, str, str | None]] = []
        """(method, sku, idempotency key) of every request, in arrival order."""
        self.applied: list[str] = []
        """Idempotency keys of the commands applied, in order (one per application)."""
        self.down = False
        """Answer 503 to everything."""
        self.gate: asyncio.Event | None = None
        """When set to an unset event: requests wait for it before answering (a slow primary)."""
        self.hold_after_apply: asyncio.Event | None = None
        """When set: a command is applied, then its answer waits for this event (lost answers)."""
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._waited: set[asyncio.Event] = set()  # every event a request waited on: released at stop

    def level(self, sku: str, on_hand: int, reserved: int = 0) -> None:
        self.levels[sku] = {"on_hand": on_hand, "reserved": reserved}
        self.versions[sku] = self.versions.get(sku, 0) + 1

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/stock/{sku}", self._get)
        app.router.add_post("/stock/{sku}/commands", self._post)
        return app

    async def _wait_gate(self) -> None:
        if self.gate is not None:
            await self._wait(self.gate)

    async def _wait(self, event: asyncio.Event) -> None:
        self._waited.add(event)
        await event.wait()

    async def _get(self, request: web.Request) -> web.Response:
        sku = request.match_info["sku"]
        self.log.append(("GET", sku, None))
        await self._wait_gate()
        if self.down:
            return web.Response(status=503, text="down")
        if sku not in self.levels:
            return web.json_response({"state": None, "version": 0})
        return web.json_response({"state": self.levels[sku], "version": self.versions[sku]},
                                 headers={"ETag": f'"{sku}-{self.versions[sku]}"'})

    async def _post(self, request: web.Request) -> web.Response:
        sku = request.match_info["sku"]
        key = request.headers.get("Idempotency-Key")
        self.log.append(("POST", sku, key))
        await self._wait_gate()
        if self.down:
            return web.Response(status=503, text="down")
        command = await request.json()
        if command.get("op") != "reserve" or not isinstance(command.get("qty"), int):
            return web.json_response({"error": "unknown command"}, status=400)
        if not (self.honour_keys and key in self.applied):
            level = self.levels.setdefault(sku, {"on_hand": 0, "reserved": 0})
            level["reserved"] += command["qty"]
            self.versions[sku] = self.versions.get(sku, 0) + 1
            self.applied.append(key or "")
        if self.hold_after_apply is not None:
            await self._wait(self.hold_after_apply)
        return web.json_response({"applied": True})

    async def start(self, host: str = "127.0.0.1") -> str:
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{host}:{port}/stock"
        return self.url

    async def stop(self) -> None:
        for event in self._waited:
            event.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Warehouse:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@contextmanager
def warehouse_thread(**kwargs: Any) -> Iterator[Warehouse]:
    """A :class:`Warehouse` serving from a thread with its own event loop."""
    warehouse = Warehouse(**kwargs)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(warehouse.start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(warehouse.stop())
        loop.close()

    thread = threading.Thread(target=serve, name="warehouse-primary", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the warehouse primary did not start")
    try:
        yield warehouse
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
