"""The sample warehouse: a primary for the ``StockLevel`` state proxy (``domain/stock``), as a
server process of its own.

    python -m ops.warehouse [--host 127.0.0.1] [--port 0]

It serves the HTTP connector's contract (``infrastructure/proxies/http.py``) for stock
levels: ``GET /stock/<sku>`` → ``{"state": {"on_hand", "reserved"}, "version"}`` with an
``ETag``; ``POST /stock/<sku>/commands`` (``{"op": "reserve"|"release", "qty"}``, header
``Idempotency-Key``) applied once per key. Every SKU exists, with
:data:`STARTING_STOCK` units on hand until reserved. Two knobs make it misbehave on purpose,
for the demo page and the benchmark: ``POST /admin?delay=<seconds>`` (each call waits that
long before answering) and ``POST /admin?down=1`` (503 to every call); ``GET /admin`` gives
the knobs and how many calls it served. It listens on loopback by default: the knobs have
no authentication, so it is a local sample, never a service.

Who starts it (:class:`SampleWarehouse`): ``xplatform run``, as a child process, when it serves
``StockLevel`` and ``XPLATFORM_PROXY_PRIMARIES`` names no primary for it
(``XPLATFORM_RUN_SAMPLE_WAREHOUSE``), so the demo page's stock card has a primary to pull
from; and ``loadtests/bench_proxy.py`` (its local primary). It prints ``warehouse serving on
<url>`` once it listens. Shipped with the product (not ``ops/local``) because ``xplatform
run`` starts it; it is a sample all the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import OrderedDict
from pathlib import Path
from typing import Any

from aiohttp import web

from infrastructure.errors import InfrastructureError
from ops.children import DIE_WITH_PARENT, stop_child

SAMPLE_PROXY = "StockLevel"
"""The category whose primary this is (``domain.stock.StockLevel``; named, not imported: the
platform imports no sample domain)."""
STARTING_STOCK = 100
"""Units on hand of a SKU nobody reserved from yet."""
KEYS_KEPT = 10_000
"""Idempotency keys remembered (oldest forgotten first): far more than a demo or a benchmark
sends in the minutes a retry may take."""
SERVING = re.compile(r"warehouse serving on (http://\S+/stock)")

_LAUNCH = DIE_WITH_PARENT + ("import runpy, sys\nsys.argv[0] = 'ops.warehouse'\n"
                             "runpy.run_module('ops.warehouse', run_name='__main__')\n")
"""The child's code: it ends when its parent does (a killed `xplatform run` leaves no
warehouse behind), then serves as ``python -m ops.warehouse``."""


class Warehouse:
    """The stock levels and the knobs (one event loop: no locks)."""

    def __init__(self) -> None:
        self.levels: dict[str, dict[str, int]] = {}
        self.versions: dict[str, int] = {}
        self.changed_at: dict[str, float] = {}
        """When each SKU's level last changed (the state's ``at``)."""
        self.applied: OrderedDict[str, None] = OrderedDict()
        self.delay_s = 0.0
        self.down = False
        self.calls = {"GET": 0, "POST": 0}

    def level(self, sku: str) -> dict[str, int]:
        if sku not in self.levels:
            self.levels[sku] = {"on_hand": STARTING_STOCK, "reserved": 0}
            self.versions[sku] = 1
            self.changed_at[sku] = time.time()
        return self.levels[sku]

    async def _misbehave(self) -> web.Response | None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.Response(status=503, text="the warehouse is down (demo knob)") if self.down else None

    async def get(self, request: web.Request) -> web.Response:
        self.calls["GET"] += 1
        sku = request.match_info["sku"]
        refusal = await self._misbehave()
        if refusal is not None:
            return refusal
        level = self.level(sku)
        return web.json_response({"state": level, "version": self.versions[sku],
                                  "at": self.changed_at[sku]},
                                 headers={"ETag": f'"{self.versions[sku]}"'})

    async def command(self, request: web.Request) -> web.Response:
        self.calls["POST"] += 1
        sku = request.match_info["sku"]
        key = request.headers.get("Idempotency-Key", "")
        refusal = await self._misbehave()
        if refusal is not None:
            return refusal
        try:
            command = await request.json()
        except ValueError:
            return web.json_response({"error": "the command is not JSON"}, status=400)
        qty = command.get("qty") if isinstance(command, dict) else None
        op = command.get("op") if isinstance(command, dict) else None
        if op not in ("reserve", "release") or type(qty) is not int or qty <= 0:
            return web.json_response({"error": "command must be {op: reserve|release, qty: positive integer}"},
                                     status=400)
        level = self.level(sku)
        if key and key in self.applied:
            return web.json_response({"applied": True, "repeated": True})
        change = qty if op == "reserve" else -min(qty, level["reserved"])
        if op == "reserve" and level["on_hand"] - level["reserved"] < qty:
            return web.json_response({"error": "not enough stock"}, status=409)
        level["reserved"] += change
        self.versions[sku] += 1
        self.changed_at[sku] = time.time()
        if key:
            self.applied[key] = None
            while len(self.applied) > KEYS_KEPT:
                self.applied.popitem(last=False)
        return web.json_response({"applied": True})

    async def admin(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                if "delay" in request.query:
                    delay = float(request.query["delay"])
                    if not 0 <= delay <= 600:
                        raise ValueError(delay)
                    self.delay_s = delay
                if "down" in request.query:
                    self.down = request.query["down"] not in ("0", "", "false")
            except ValueError:
                return web.json_response({"error": "delay must be 0..600 seconds"}, status=400)
        return web.json_response({"delay": self.delay_s, "down": self.down, "calls": self.calls})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/stock/{sku}", self.get)
        app.router.add_post("/stock/{sku}/commands", self.command)
        app.router.add_route("*", "/admin", self.admin)
        return app


class WarehouseStartError(InfrastructureError):
    """Raised when the sample warehouse exits or does not listen in time (its output's end in
    the message)."""


class SampleWarehouse:
    """The warehouse as a child process of the caller, on a free loopback port chosen here,
    output to a log file (never a pipe). :meth:`start` returns at once with :attr:`url` known
    (``xplatform run`` does not wait for it: until it listens a pull is ``primary_unavailable``);
    :meth:`wait_listening` waits; :meth:`set` turns its knobs; :meth:`stop` ends it."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log_path: Path, own_dir: Path | None) -> None:
        self.process = process
        self.url = url
        """Its stock URL, ``http://127.0.0.1:<port>/stock``: what XPLATFORM_PROXY_PRIMARIES names."""
        self.log_path = log_path
        self._own_dir = own_dir

    @classmethod
    def start(cls, log_path: Path | None = None) -> SampleWarehouse:
        own_dir = None
        if log_path is None:
            own_dir = Path(tempfile.mkdtemp(prefix="xplatform-warehouse-"))
            log_path = own_dir / "warehouse.log"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with open(log_path, "wb") as log:
            process = subprocess.Popen([sys.executable, "-c", _LAUNCH, "--port", str(port)],  # noqa: S603
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        return cls(process, f"http://127.0.0.1:{port}/stock", log_path, own_dir)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def wait_listening(self, timeout_s: float = 30.0) -> None:
        """Return once it printed that it serves; WarehouseStartError if it exits first or not in time."""
        deadline = time.monotonic() + timeout_s
        while SERVING.search(self.log()) is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise WarehouseStartError(f"the sample warehouse did not start: {self.log()}")
            time.sleep(0.05)

    def set(self, **knobs: Any) -> dict[str, Any]:
        """Turn knobs (``delay=2.0``, ``down=True``); returns the knobs and call counts."""
        query = "&".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in knobs.items())
        request = urllib.request.Request(f"{self.url.removesuffix('/stock')}/admin?{query}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
        return answer

    def stop(self) -> None:
        """End it (by its PID: SIGTERM, SIGKILL after 10 s) and remove its directory if ours."""
        stop_child(self.process)
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    async def serve() -> None:
        runner = web.AppRunner(Warehouse().app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"warehouse serving on http://{args.host}:{port}/stock", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
