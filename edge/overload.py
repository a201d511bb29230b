"""Load shedding: a client message is refused at once while its entity is really behind.

Why: a message an entity cannot take in time only adds to the wait of every message behind
it; refused at once (``REPLY`` ``overloaded``, retryable, the entity never sees it) it costs
a fraction of one processed, and the client retries with backoff (``PROTOCOL.md``
"Overload"). Orleans sheds load at its gateways the same way.

The signal is the time-in-queue of the messages themselves, per entity: the age of the
oldest message this edge handed to the entity at hand that is not answered yet. That one
number covers every way the platform can be behind for that entity - its messages queued
on the state node (activation, a moving shard), its durable writes queued behind group
commit (a slow or saturated store), a state node or link that is slow - and nothing that
is not: a long fan-out tick of the edge's own event loop delays a reply by the tick's
length (tens of ms), far under the bound (``shed_after_ms``, default 250 ms), so it never
sheds; an idle entity is never behind, whatever the loop does. (The former signal, the
loop's own lateness, refused bids to an idle lot whenever the 20 Hz tick took 30 ms.)

Per entity, per edge: a hot lot that falls behind sheds its own messages, not those of the
other entities on the node; when a whole node is behind, each of its entities is. Messages
waiting in a socket's kernel buffer are not counted (the edge has not read them): there
the per-connection in-flight bound holds a client back by TCP (backpressure) instead.

Answers are FIFO per entity (one message at a time, replies released in order of
durability), so a deque of entries with a "done" mark gives the oldest in O(1) amortized.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Hashable


class InFlight:
    """Ages of the unanswered messages this edge sent, per entity. See the module docstring."""

    __slots__ = ("shed_after_s", "_open")

    def __init__(self, shed_after_ms: float) -> None:
        self.shed_after_s = shed_after_ms / 1000.0
        self._open: dict[Hashable, deque[list[float]]] = {}

    def enter(self, ref: Hashable) -> list[float]:
        """A message to ``ref`` leaves the edge; pass the returned entry to :meth:`leave`."""
        entry = [time.perf_counter(), 0.0]
        queue = self._open.get(ref)
        if queue is None:
            queue = self._open[ref] = deque()
        queue.append(entry)
        return entry

    def leave(self, ref: Hashable, entry: list[float]) -> None:
        """Its answer (or error, or timeout) is back."""
        entry[1] = 1.0
        queue = self._open.get(ref)
        if queue is None:
            return
        while queue and queue[0][1]:
            queue.popleft()
        if not queue:
            del self._open[ref]

    def behind(self, ref: Hashable) -> bool:
        """True while the oldest unanswered message to ``ref`` waits longer than the bound
        (never when the bound is 0: shedding off)."""
        queue = self._open.get(ref)
        if not queue or self.shed_after_s <= 0:
            return False
        return time.perf_counter() - queue[0][0] > self.shed_after_s

    def oldest_s(self) -> float:
        """Age of the oldest unanswered message over all entities (the gauge; scrape time only)."""
        if not self._open:
            return 0.0
        return max(0.0, time.perf_counter() - min(queue[0][0] for queue in self._open.values()))
