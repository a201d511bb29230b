"""Collector pauses are recorded per generation and exposed as a Prometheus histogram."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry, generate_latest

from infrastructure.gc_pauses import GcPauses
from infrastructure.metrics import NodeMetrics


def test_full_collections_are_counted_timed_and_exposed_once_per_registry() -> None:
    pauses = GcPauses.install()
    assert GcPauses.install() is pauses  # one recorder per process
    before = pauses.counts[2]
    junk = [[i] for i in range(50_000)]  # something for the collector to walk
    gc.collect()
    gc.collect()
    del junk
    assert pauses.counts[2] >= before + 2  # ours (the allocations may have started one more)
    assert pauses.seconds[2] > 0 and pauses.longest[2] > 0
    registry = CollectorRegistry()
    pauses.register(registry)
    pauses.register(registry)  # twice: no duplicate-timeseries error
    text = generate_latest(registry).decode()
    count = float(next(line.split()[-1] for line in text.splitlines()
                       if line.startswith('xplatform_gc_pause_seconds_count{generation="2"}')))
    assert count == pauses.counts[2]
    assert 'xplatform_gc_pause_seconds_bucket{generation="2",le="+Inf"}' in text
    assert "xplatform_gc_pause_seconds" in NodeMetrics().exposition().decode()
    assert pauses.summary()["gen2"]["collections"] == pauses.counts[2]
