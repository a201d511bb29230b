"""Where a client message's round trip went, hop by hop, and the slow messages' log lines.

The hops of a websocket MSG (``xplatform_edge_hop_seconds{hop}``, :data:`edge.metrics.EDGE_HOPS`),
each measured on one process's clock - never one process's timestamp subtracted from
another's, which on two machines would measure their clocks' skew:

- ``transport``: the edge's round trip minus the node's time, i.e. edge receive → node
  receive plus durable → reply back at the edge: both directions of the network, both ends'
  batching (one socket write per loop iteration) and both event loops' waits. One figure,
  because splitting it in two would take the two processes' clocks;
- ``queue``, ``handler``, ``append``: measured by the state node that processed the message
  and carried back in the REPLY (:class:`infrastructure.transport.port.NodeHops`);
- ``client_write``: reply back at the edge → its frame handed to the client's socket (this
  edge's loop, the connection's send queue). Replies written together are each counted with
  the wait of the batch's oldest (an upper bound for the others): one clock read per write,
  not per reply.

Together they are the client's round trip minus the client ↔ edge network (which clients
report in LATENCY frames). Every hop is recorded for each MSG whose reply an entity gave
and the edge queued for writing; a refusal before any entity saw the message (shed, no
owner, timeout) has no node hops and is recorded in none of them.

Slow messages: a MSG whose in-system round trip (``xplatform_edge_round_trip_seconds``) is
over ``slow_message_ms`` is counted (``xplatform_edge_slow_messages_total``) and logged once
with its breakdown, sampled: at most one line per ``slow_log_interval_s`` per edge process
(the first slow message after a quiet interval), each line saying how many slow messages
went unlogged since the previous one. When the platform is behind, every message is slow,
and a line for each would flood the logs and slow the edge further. The line is written
when the reply's frame goes to the socket (or when the connection ends first), so it has
every hop. Its fields, for structured logs (:mod:`infrastructure.logformat`): ``entity``,
``message_id``, ``connection_id``, ``state_node`` (the node that answered),
``round_trip_ms``, ``hops_ms`` ({hop: ms}; ``client_write`` null if never written),
``skipped``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from edge.metrics import EDGE_HOPS, EdgeMetrics
from infrastructure.transport.port import NodeHops

if TYPE_CHECKING:
    from domain.refs import EntityRef

log = logging.getLogger(__name__)


class SlowMessage:
    """A sampled slow message waiting for its reply to be written (then it is logged)."""

    __slots__ = ("message_id", "round_trip", "hops", "replied_at", "skipped")

    def __init__(self, message_id: str, round_trip: float, hops: NodeHops, replied_at: float, skipped: int) -> None:
        self.message_id, self.round_trip, self.hops = message_id, round_trip, hops
        self.replied_at, self.skipped = replied_at, skipped


class HopRecorder:
    """One per edge: records each reply's hops and samples slow messages. See the module docstring."""

    def __init__(self, metrics: EdgeMetrics, slow_message_ms: float, slow_log_interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._hops = metrics.hops
        self._client_write = metrics.hops.children["client_write"]
        self._slow_total = metrics.slow_messages
        self.slow_s = slow_message_ms / 1000.0
        self.slow_log_interval_s = slow_log_interval_s
        self._clock = clock
        self._next_line = -math.inf
        self._skipped = 0

    def replied(self, message_id: str, round_trip: float, hops: NodeHops, now: float) -> SlowMessage | None:
        """A reply whose frame is now queued, ``round_trip`` s after its MSG arrived, with the
        node's ``hops``: recorded. Returns the slow message to log once written, if it is
        slow and sampled."""
        node_time = hops.queue + hops.handler + hops.append
        self._hops.observe_each((max(0.0, round_trip - node_time), hops.queue, hops.handler, hops.append))
        if not self.slow_s or round_trip <= self.slow_s:
            return None
        self._slow_total.inc()
        if self.slow_log_interval_s:
            at = self._clock()
            if at < self._next_line:
                self._skipped += 1
                return None
            self._next_line = at + self.slow_log_interval_s
        skipped, self._skipped = self._skipped, 0
        return SlowMessage(message_id, round_trip, hops, now, skipped)

    def written(self, waited: float, replies: int) -> None:
        """``replies`` reply frames went to a socket, the oldest after ``waited`` s."""
        self._client_write.observe(waited, replies)

    @staticmethod
    def log_slow(ref: EntityRef, connection_id: str, slow: SlowMessage, client_write: float | None) -> None:
        """The one log line of a sampled slow message (``client_write`` None: never written)."""
        hops = slow.hops
        node_time = hops.queue + hops.handler + hops.append
        ms = dict(zip(EDGE_HOPS, (round(max(0.0, slow.round_trip - node_time) * 1000, 3),
                                  round(hops.queue * 1000, 3), round(hops.handler * 1000, 3),
                                  round(hops.append * 1000, 3),
                                  None if client_write is None else round(client_write * 1000, 3)), strict=True))
        log.warning("slow message %s to %s answered by %s: %.1f ms round trip (%s)%s", slow.message_id, ref,
                    hops.node, slow.round_trip * 1000,
                    ", ".join(f"{hop} {'-' if value is None else value} ms" for hop, value in ms.items()),
                    f"; {slow.skipped} more slow messages not logged since the last line" if slow.skipped else "",
                    extra={"entity": str(ref), "message_id": slow.message_id, "connection_id": connection_id,
                           "state_node": hops.node, "round_trip_ms": round(slow.round_trip * 1000, 3),
                           "hops_ms": ms, "skipped": slow.skipped})
