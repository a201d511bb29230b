"""How a platform process runs CPython's cyclic garbage collector, and why.

Two measured problems, two settings (``Settings.gc_gen0_threshold``, ``gc_reclaim_every_s``):

1. Young collections every 700 allocations cost throughput: the threshold is raised to 2,000
   (see the setting for the figures).
2. Full collections scan every tracked object. A hot lot with 1,100 websockets holds ~500k
   long-lived objects (connections, entity state), and the traffic promotes enough short-
   lived ones (replies in flight, futures) to start a full collection about once a second:
   measured 12 full collections in a 10 s run, 230 ms the longest. Each stops the event
   loop: every reply and push of the process waits.

For 2, survivors of a full collection join the permanent generation (``gc.freeze()``, as
Instagram does after fork): the next full collections scan only what came since, and take
milliseconds. The price: a cycle among frozen objects that becomes garbage later (e.g. a
websocket closed after it was frozen) is not reclaimed until the objects are unfrozen. So
every ``gc_reclaim_every_s`` the process unfreezes and runs one full collection on purpose
(one long pause, at a known rate, visible in ``xplatform_gc_pause_seconds``), then freezes
again. 0 turns the freezing off (Python's own behaviour).

Process-wide, like the collector: the first ``GcTuning.acquire()`` of a process applies it,
the last ``release()`` (a platform stopping) undoes the freezing, so a test process running
many platforms one after another keeps no frozen garbage.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class GcTuning:
    """Reference-counted, process-wide collector tuning. See the module docstring."""

    _lock = threading.Lock()
    _users = 0
    _callback_installed = False
    _reclaim: asyncio.TimerHandle | None = None
    freezes = 0
    reclaims = 0

    @classmethod
    def acquire(cls, gen0_threshold: int, reclaim_every_s: float) -> None:
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
                cls._reclaim = loop.call_later(reclaim_every_s, cls._reclaim_cycles, loop, reclaim_every_s)

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
        if phase == "stop" and info.get("generation") == 2:
            gc.freeze()
            cls.freezes += 1

    @classmethod
    def _reclaim_cycles(cls, loop: asyncio.AbstractEventLoop, every_s: float) -> None:
        with cls._lock:
            if not cls._callback_installed:
                return
            gc.unfreeze()
            found = gc.collect()  # its "stop" callback freezes the survivors again
            cls.reclaims += 1
            cls._reclaim = loop.call_later(every_s, cls._reclaim_cycles, loop, every_s)
        log.info("periodic full collection reclaimed %d objects in cycles", found)
