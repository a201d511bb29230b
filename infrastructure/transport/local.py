"""In-process transport (the seed's "local/minimal transport"): callers, state node and
edges in one process, for dev mode and functional tests.

It offers the same shape the network transport will: ``ask`` (deliver and await the reply),
``send`` (deliver, no reply), routing of entity-to-entity messages, and fan-out of
client-bound effects to subscribed sinks (edges). Entity-to-entity messages are delivered
on the next loop iteration, not inline, so a chain of tells never recurses.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from domain.effects import Reply, Send, Terminate
from domain.messages import EntityMessage, Inbound
from domain.refs import EntityRef
from infrastructure.errors import TransportError

if TYPE_CHECKING:
    from infrastructure.runtime.node import StateNode
    from infrastructure.transport.port import NodeHops, OutboundSink, ReplyCallback

EXPIRY_SWEEP_S = 0.25
"""How often unanswered asks are checked against their deadline: a timer per message cost
~2 µs and a heap entry at thousands of messages per second; timeouts are seconds."""


class LocalTransport:
    """Connects callers to one in-process :class:`StateNode`. See the module docstring.
    It is the node's router and outbound sink only when the wiring connects it so
    (``StateNode.connect``); its asks and sends work either way."""

    def __init__(self, node: StateNode, ask_timeout_s: float) -> None:
        self.node = node
        self.ask_timeout_s = ask_timeout_s
        self._sinks: list[OutboundSink] = []
        self._expiring: dict[float, deque[tuple[list[Any], EntityRef, str]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweeper_loop: asyncio.AbstractEventLoop | None = None

    async def ask(self, to: EntityRef, message: Inbound, timeout: float | None = None) -> Reply:
        """Deliver ``message`` and wait for its reply (released after durability)."""
        return await self.ask_future(to, message, timeout)

    def ask_future(self, to: EntityRef, message: Inbound, timeout: float | None = None) -> asyncio.Future[Reply]:
        """As :meth:`ask`, as a future and without a task."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

        def answer(reply: Reply | None, error: BaseException | None) -> None:
            if not future.done():
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(reply)  # type: ignore[arg-type]

        self.ask_callback(to, message, answer, timeout)
        return future

    def ask_callback(self, to: EntityRef, message: Inbound, on_reply: ReplyCallback,
                     timeout: float | None = None, hops: NodeHops | None = None) -> None:
        """Deliver ``message``; ``on_reply`` gets the reply once it may leave (after
        durability), or a TransportError once ``timeout`` passed (checked every
        ``EXPIRY_SWEEP_S``). No future, no task, no timer per message: see the port.
        ``hops`` goes to the node, which fills it in."""
        entry: list[Any] = [on_reply, 0.0]

        def answer(reply: Reply) -> None:
            callback = entry[0]
            if callback is not None:
                entry[0] = None
                callback(reply, None)

        loop = asyncio.get_running_loop()
        wait = timeout or self.ask_timeout_s
        entry[1] = loop.time() + wait
        queue = self._expiring.get(wait)
        if queue is None:
            queue = self._expiring[wait] = deque()
        queue.append((entry, to, message.message_id))
        if self._sweeper is None or self._sweeper_loop is not loop:
            self._sweeper, self._sweeper_loop = loop.call_later(EXPIRY_SWEEP_S, self._expire), loop
        self.node.deliver(to, message, answer, hops)

    def _expire(self) -> None:
        """Answer the asks whose deadline passed with a TransportError. One queue per
        timeout value, in order of asking, so deadlines are in order within each."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for wait, queue in list(self._expiring.items()):
            while queue:
                entry, to, message_id = queue[0]
                if entry[0] is not None and entry[1] > now:
                    break
                queue.popleft()
                callback = entry[0]
                if callback is not None:
                    entry[0] = None
                    callback(None, TransportError(
                        f"no reply from {to} for {message_id} within the timeout; "
                        "the message may still be applied (resend with the same ID)"))
            if not queue:
                del self._expiring[wait]
        self._sweeper = loop.call_later(EXPIRY_SWEEP_S, self._expire) if self._expiring else None

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
