"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import platform
import statistics
from typing import Any


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
