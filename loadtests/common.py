"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Iterator
from typing import Any

from ops.local.emulator import launch_emulator


def percentile(values: list[float], q: float) -> float:
    """q in [0, 100]; nearest-rank on the sorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def emit(result: dict[str, Any]) -> None:
    """Print the machine facts and the result as ONE JSON object on the last line."""
    result = {**result, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    print(json.dumps(result, sort_keys=True))


@contextlib.contextmanager
def eventstoredb_for_benchmark(wanted: bool) -> Iterator[str | None]:
    """The EventStoreDB URI to benchmark: ``EVENTSTOREDB_URI`` if set, else the emulator
    started for the run by its launcher (ops/local/emulator.py, the tests' too), stopped
    afterwards. None when not ``wanted``."""
    if not wanted:
        yield None
        return
    if os.environ.get("EVENTSTOREDB_URI"):
        yield os.environ["EVENTSTOREDB_URI"]
        return
    emulator = launch_emulator()
    try:
        yield emulator.uri
    finally:
        emulator.stop()


class LoopLag:
    """How late this process's event loop wakes up: a task sleeps 1 ms in a loop and
    records the overshoot. A benchmark reports it for its own client process (a late client
    loop shows up as server latency) and for the server when it runs in-process."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            self.lags.append(time.perf_counter() - started - 0.001)

    def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
        return {"p99_ms": round(percentile(self.lags, 99) * 1000, 2),
                "max_ms": round(max(self.lags, default=0.0) * 1000, 2),
                "over_5ms": sum(1 for lag in self.lags if lag > 0.005)}
