"""The calling side of the network transport: edges (and state nodes, for entity-to-entity
messages) reach the entity's owning node, routed by the shard map.

Implements the :class:`~infrastructure.transport.port.Transport` port, so an edge works
unchanged over the in-process transport (dev mode) or this one (cluster).

- Authentication: each link starts with the mutual handshake (``handshake.py``): the node
  we dialled must prove it holds the secret of our role before we send anything but our
  HELLO; a node that cannot is counted (``xplatform_transport_auth_failures_total{side=
  "client"}``), logged (rate-limited) and treated as unreachable.
- Routing: ``route(ref)`` answers (owner node, epoch) from the current shard map (kept
  current by ZooKeeper watches); ``address_of(node)`` from membership.
- Lanes: one link per (node, lane); ``lane_of(ref)`` picks the lane (e.g. per category),
  so a flood in one lane never queues behind another on the same socket.
- At most once: a DELIVER is sent once; if the link breaks or no reply comes in time the
  caller gets a retryable error and may resend with the same message ID (entities
  deduplicate). A shard without an owner (handoff) is waited for briefly, then ``retry``.
- Epochs: a REPLY whose epoch is older than the epoch the map now gives the shard is
  dropped (an answer from a replaced owner) and the caller gets ``retry``.
- Outbound: ``hold(ref)`` / ``release(ref)`` count the local connections of an entity and
  tell its owner (INTEREST), also again after a move or a reconnect.
- Hops: an asker's :class:`~infrastructure.transport.port.NodeHops` is filled from the
  REPLY's durations (and the name of the node that answered) before its callback runs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from ssl import SSLContext, SSLError

from domain.effects import Reply
from domain.errors import RetryLater
from domain.messages import Inbound
from domain.refs import EntityRef
from infrastructure.metrics import ClusterMetrics
from infrastructure.transport import handshake
from infrastructure.transport.auth import FailureLog, LinkAuth, TransportAuthError
from infrastructure.transport.envelopes import Deliver, Envelope, Interest, Outbound, ReplyEnvelope
from infrastructure.transport.link import Link
from infrastructure.transport.port import NodeHops, OutboundSink, ReplyCallback, StoredReply, callback_when_done

log = logging.getLogger(__name__)

Route = Callable[[EntityRef], tuple[str, int] | None]

SWEEP_S = 0.05
"""How often fast-path asks are checked for their deadline and for their entity moving to
another node: as often as :meth:`ClusterClient._await_reply` looks, so a failover is noticed
as soon on either path; one walk over the few asks in flight, not a timer per message."""


@dataclass(slots=True)
class _Ask:
    """A fast-path ask in flight (:meth:`ClusterClient.ask_callback`)."""

    on_reply: ReplyCallback
    to: EntityRef
    message: Inbound
    link: Link
    node: str
    deadline: float
    hops: NodeHops | None


class ClusterClient:
    """Transport over the network. See the module docstring."""

    def __init__(self, node_id: str, role: str, route: Route, address_of: Callable[[str], str | None],
                 auth: LinkAuth, lane_of: Callable[[EntityRef], str] = lambda ref: "default",
                 ask_timeout_s: float = 5.0, handoff_wait_s: float = 0.5, metrics: ClusterMetrics | None = None,
                 handshake_timeout_s: float = 5.0, ssl: SSLContext | None = None) -> None:
        self.node_id, self.role = node_id, role
        self.auth = auth
        self.metrics = metrics or ClusterMetrics()
        self.handshake_timeout_s = handshake_timeout_s
        self.ssl = ssl
        """TLS to every node, verifying its certificate (infrastructure/transport/tls.py); None: plain TCP."""
        self._log_limit = FailureLog()
        self.route, self.address_of, self.lane_of = route, address_of, lane_of
        self.ask_timeout_s, self.handoff_wait_s = ask_timeout_s, handoff_wait_s
        self._links: dict[tuple[str, str], Link] = {}
        self._connecting: dict[tuple[str, str], asyncio.Future[Link]] = {}
        self._pending: dict[int, tuple[asyncio.Future[ReplyEnvelope], Link]] = {}
        self._corr = itertools.count(1)
        self._sinks: list[OutboundSink] = []
        self._asks: dict[int, _Ask] = {}
        """Fast-path asks waiting for their reply, by correlation ID (see ask_callback)."""
        self._sweeper: asyncio.TimerHandle | None = None
        self._held: Counter[EntityRef] = Counter()
        self._interest_at: dict[EntityRef, str] = {}

    # ------------------------------------------------------------------ Transport port
    async def ask(self, to: EntityRef, message: Inbound, timeout: float | None = None,
                  hops: NodeHops | None = None) -> Reply:
        """Deliver and await the reply. A ``retry`` answer while the shard moves (the old
        owner fenced, drained or replaced) is resent, with the same message ID, to whoever
        owns the shard next, until ``handoff_wait_s`` has passed: a handoff is invisible to
        callers unless it takes longer than that. Resending is safe: entities apply each ID once.
        ``hops``: filled from the reply that is returned (see the module docstring)."""
        timeout = timeout or self.ask_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout
        give_up_moving = asyncio.get_running_loop().time() + self.handoff_wait_s
        while True:
            reply, moving = await self._ask_once(to, message, max(0.01, deadline - asyncio.get_running_loop().time()),
                                                 hops)
            now = asyncio.get_running_loop().time()
            if reply.ok or not moving or now >= min(deadline, give_up_moving):
                return reply
            await asyncio.sleep(0.02)

    def ask_future(self, to: EntityRef, message: Inbound, timeout: float | None = None,
                   hops: NodeHops | None = None) -> asyncio.Future[Reply]:
        """:meth:`ask` as a future (a task here: resending across a handoff needs one)."""
        return asyncio.ensure_future(self.ask(to, message, timeout, hops))

    def ask_callback(self, to: EntityRef, message: Inbound, on_reply: ReplyCallback,
                     timeout: float | None = None, hops: NodeHops | None = None) -> None:
        """:meth:`ask` with a callback (see the transport port). The steady state - the
        owner known, its link up, our interest announced - is one DELIVER answered straight
        from the link's reader: no task, future or timer per message (deadlines and owner
        changes are checked every :data:`SWEEP_S` for all asks together). Everything else
        (no link yet, a ``retry`` answer, a reply from a replaced owner, the owner changing
        or the link breaking while we wait) continues in :meth:`ask` with the time left,
        and its handoff resends (same message ID: safe)."""
        owner = self.route(to)
        link = None if owner is None else self._links.get((owner[0], self.lane_of(to)))
        if link is None or link.closed.is_set() or owner is None or (
                to in self._held and self._interest_at.get(to) != owner[0]):
            callback_when_done(self.ask_future(to, message, timeout, hops), on_reply)
            return
        loop = asyncio.get_running_loop()
        corr = next(self._corr)
        ask = _Ask(on_reply, to, message, link, owner[0], loop.time() + (timeout or self.ask_timeout_s), hops)
        self._asks[corr] = ask
        if not link.send(Deliver(corr, to, message, True, True)):
            del self._asks[corr]
            callback_when_done(self.ask_future(to, message, timeout, hops), on_reply)
            return
        if self._sweeper is None:
            self._sweeper = loop.call_later(SWEEP_S, self._sweep)

    def _answered(self, ask: _Ask, envelope: ReplyEnvelope) -> None:
        """A fast-path reply: handed over, unless it asks for the slow path (see ask_callback)."""
        reply = envelope.reply
        if (not reply.ok and reply.code == "retry") or self._from_replaced_owner(ask.to, envelope):
            self._continue(ask)
        else:  # the envelope carries no message ID (the caller has it)
            if ask.hops is not None and envelope.hops is not None:
                ask.hops.fill(ask.node, envelope.hops)
            ask.on_reply(_reply(ask.message.message_id, reply, envelope.version), None)

    def _from_replaced_owner(self, to: EntityRef, envelope: ReplyEnvelope) -> bool:
        """The reply's epoch is older than the one the map now gives ``to``'s shard: an
        answer from an owner that has since been replaced (dropped, the ask resent)."""
        current = self.route(to)
        return current is not None and envelope.epoch < current[1]

    def _continue(self, ask: _Ask) -> None:
        """Hand a fast-path ask over to :meth:`ask` with the time it has left."""
        left = ask.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            ask.on_reply(_retry(ask.message.message_id, f"no reply for {ask.to} in time"), None)
        else:
            callback_when_done(self.ask_future(ask.to, ask.message, left, ask.hops), ask.on_reply)

    def _sweep(self) -> None:
        """Every SWEEP_S while fast-path asks wait: past their deadline -> ``retry``; their
        entity moved to another node -> continued in :meth:`ask` (as ``_await_reply`` does)."""
        now = asyncio.get_running_loop().time()
        for corr, ask in list(self._asks.items()):
            owner = self.route(ask.to)
            if ask.deadline <= now or (owner is not None and owner[0] != ask.node):
                del self._asks[corr]
                self._continue(ask)
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep) if self._asks else None

    async def _ask_once(self, to: EntityRef, message: Inbound, timeout: float,
                        hops: NodeHops | None = None) -> tuple[Reply, bool]:
        """One attempt; the flag says whether the shard looked like it was moving."""
        owner = await self._owner(to)
        if owner is None:
            return _retry(message.message_id, f"no node owns the shard of {to} (handoff in progress)"), False
        node, _epoch = owner
        try:
            link = await self._link(node, self.lane_of(to))
        except OSError as exc:
            return _retry(message.message_id, f"owner {node} of {to} unreachable: {exc}"), True
        if to in self._held and self._interest_at.get(to) != node:
            # Same link, so the owner records our interest before it processes the message
            # (pushes caused by this very message, e.g. "X joined", reach us).
            if link.send(Interest(add=(to,))):
                self._interest_at[to] = node
        corr = next(self._corr)
        future: asyncio.Future[ReplyEnvelope] = asyncio.get_running_loop().create_future()
        self._pending[corr] = (future, link)
        if not link.send(Deliver(corr, to, message, True, True)):
            self._pending.pop(corr, None)
            return _retry(message.message_id, f"link to {node} closed"), True
        try:
            envelope = await self._await_reply(future, to, node, timeout)
        except TimeoutError:
            return _retry(message.message_id, f"no reply from {node} for {to} in time"), False
        except _OwnerChanged:
            return _retry(message.message_id, f"{to} moved away from {node} while we waited"), True
        except ConnectionError as exc:
            return _retry(message.message_id, f"link to {node} lost: {exc}"), True
        finally:
            self._pending.pop(corr, None)
        if self._from_replaced_owner(to, envelope):
            return _retry(message.message_id, f"reply from a replaced owner of {to} (epoch {envelope.epoch})"), True
        r = envelope.reply
        if hops is not None and envelope.hops is not None:
            hops.fill(node, envelope.hops)
        # Every ``retry`` answer is resent while the handoff window lasts: the shard moving
        # (not owned, fenced, draining) or a write that lost to the new owner's takeover
        # marker look the same from here, and resending is always safe (message IDs).
        moving = not r.ok and r.code == "retry"
        return _reply(message.message_id, r, envelope.version), moving

    async def _await_reply(self, future: asyncio.Future[ReplyEnvelope], to: EntityRef, node: str,
                           timeout: float) -> ReplyEnvelope:
        """The reply, unless the map moves ``to`` to another node first (its old owner
        crashed or is a zombie: waiting for it would only add the full timeout)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            done, _ = await asyncio.wait({future}, timeout=min(0.05, remaining))
            if done:
                return future.result()
            owner = self.route(to)
            if owner is not None and owner[0] != node:
                raise _OwnerChanged

    def send(self, to: EntityRef, message: Inbound) -> None:
        asyncio.get_running_loop().create_task(self._send(to, message))

    def tell(self, to: EntityRef, message: Inbound) -> None:
        """Router for a state node: entity-to-entity messages go to the owner's node. Sent
        as an ask so that a shard in handoff (old owner refusing, link lost) is retried at
        the next owner within ``handoff_wait_s``; the message ID makes that safe. Beyond
        that it is at most once, and the entities' own timers recover (e.g. reservations)."""
        asyncio.get_running_loop().create_task(self._tell(to, message))

    async def _tell(self, to: EntityRef, message: Inbound) -> None:
        reply = await self.ask(to, message)
        if not reply.ok and reply.retryable:
            log.warning("entity message %s to %s not delivered: %s", message.message_id, to, reply.reason,
                        extra={"entity": str(to), "message_id": message.message_id})

    def subscribe(self, sink: OutboundSink) -> None:
        self._sinks.append(sink)

    def unsubscribe(self, sink: OutboundSink) -> None:
        self._sinks.remove(sink)

    # ------------------------------------------------------------------ interest (edges)
    def hold(self, ref: EntityRef) -> None:
        """A local connection of ``ref`` opened: make sure its owner sends us its outbound."""
        self._held[ref] += 1
        if self._held[ref] == 1:
            asyncio.get_running_loop().create_task(self._announce(ref))

    def release(self, ref: EntityRef) -> None:
        self._held[ref] -= 1
        if self._held[ref] <= 0:
            del self._held[ref]
            node = self._interest_at.pop(ref, None)
            link = self._links.get((node, self.lane_of(ref))) if node else None
            if link is not None:
                link.send(Interest(remove=(ref,)))

    def reannounce(self) -> None:
        """After a shard-map change: tell new owners about the entities we hold."""
        for ref in list(self._held):
            owner = self.route(ref)
            if owner is not None and self._interest_at.get(ref) != owner[0]:
                asyncio.get_running_loop().create_task(self._announce(ref))

    async def _announce(self, ref: EntityRef) -> None:
        owner = await self._owner(ref)
        if owner is None or ref not in self._held:
            return
        try:
            link = await self._link(owner[0], self.lane_of(ref))
        except OSError:
            return
        if link.send(Interest(add=(ref,))):
            self._interest_at[ref] = owner[0]

    def buffered_by_lane(self) -> dict[str, int]:
        """Bytes written but not yet sent, per lane (a growing figure: a peer not keeping up)."""
        totals: dict[str, int] = {}
        for (_node, lane), link in self._links.items():
            transport = link.writer.transport
            totals[lane] = totals.get(lane, 0) + (0 if transport.is_closing() else transport.get_write_buffer_size())
        return totals

    def queued_by_lane(self) -> dict[str, int]:
        """Envelopes written but not yet sent, per lane (links to owners)."""
        totals: dict[str, int] = {}
        for (_node, lane), link in self._links.items():
            totals[lane] = totals.get(lane, 0) + link.queued()
        return totals

    # ------------------------------------------------------------------ links
    async def close(self) -> None:
        asks, self._asks = self._asks, {}
        for ask in asks.values():
            ask.on_reply(_retry(ask.message.message_id, "transport closed"), None)
        for link in list(self._links.values()):
            link.close()
        self._links.clear()

    async def _owner(self, ref: EntityRef) -> tuple[str, int] | None:
        owner = self.route(ref)
        waited = 0.0
        while owner is None and waited < self.handoff_wait_s:
            await asyncio.sleep(0.02)
            waited += 0.02
            owner = self.route(ref)
        return owner

    async def _send(self, to: EntityRef, message: Inbound) -> None:
        owner = await self._owner(to)
        if owner is None:
            log.warning("dropping %s for %s: no owner (at most once; the sender may retry)", message.message_id, to,
                        extra={"entity": str(to), "message_id": message.message_id})
            return
        try:
            link = await self._link(owner[0], self.lane_of(to))
        except OSError as exc:
            log.warning("dropping %s for %s: %s", message.message_id, to, exc,
                        extra={"entity": str(to), "message_id": message.message_id})
            return
        link.send(Deliver(0, to, message, False))

    async def _link(self, node: str, lane: str) -> Link:
        key = (node, lane)
        link = self._links.get(key)
        if link is not None and not link.closed.is_set():
            return link
        pending = self._connecting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Link] = asyncio.get_running_loop().create_future()
        self._connecting[key] = future
        try:
            address = self.address_of(node)
            if address is None:
                raise OSError(f"no address for node {node}")
            host, port = address.rsplit(":", 1)
            try:
                reader, writer = await asyncio.open_connection(
                    host, int(port), ssl=self.ssl, ssl_handshake_timeout=self.handshake_timeout_s if self.ssl else None)
            except SSLError as exc:  # e.g. a certificate our CA did not sign, or for another host
                self._auth_failed(node, TransportAuthError("tls", str(exc)))
                raise ConnectionRefusedError(f"{node}: TLS failed: {exc}") from None
            await self._handshake(reader, writer, node, lane)
            link = Link(reader, writer, f"{self.node_id}->{node}/{lane}")
            link.peer, link.role = node, "state"
            link.start(self._on_envelope, self._on_closed)
            self._links[key] = link
            future.set_result(link)
            return link
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it through shield
            raise
        finally:
            self._connecting.pop(key, None)

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, node: str, lane: str) -> None:
        """Prove ourselves to ``node`` and have it prove itself; OSError (unreachable) if not."""
        try:
            await asyncio.wait_for(handshake.connect(reader, writer, self.auth, self.node_id, self.role, (lane,), node),
                                   self.handshake_timeout_s)
        except (TransportAuthError, TimeoutError) as exc:
            writer.close()
            failure = exc if isinstance(exc, TransportAuthError) else TransportAuthError(
                "timeout", f"handshake not done in {self.handshake_timeout_s} s")
            self._auth_failed(node, failure)
            raise ConnectionRefusedError(f"{node}: {failure}") from None

    def _auth_failed(self, node: str, failure: TransportAuthError) -> None:
        self.metrics.auth_failures.labels("client", failure.reason).inc()
        if self._log_limit.should_log(failure.reason, node):
            log.error("link to %s refused: %s", node, failure)

    def _on_envelope(self, link: Link, envelope: Envelope) -> None:
        if isinstance(envelope, ReplyEnvelope):
            ask = self._asks.pop(envelope.corr, None)
            if ask is not None:
                self._answered(ask, envelope)
                return
            waiting = self._pending.get(envelope.corr)
            if waiting is not None and not waiting[0].done():
                waiting[0].set_result(envelope)
        elif isinstance(envelope, Outbound):
            for sink in self._sinks:
                sink.publish(envelope.source, envelope.effect)

    def _on_closed(self, link: Link) -> None:
        for key, known in list(self._links.items()):
            if known is link:
                del self._links[key]
        for future, on_link in list(self._pending.values()):
            if on_link is link and not future.done():
                future.set_exception(ConnectionError(f"link {link.name} closed"))
        for corr, ask in list(self._asks.items()):
            if ask.link is link:
                del self._asks[corr]
                self._continue(ask)
        for ref, node in list(self._interest_at.items()):
            if node == link.peer:
                del self._interest_at[ref]
        if self._held:
            asyncio.get_running_loop().call_later(0.05, self.reannounce)


class _OwnerChanged(Exception):
    """The shard map moved the entity while a reply was awaited."""


def _reply(message_id: str, r: Reply, version: int) -> Reply:
    """The reply of a REPLY envelope (which carries no message ID: the asker has it), with
    its stored version when the node sent one."""
    if version:
        return StoredReply(message_id, r.ok, r.payload, r.code, r.reason, r.retryable, version)
    return Reply(message_id, r.ok, r.payload, r.code, r.reason, r.retryable)


def _retry(message_id: str, reason: str) -> Reply:
    return Reply(message_id, False, None, RetryLater.code, reason, True)

