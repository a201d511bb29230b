"""In-process transport (the seed's "local/minimal transport"): callers, state node and
edges in one process, for dev mode and functional tests.

It offers the same shape the network transport will: ``ask`` (deliver and await the reply),
``send`` (deliver, no reply), routing of entity-to-entity messages, and fan-out of
client-bound effects to subscribed sinks (edges). Entity-to-entity messages are delivered
on the next loop iteration, not inline, so a chain of tells never recurses.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from domain.effects import Reply, Send, Terminate
from domain.messages import EntityMessage, Inbound
from domain.refs import EntityRef
from infrastructure.errors import TransportError

if TYPE_CHECKING:
    from infrastructure.runtime.node import StateNode
    from infrastructure.transport.port import OutboundSink


class LocalTransport:
    """Connects callers to one in-process :class:`StateNode`. See the module docstring."""

    def __init__(self, node: StateNode, ask_timeout_s: float) -> None:
        self.node = node
        self.ask_timeout_s = ask_timeout_s
        self._sinks: list[OutboundSink] = []
        node.router = self
        node.outbound = self

    async def ask(self, to: EntityRef, message: Inbound, timeout: float | None = None) -> Reply:
        """Deliver ``message`` and wait for its reply (released after durability)."""
        return await self.ask_future(to, message, timeout)

    def ask_future(self, to: EntityRef, message: Inbound, timeout: float | None = None) -> asyncio.Future[Reply]:
        """As :meth:`ask`, as a future and without a task: the edge asks once per client
        frame, and a task per message was a measurable share of a hot entity's CPU."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()

        def answer(reply: Reply) -> None:
            if not future.done():
                future.set_result(reply)

        def expire() -> None:
            if not future.done():
                future.set_exception(TransportError(
                    f"no reply from {to} for {message.message_id} within the timeout; "
                    "the message may still be applied (resend with the same ID)"))

        # A plain timer instead of asyncio.wait_for: no extra task per message on the hot path.
        timer = loop.call_later(timeout or self.ask_timeout_s, expire)
        future.add_done_callback(lambda _: timer.cancel())
        self.node.deliver(to, message, answer)
        return future

    def send(self, to: EntityRef, message: Inbound) -> None:
        """Deliver ``message`` without waiting for a reply."""
        self.node.deliver(to, message)

    def tell(self, to: EntityRef, message: EntityMessage) -> None:
        asyncio.get_running_loop().call_soon(self.node.deliver, to, message)

    def subscribe(self, sink: OutboundSink) -> None:
        """Receive every client-bound effect (an edge resolves targets locally)."""
        self._sinks.append(sink)

    def unsubscribe(self, sink: OutboundSink) -> None:
        self._sinks.remove(sink)

    def publish(self, source: EntityRef, effect: Send | Terminate) -> None:
        for sink in self._sinks:
            sink.publish(source, effect)
