"""The transport port: how edges reach entities, and how entities' client-bound messages
reach edges. Edges depend on this port only; the in-process transport implements it now,
the network transport (cluster issue) later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from domain.effects import Reply, Send, Terminate
from domain.messages import Inbound
from domain.refs import EntityRef


@dataclass(frozen=True, slots=True)
class StoredReply(Reply):
    """A reply with ``version``: how far its entity's stream was stored when the reply left
    (everything up to it durable, this message's events included). The edge turns it into
    the reply's position token (``<stream>@<version>``, :mod:`infrastructure.read_port`), which
    a read presents to see its own writes. A plain :class:`Reply` has none (the platform's own
    refusals: not owned, stopping, unavailable). The version is not part of the answer: a
    duplicate message gets the original reply (equal to it) with the stream's version now."""

    version: int = field(default=0, compare=False)


def with_version(reply: Reply, version: int) -> Reply:
    """``reply`` carrying ``version`` (unchanged when ``version`` is 0: nothing stored yet)."""
    if not version:
        return reply
    return StoredReply(reply.message_id, reply.ok, reply.payload, reply.code, reply.reason, reply.retryable, version)


def version_of(reply: Reply) -> int:
    """The stored version a reply carries (0: none)."""
    return reply.version if isinstance(reply, StoredReply) else 0


ReplyCallback = Callable[[Reply | None, BaseException | None], None]
"""Receives ``(reply, None)`` or ``(None, error)`` exactly once (see ``Transport.ask_callback``)."""


class NodeHops:
    """How long one message spent in each hop inside the state node that processed it
    (seconds, each measured on that node's own clock: infrastructure/metrics.py NODE_HOPS),
    and which node that was. An asker that wants them passes one to ``ask_callback``; the
    transport fills it before the callback runs: the in-process transport by handing it to
    the node, the network transport from the REPLY envelope (the node measures, the
    envelope carries the durations - never a timestamp another process would subtract from
    its own clock). ``node`` stays empty when the reply carried none (a refusal before any
    entity saw the message, a timeout, an older node): then nothing is known of the hops.

    ``received`` and ``handled`` are the node's own working marks (its ``perf_counter``)."""

    __slots__ = ("received", "handled", "queue", "handler", "append", "node")

    def __init__(self) -> None:
        self.received = self.handled = 0.0
        self.queue = self.handler = self.append = 0.0
        self.node = ""

    def durations(self) -> tuple[float, float, float] | None:
        """(queue, handler, append), or None when no node filled them in."""
        return (self.queue, self.handler, self.append) if self.node else None

    def fill(self, node: str, durations: tuple[float, float, float]) -> None:
        """Take what a node measured (a REPLY envelope's durations)."""
        self.queue, self.handler, self.append = durations
        self.node = node


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

    def ask_callback(self, to: EntityRef, message: Inbound, on_reply: ReplyCallback,
                     timeout: float | None = None, hops: NodeHops | None = None) -> None:
        """:meth:`ask` with a callback, called once with ``(reply, None)`` or ``(None, error)``
        (a TransportError on timeout), possibly before this returns: the edge's per-frame
        path, where a future and a timer per message were a measurable share of a hot
        entity's CPU and every future callback one more loop iteration of wait. ``hops``,
        if given, is filled with the node's durations before ``on_reply`` runs (see
        :class:`NodeHops`)."""
        ...

    def send(self, to: EntityRef, message: Inbound) -> None:
        """Deliver without waiting for a reply (e.g. ``Terminated``)."""
        ...

    def subscribe(self, sink: OutboundSink) -> None:
        """Receive every client-bound effect; the sink resolves targets locally."""
        ...

    def unsubscribe(self, sink: OutboundSink) -> None: ...


def callback_when_done(future: asyncio.Future[Reply], on_reply: ReplyCallback) -> None:
    """Call ``on_reply`` once ``future`` is done (``ask_callback`` of transports that ask by future)."""
    def done(finished: asyncio.Future[Reply]) -> None:
        if finished.cancelled():
            on_reply(None, asyncio.CancelledError())
        elif finished.exception() is not None:
            on_reply(None, finished.exception())
        else:
            on_reply(finished.result(), None)

    future.add_done_callback(done)
