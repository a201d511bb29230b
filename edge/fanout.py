"""Outbound fan-out: the edge as an :class:`~infrastructure.transport.port.OutboundSink`.

The transport hands every client-bound effect (already durable) to :meth:`Fanout.publish`;
the edge resolves its target against the local registry:

- a Send is encoded ONCE (one PUSH frame shared by every receiver): encoding per receiver
  would cost more than the sends themselves at 1,000 receivers;
- a Send without ``coalesce_key`` takes the immediate path (the connection's bounded queue);
- a Send with ``coalesce_key`` is latest-wins per (connection, key) and leaves at the next
  tick (default 20 Hz). For ``ToAllConnections`` the newest frame is kept once per entity
  and key, not per connection, so a hot entity's 1,000 updates/s cost 1,000 dict writes,
  not 1,000 × viewers; at the tick the frame is encoded and websocket-framed once, and
  written straight to every socket that has nothing else waiting (one ``transport.write``
  of the same bytes each, counted once per tick), else kept for its writer. The first update after a quiet
  tick leaves at once (leading edge), so a lone update is not delayed by the tick;
- a Terminate reaches its one connection (TERMINATE frame, then close).

``tick_s`` 0 turns coalescing off (``coalesce_hz`` 0): a Send with a ``coalesce_key`` then
takes the immediate path like any other, every update one frame (the fan-out benchmark's
"coalescing off" phase; the bounded queue and its 1013 policy apply).

Sequence numbers order coalesced frames, so a per-connection frame and a per-entity frame
for the same key resolve to the newer one.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

from domain.effects import Send, Terminate, ToAllConnections, ToClaims, ToConnection
from domain.refs import EntityRef
from edge import protocol
from edge.metrics import EdgeMetrics
from edge.registry import Receiver, Registry
from edge.wsframes import binary_frames


class Fanout:
    """Resolves targets, encodes once, coalesces at a tick. See the module docstring."""

    def __init__(self, registry: Registry, metrics: EdgeMetrics, tick_s: float = 0.05,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.metrics = metrics
        self.tick_s = tick_s
        self.clock = clock
        self.coalescing = tick_s > 0
        self._seq = itertools.count(1)
        self._entity_pending: dict[EntityRef, dict[str, tuple[int, Any]]] = {}
        self._dirty: set[Receiver] = set()
        self._flush_handle: asyncio.Handle | None = None
        self._last_flush = float("-inf")

    # ------------------------------------------------------------------ OutboundSink
    def publish(self, source: EntityRef, effect: Send | Terminate) -> None:
        conns = self.registry.of(source)
        if not conns:
            return
        if isinstance(effect, Terminate):
            conn = conns.get(effect.connection_id)
            if conn is not None:
                conn.terminate(effect.reason, effect.reconnect)
            return
        target = effect.target
        key = effect.coalesce_key if self.coalescing else None
        if key is not None and isinstance(target, ToAllConnections):
            # Kept once per entity and key, encoded at the tick: a hot entity's updates
            # replaced before the tick are never encoded at all.
            pending = self._entity_pending.setdefault(source, {})
            if key in pending:
                self.metrics.coalesced.inc()
            pending[key] = (next(self._seq), effect.payload)
            self._schedule()
            return
        frame = protocol.push(effect.payload)
        if isinstance(target, ToConnection):
            one = conns.get(target.connection_id)
            receivers: Any = () if one is None else (one,)
        elif isinstance(target, ToAllConnections):
            receivers = list(conns.values())
        elif isinstance(target, ToClaims):
            receivers = [c for c in conns.values() if target.matches(c.claims)]
        else:  # a target kind this edge does not know: deliver nothing rather than everything
            return
        if key is None:
            for conn in receivers:
                conn.push(frame, effect.payload)
            return
        seq = next(self._seq)
        for conn in receivers:
            if conn.coalesce(key, seq, frame, effect.payload):
                self.metrics.coalesced.inc()
            self._dirty.add(conn)
        self._schedule()

    # ------------------------------------------------------------------ ticks
    def _schedule(self) -> None:
        if self._flush_handle is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_flush + self.tick_s - self.clock()
        if wait <= 0:
            self._flush_handle = loop.call_soon(self.flush)
        else:
            self._flush_handle = loop.call_later(wait, self.flush)

    def flush(self) -> None:
        """Hand every kept coalesced frame to its connections (the tick)."""
        self._flush_handle = None
        self._last_flush = self.clock()
        pending, self._entity_pending = self._entity_pending, {}
        dirty, self._dirty = self._dirty, set()
        for ref, frames in pending.items():
            conns = self.registry.of(ref)
            if not conns:
                continue
            encoded = [(key, seq, protocol.push(payload), payload) for key, (seq, payload) in frames.items()]
            if len(encoded) == 1:  # the common tick: one state frame, framed once, written straight out
                key, seq, frame, payload = encoded[0]
                wire = binary_frames((frame,))
                written = 0
                for conn in list(conns.values()):
                    tick = getattr(conn, "tick", None)
                    if tick is not None and tick(key, seq, frame, wire):
                        written += 1
                    else:
                        conn.coalesce(key, seq, frame, payload)
                        dirty.add(conn)
                if written:
                    self.metrics.frames_out["push"].inc(written)  # counted once per tick, not per socket
                continue
            for conn in list(conns.values()):
                for key, seq, frame, payload in encoded:
                    conn.coalesce(key, seq, frame, payload)
                dirty.add(conn)
        for conn in dirty:
            conn.flush()

    def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
