"""The transport port: how edges reach entities, and how entities' client-bound messages
reach edges. Edges depend on this port only; the in-process transport implements it now,
the network transport (cluster issue) later.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from domain.effects import Reply, Send, Terminate
from domain.messages import Inbound
from domain.refs import EntityRef


class OutboundSink(Protocol):
    """Receives client-bound effects after the causing events are durable (an edge)."""

    def publish(self, source: EntityRef, effect: Send | Terminate) -> None: ...


class Transport(Protocol):
    """Edge-side view of the platform."""

    async def ask(self, to: EntityRef, message: Inbound, timeout: float | None = None) -> Reply:
        """Deliver ``message`` to entity ``to`` and wait for its reply (released only when
        the message's events are durable). Raises TransportError on timeout."""
        ...

    def ask_future(self, to: EntityRef, message: Inbound, timeout: float | None = None) -> asyncio.Future[Reply]:
        """:meth:`ask` as a future (the edge's per-frame path): transports that can answer
        from a callback create no task per message."""
        ...

    def send(self, to: EntityRef, message: Inbound) -> None:
        """Deliver without waiting for a reply (e.g. ``Terminated``)."""
        ...

    def subscribe(self, sink: OutboundSink) -> None:
        """Receive every client-bound effect; the sink resolves targets locally."""
        ...

    def unsubscribe(self, sink: OutboundSink) -> None: ...
