"""Load shedding: when the edge's event loop is late, new client messages are refused.

Why: one edge process is one event loop. Offered more messages than it can process, it
falls behind: frames wait in the sockets' kernel buffers (the edge reads a socket only as
fast as it answers it), so *every* message, and every state update the entities send back,
is late by the whole backlog - seconds, growing, for everyone (measured: a hot lot offered
10k bids/s with ~6k/s of capacity showed viewers state 160-300 ms old, then more). A message
refused at once costs a fraction of one processed, so refusing the excess keeps the accepted
ones fresh (Orleans sheds load at its gateways the same way).

The signal is the loop's own lateness: a timer due every ``PROBE_S`` measures how late it
runs; the edge is overloaded while the smoothed lateness is over ``shed_lag_ms``. Then a
``MSG`` gets ``REPLY`` ``ok=false`` with code ``overloaded``, ``retryable=true`` (the entity
never sees it: nothing changes), documented in PROTOCOL.md. Connects, heartbeats and
disconnects are never shed: a connected client keeps its session, it only waits.
"""

from __future__ import annotations

import asyncio
import time

PROBE_S = 0.005
"""How often the loop's lateness is sampled: fine enough to react within a few ms."""
SMOOTHING = 0.25
"""Weight of the newest sample (EWMA): one slow callback does not shed, a late loop does."""


class LoopLoad:
    """Smoothed lateness of this event loop. See the module docstring."""

    def __init__(self, shed_lag_ms: float) -> None:
        self.shed_lag_s = shed_lag_ms / 1000.0
        self.lag_s = 0.0
        self.overloaded = False
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        if self.shed_lag_s <= 0 or self._handle is not None:
            return  # shedding off
        loop = asyncio.get_running_loop()
        self._due = time.perf_counter() + PROBE_S
        self._handle = loop.call_later(PROBE_S, self._probe, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.overloaded = False

    def _probe(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.perf_counter()
        late = max(0.0, now - self._due)
        self.lag_s += SMOOTHING * (late - self.lag_s)
        self.overloaded = self.lag_s > self.shed_lag_s
        self._due = now + PROBE_S
        self._handle = loop.call_later(PROBE_S, self._probe, loop)
