"""How a platform process runs CPython's cyclic garbage collector, and why.

Two measured problems, two settings (``Settings.gc_gen0_threshold``, ``gc_reclaim_every_s``):

1. Young collections every 700 allocations cost throughput: the threshold is raised to 2,000
   (see the setting for the figures).
2. Full collections scan every tracked object. A hot lot with 1,100 websockets holds ~500k
   long-lived objects (connections, entity state), and the traffic promotes enough short-
   lived ones (replies in flight, futures) to start a full collection about once a second:
   measured 12 full collections in a 10 s run, 230 ms the longest. Each stops the event
   loop: every reply and push of the process waits.

For 2, survivors of every collection of the older generations (1 and 2) join the permanent
generation (``gc.freeze()``, as Instagram does after fork): full collections then scan only
what came since, and take milliseconds (measured on the hot lot: none at all in 10 s, where
there were 7-13 of up to 230 ms; freshness p99 140 ms -> 80-90 ms). The price: a cycle among frozen objects that becomes garbage
later (e.g. a websocket closed after it was frozen) is not reclaimed until the objects are unfrozen. So
the process unfreezes and runs one full collection on purpose (one long pause, visible in
``xplatform_gc_pause_seconds``), then freezes again, whenever the frozen objects grew by
``gc_reclaim_growth`` (measured: 1,000 websockets opened and closed leave ~30k objects in
cycles) or ``gc_reclaim_every_s`` passed. ``gc_reclaim_every_s`` 0 turns the freezing off
(Python's own behaviour).

Process-wide, like the collector: the first ``GcTuning.acquire()`` of a process applies it,
the last ``release()`` (a platform stopping) undoes the freezing, so a test process running
many platforms one after another keeps no frozen garbage.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

RECLAIM_CHECK_S = 5.0
"""How often the frozen objects are counted (a walk of the permanent generation: ~1 ms per
500k objects) to decide on a reclaim."""
GROWTH_FLOOR = 250_000
"""Frozen objects that may pile up beyond the growth share before a reclaim (~25-50 MB): new
long-lived objects (a thousand websockets opening) grow the frozen set too, and a reclaim
for them would be a full collection (~100 ms measured) that frees nothing."""

FREEZE_FROM_GENERATION = 1
"""Survivors of collections of this generation or older are frozen. 1, not 2: a burst of new
long-lived objects (1,100 websockets opening) otherwise waits for the first full collection
to be frozen, and that one scans them all (measured 70-80 ms, inside the hot-lot window)."""


class GcTuning:
    """Reference-counted, process-wide collector tuning. See the module docstring."""

    _lock = threading.Lock()
    _users = 0
    _callback_installed = False
    _reclaim: asyncio.TimerHandle | None = None
    _baseline = 0          # frozen objects just after the last reclaim (or start)
    _last_reclaim = 0.0
    freezes = 0
    reclaims = 0

    @classmethod
    def acquire(cls, gen0_threshold: int, reclaim_every_s: float, reclaim_growth: float = 0.5) -> None:
        """Apply the tuning (call on the event loop thread of the process's main loop)."""
        with cls._lock:
            cls._users += 1
            if cls._users > 1:
                return
            if gen0_threshold:
                gc.freeze()  # what start-up built lives as long as the process
                _, gen1, gen2 = gc.get_threshold()
                # Older generations keep Python's ratios: raising them makes each gen-1 pass
                # scan tens of thousands of objects (measured: edge round trip p99 11 ms vs 5 ms).
                gc.set_threshold(gen0_threshold, gen1, gen2)
            if reclaim_every_s > 0:
                gc.callbacks.append(cls._after_collection)
                cls._callback_installed = True
                loop = asyncio.get_running_loop()
                cls._baseline, cls._last_reclaim = gc.get_freeze_count(), time.monotonic()
                check = min(RECLAIM_CHECK_S, reclaim_every_s)
                cls._reclaim = loop.call_later(check, cls._maybe_reclaim, loop, check, reclaim_every_s, reclaim_growth)

    @classmethod
    def release(cls) -> None:
        """Undo the freezing when the last user stops (objects return to the generations)."""
        with cls._lock:
            cls._users = max(0, cls._users - 1)
            if cls._users:
                return
            if cls._callback_installed:
                gc.callbacks.remove(cls._after_collection)
                cls._callback_installed = False
            if cls._reclaim is not None:
                cls._reclaim.cancel()
                cls._reclaim = None
            gc.unfreeze()

    @classmethod
    def _after_collection(cls, phase: str, info: dict[str, Any]) -> None:
        # "stop" of a full collection: what is tracked now survived it. Freezing only merges
        # the generation lists into the permanent one (no allocation, no scan).
        if phase == "stop" and info.get("generation", 0) >= FREEZE_FROM_GENERATION:
            gc.freeze()
            cls.freezes += 1

    @classmethod
    def _maybe_reclaim(cls, loop: asyncio.AbstractEventLoop, check_s: float, every_s: float,
                       growth: float) -> None:
        """Reclaim when the frozen objects grew by ``growth`` since the last reclaim (churn:
        closed connections' cycles pile up) or ``every_s`` passed, whichever comes first."""
        with cls._lock:
            if not cls._callback_installed:
                return
            frozen = gc.get_freeze_count()
            due = time.monotonic() - cls._last_reclaim >= every_s
            grown = growth > 0 and frozen > cls._baseline * (1 + growth) + GROWTH_FLOOR
            if due or grown:
                gc.unfreeze()
                found = gc.collect()  # its "stop" callback freezes the survivors again
                cls.reclaims += 1
                cls._baseline, cls._last_reclaim = gc.get_freeze_count(), time.monotonic()
                log.info("full collection (%s) reclaimed %d objects in cycles; %d frozen before, %d after",
                         "growth" if grown else "schedule", found, frozen, cls._baseline)
            cls._reclaim = loop.call_later(check_s, cls._maybe_reclaim, loop, check_s, every_s, growth)
