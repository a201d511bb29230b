"""Collector tuning: survivors of full collections are frozen while a platform runs, cycles
among them are reclaimed on schedule, and stopping the last platform undoes it all."""

from __future__ import annotations

import asyncio
import gc

import pytest

from infrastructure.errors import ConfigurationError
from infrastructure.gc_tuning import GcTuning
from infrastructure.settings import Settings


class Node:
    """An object in a reference cycle (only the cyclic collector frees it)."""

    def __init__(self) -> None:
        self.me = self


async def reclaimed_after(before: int, within_s: float = 30.0) -> None:
    """Wait for a reclaim after ``before`` (a loaded machine may run the timer late: wait,
    generously, rather than assert a timing)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while GcTuning.reclaims == before:
        assert asyncio.get_running_loop().time() < deadline, "no reclaim happened"
        await asyncio.sleep(0.05)


def test_survivors_are_frozen_cycles_reclaimed_on_schedule_and_released_at_stop() -> None:
    async def scenario() -> None:
        threshold = gc.get_threshold()
        GcTuning.acquire(2_000, reclaim_every_s=0.3)
        GcTuning.acquire(2_000, reclaim_every_s=0.3)  # a second platform in the process: no-op
        try:
            keep = [Node() for _ in range(1000)]
            gc.collect()  # a full collection: its survivors (ours included) are frozen
            assert gc.get_freeze_count() > 1000
            del keep  # now cyclic garbage, but frozen: nothing reclaims it yet
            assert gc.collect() == 0
            reclaims = GcTuning.reclaims
            await reclaimed_after(reclaims)  # the scheduled reclaim unfreezes and collects
            assert not any(isinstance(o, Node) for o in gc.get_objects())
            assert gc.get_freeze_count() > 0  # and froze the survivors again
            GcTuning.release()  # one user left: still tuned
            assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] == 2_000
        finally:
            GcTuning.release()
            gc.set_threshold(*threshold)
        assert gc.get_freeze_count() == 0
        assert GcTuning._after_collection not in gc.callbacks

    asyncio.run(scenario())


def test_frozen_growth_triggers_a_reclaim_before_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """Churn (cycles of closed connections piling up frozen) reclaims on growth, not only
    on the clock."""
    from infrastructure import gc_tuning

    monkeypatch.setattr(gc_tuning, "RECLAIM_CHECK_S", 0.1)
    monkeypatch.setattr(gc_tuning, "GROWTH_FLOOR", 0)

    async def scenario() -> None:
        threshold = gc.get_threshold()
        GcTuning.acquire(2_000, reclaim_every_s=3600, reclaim_growth=0.5)
        try:
            baseline = gc.get_freeze_count()
            garbage = [Node() for _ in range(int(baseline * 0.6) + 1000)]
            gc.collect()  # frozen: over the 50% growth
            del garbage
            reclaims = GcTuning.reclaims
            await reclaimed_after(reclaims)  # long before the hour: on growth
            assert GcTuning.reclaims == reclaims + 1
            assert not any(isinstance(o, Node) for o in gc.get_objects())
            await asyncio.sleep(0.3)  # three more growth checks
            assert GcTuning.reclaims == reclaims + 1  # back under the bound: no more
        finally:
            GcTuning.release()
            gc.set_threshold(*threshold)

    asyncio.run(scenario())


def test_negative_reclaim_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="XPLATFORM_GC_RECLAIM_GROWTH"):
        Settings(gc_reclaim_growth=-0.1)
    with pytest.raises(ConfigurationError, match="XPLATFORM_GC_RECLAIM_EVERY_S"):
        Settings(gc_reclaim_every_s=-1)
