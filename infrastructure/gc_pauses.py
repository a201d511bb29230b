"""Garbage-collector pauses of this process, as Prometheus ``xplatform_gc_pause_seconds``.

Why: in CPython a collection of the oldest generation stops the event loop for as long as
it takes to scan every tracked object (measured here: 0.5-1.2 s with ~600k objects), and
such a pause is the tail of every latency the platform promises. Operators need to see it
next to the request latencies, and the benchmarks report it, so that a tail can be told
apart from the code's own work.

The collector is process-wide, so there is one recorder per process (``install()``); each
node or edge registry that wants the figures adds it with ``register(registry)``.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class GcPauses(Collector):
    """Counts and times collections per generation (a ``gc.callbacks`` hook: two calls and
    a few additions per collection, nothing on the allocation path)."""

    _installed: GcPauses | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self._started = 0.0
        self.counts = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self._buckets = [[0] * len(BUCKETS) for _ in range(3)]

    @classmethod
    def install(cls) -> GcPauses:
        """The recorder of this process, hooked into the collector on first call."""
        with cls._lock:
            if cls._installed is None:
                cls._installed = cls()
                gc.callbacks.append(cls._installed._callback)
            return cls._installed

    def register(self, registry: CollectorRegistry) -> None:
        """Expose the figures on ``registry`` (once per registry)."""
        try:
            registry.register(self)
        except ValueError:  # already registered there
            pass

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        generation = info.get("generation", 0)
        self.counts[generation] += 1
        self.seconds[generation] += took
        if took > self.longest[generation]:
            self.longest[generation] = took
        buckets = self._buckets[generation]
        for i, bound in enumerate(BUCKETS):
            if took <= bound:
                buckets[i] += 1
                break

    def summary(self) -> dict[str, Any]:
        """For benchmark output: collections, total and longest pause per generation."""
        return {f"gen{g}": {"collections": self.counts[g], "total_s": round(self.seconds[g], 3),
                            "longest_ms": round(self.longest[g] * 1000, 2)} for g in range(3)}

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily("xplatform_gc_pause_seconds",
                                       "Garbage-collector pauses of this process (the event loop stops).",
                                       labels=["generation"])
        for g in range(3):
            cumulative, running = [], 0
            for bound, count in zip(BUCKETS, self._buckets[g]):
                running += count
                cumulative.append((str(bound), running))
            cumulative.append(("+Inf", self.counts[g]))
            family.add_metric([str(g)], cumulative, self.seconds[g])
        yield family
