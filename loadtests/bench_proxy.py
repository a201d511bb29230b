"""State proxies: cached reads vs a plain entity's, force pulls/s, and other entities under a slow primary.

    python -m loadtests.bench_proxy [--proxies 20] [--others 20] [--read-rate 400] [--other-rate 200]
                                    [--pull-every 0.5] [--slow-delay 2] [--warmup 3] [--window 10] [--quick]

Three processes, real sockets between them:

- the **primary**: the sample warehouse (``ops/warehouse.py``, a small aiohttp
  server), whose per-call delay the load switches between 0 and ``--slow-delay`` s;
- the **server**, started the way the README starts it (``python -m ops.cli run --port 0``:
  SQLite in a new temporary data directory) with the environment in :func:`server_env`:
  the proxy sample and a plain entity served (``domain.stock:ENTITIES`` +
  ``loadtests.entities:Tally``), ``StockLevel``'s primary named, read models off (not
  measured here), the per-connection/per-user limits raised (every connection uses one dev
  token), and one request to the primary allowed 2.5 s, so a 2 s call completes (the
  default 2 s would time it out and open the breaker: failing fast is not "keeps pulling");
- the **load** (:mod:`loadtests.proxy_load`): four phases, each a fixed warm-up then a
  fixed window, described there.

Prints ONE JSON object last: ``cached_read_p99_ms``, ``entity_read_p99_ms`` and
``cached_vs_entity_ratio`` (target <= 1.5); ``force_pulls_per_s``; ``baseline_other_p99_ms``,
``slow_primary_other_p99_ms`` and ``slow_vs_baseline_other_ratio`` (target <= 1.5); the
counts behind each, and the parameters. About 70 s with the defaults. ``--quick`` (a smoke
run: 0.5 s warm-ups, 1.5 s windows, 4 proxies and 4 other entities, lower rates) only shows that the
harness works; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from loadtests.bench_hot_entity import SERVER_ENV as UNLIMITED_RATES
from loadtests.common import emit
from ops.local.xplatform_run import XplatformRun
from ops.warehouse import SampleWarehouse

ROOT = Path(__file__).resolve().parents[1]
ENTITIES = "domain.stock:ENTITIES,loadtests.entities:Tally"
QUICK = {"proxies": 4, "others": 4, "read_rate": 100.0, "other_rate": 50.0, "warmup": 0.5, "window": 1.5}
LOAD_ARGS = ("proxies", "others", "read_rate", "other_rate", "pull_every", "slow_delay", "warmup", "window")


def server_env(data_dir: str, primary_url: str) -> dict[str, str]:
    """What the server runs with: the settings the module docstring lists, the rest default."""
    env = {**os.environ, "XPLATFORM_DATA_DIR": data_dir, "XPLATFORM_STORE": "sqlite", "XPLATFORM_ENTITIES": ENTITIES,
           "XPLATFORM_PROXY_PRIMARIES": f"StockLevel={primary_url}", "XPLATFORM_PROXY_REQUEST_TIMEOUT_S": "2.5",
           "XPLATFORM_RUN_READ_MODELS": "0", "XPLATFORM_EDGE_MAX_CONNECTIONS_PER_USER": "0", **UNLIMITED_RATES}
    for name in ("XPLATFORM_EDGE_WORKERS", "XPLATFORM_MONGO_URI", "MONGO_URI"):
        env.pop(name, None)
    return env


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="xplatform-bench-proxy-") as data_dir:
        primary = SampleWarehouse.start(log_path=Path(data_dir) / "warehouse.log")
        try:
            primary.wait_listening()
            env = server_env(data_dir, primary.url)
            server = XplatformRun.start(("--port", "0"), cwd=ROOT, env=env, log_path=Path(data_dir) / "server.log")
            try:
                command = [sys.executable, "-m", "loadtests.proxy_load", "--url", server.url, "--primary", primary.url]
                for name in LOAD_ARGS:
                    command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
                done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,  # noqa: S603
                                      timeout=4 * (args.warmup + args.window) + args.slow_delay + 180)
                if done.returncode != 0:
                    raise RuntimeError(f"the load process failed:\n{done.stderr[-3000:]}\nserver:\n{server.log()[-2000:]}")
                result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
                result["server_alive"] = server.process.poll() is None
                result["server_env"] = {k: v for k, v in env.items()
                                        if k.startswith("XPLATFORM_") and k != "XPLATFORM_DATA_DIR"}
                return result
            finally:
                server.stop(signal.SIGTERM, timeout_s=20)
                server.close()
        finally:
            primary.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", type=int, default=20, help="StockLevel proxies, one connection each")
    parser.add_argument("--others", type=int, default=20, help="plain Tally entities, one connection each")
    parser.add_argument("--read-rate", type=float, default=400.0, help="reads/s in phase 1 (half cached, half entity)")
    parser.add_argument("--other-rate", type=float, default=200.0, help="Tally adds/s in phases 3 and 4")
    parser.add_argument("--pull-every", type=float, default=0.5, help="each proxy asked to pull this often (s), phases 3-4")
    parser.add_argument("--slow-delay", type=float, default=2.0, help="the slow primary's seconds per call (phase 4)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny windows and load; figures mean nothing")
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    result = run(args)
    print(f"cached read p99 {result['cached_read_p99_ms']} ms vs entity read p99 {result['entity_read_p99_ms']} ms "
          f"(ratio {result['cached_vs_entity_ratio']}); force pulls {result['force_pulls_per_s']}/s; others' p99 "
          f"{result['baseline_other_p99_ms']} ms -> {result['slow_primary_other_p99_ms']} ms with a "
          f"{args.slow_delay:g} s primary (ratio {result['slow_vs_baseline_other_ratio']})", file=sys.stderr)
    emit({"benchmark": "proxy", **result, "targets": {"cached_vs_entity_ratio": 1.5, "slow_vs_baseline_other_ratio": 1.5},
          "server": "python -m ops.cli run --port 0 (sqlite)",
          "primary": "ops.warehouse (own process)", "quick": args.quick,
          **{name: getattr(args, name) for name in LOAD_ARGS}})


if __name__ == "__main__":
    main()
