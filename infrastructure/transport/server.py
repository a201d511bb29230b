"""The state node's side of the network transport.

Accepts links from edges and from other state nodes. Each link starts with the mutual
handshake (``handshake.py``/``auth.py``): a peer that is not a known member (``is_member``),
claims an unknown role or does not prove it holds that role's secret is refused (one
rate-limited log line, ``xplatform_transport_auth_failures_total``, socket closed): nothing
it sends is read past the handshake. What an unauthenticated peer can hold is bounded: the
handshake timeout, at most ``max_handshakes`` handshakes at once (a socket over it is closed
at once, reason ``handshakes_full``) and handshake frames of at most 4 KiB. Then each DELIVER is checked against the peer's
authenticated role (:data:`REFUSAL_REASONS`):

- edges may send client traffic only (Connect, ClientMessage, Terminated) and INTEREST;
- state nodes may send entity messages only, and only for a sending entity whose shard the
  *receiver's* current map gives to that peer, or gave to it until the move before the
  current one, for ``transport_previous_owner_window_s`` after the receiver applied that
  move (``Ownership.may_speak_for``): an old owner's last writes release messages after its
  shard moved (a rebalance), and they are its legitimate last words as owner. No other node
  speaks for the entity, and the old owner not after the window.
  When the sender's map is ahead of ours (we have not seen the move yet), the message is
  refused with ``retry``: the sender's transport resends it to the target's owner while its
  handoff window lasts, by when our map has usually caught up, else it is dropped - entity
  messages are at most once, and entities recover lost ones (e.g. the Bidder's
  ``hold_status`` check for a lost ``credit_held``).

A refusal is counted (``xplatform_transport_refused_messages_total{reason}``), logged
(rate-limited), answered with an error reply if one is wanted, and delivers nothing.

DELIVER goes to the node (which checks shard ownership and answers
``retry`` for shards it does not own); REPLY carries the shard's epoch so edges can drop
answers from an owner that has since been replaced, and the node's own durations of the
message's hops (queue, handler, append: :class:`~infrastructure.transport.port.NodeHops`),
so the asker can tell the transport's share of its round trip from the node's.

Outbound effects: edges send INTEREST for the entities they hold connections of; an effect
of an entity goes once to each interested edge (never to every edge, never once per client);
the edge fans out locally.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from ssl import SSLContext

from domain.effects import Reply, Send, Terminate, ToAllConnections, ToConnection
from domain.errors import NotAuthorised, RetryLater
from domain.messages import ClientMessage, Connect, EntityMessage, Terminated
from domain.refs import EntityRef
from infrastructure.metrics import ClusterMetrics
from infrastructure.runtime.node import StateNode
from infrastructure.transport import handshake
from infrastructure.transport.auth import FailureLog, LinkAuth, TransportAuthError
from infrastructure.transport.envelopes import Deliver, Envelope, Interest, Outbound, ReplyEnvelope, frame
from infrastructure.transport.link import Link
from infrastructure.transport.port import NodeHops, version_of

log = logging.getLogger(__name__)

CLIENT_TRAFFIC = (Connect, ClientMessage, Terminated)
REFUSAL_REASONS = ("entity_message_from_edge", "client_message_from_state", "sender_not_owner", "interest_from_state")
"""Bounded label values of ``xplatform_transport_refused_messages_total``."""


class NodeServer:
    """Listens for edges and peers; the node's OutboundSink once the wiring connects it
    (``StateNode.connect``). See the module docstring."""

    def __init__(self, node: StateNode, node_id: str, is_member: Callable[[str], bool], auth: LinkAuth,
                 may_speak_for: Callable[[EntityRef, str], bool], host: str = "127.0.0.1", port: int = 0,
                 metrics: ClusterMetrics | None = None, handshake_timeout_s: float = 5.0,
                 ssl: SSLContext | None = None, max_handshakes: int = 256) -> None:
        self.node = node
        self.node_id = node_id
        self.is_member = is_member
        self.auth = auth
        self.may_speak_for = may_speak_for
        """May this node send entity messages from this entity (sender checks; ``Ownership.may_speak_for``)?"""
        self.host, self.port = host, port
        self.metrics = metrics or ClusterMetrics()
        self.handshake_timeout_s = handshake_timeout_s
        self.max_handshakes = max_handshakes
        """Handshakes in progress at most; a socket over it is closed at once (module docstring)."""
        self.ssl = ssl
        """TLS around every link (infrastructure/transport/tls.py); None: plain TCP."""
        self._server: asyncio.Server | None = None
        self._links: set[Link] = set()
        self._handshaking: set[asyncio.StreamWriter] = set()
        self._interest: dict[EntityRef, set[Link]] = defaultdict(set)
        self._link_interest: dict[Link, set[EntityRef]] = defaultdict(set)
        self._log_limit = FailureLog()
        self._latest: dict[tuple[EntityRef, ToAllConnections | ToConnection, str], Send] | None = None
        """Latest-wins updates of this loop iteration (see :meth:`publish`); None: none yet."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, ssl=self.ssl,
                                                  ssl_handshake_timeout=self.handshake_timeout_s if self.ssl else None)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close()
        for writer in list(self._handshaking):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Handshake first (bounded in time, in number and in frame size); only an
        authenticated peer gets a link."""
        if len(self._handshaking) >= self.max_handshakes:
            self._refuse_link(writer, TransportAuthError(
                "handshakes_full", f"{self.max_handshakes} handshakes already in progress"))
            return
        self._handshaking.add(writer)
        try:
            peer = await asyncio.wait_for(
                handshake.accept(reader, writer, self.auth, self.node_id, self.is_member), self.handshake_timeout_s)
        except TransportAuthError as exc:
            self._refuse_link(writer, exc)
            return
        except TimeoutError:
            self._refuse_link(writer, TransportAuthError("timeout", f"handshake not done in {self.handshake_timeout_s} s"))
            return
        finally:
            self._handshaking.discard(writer)
        link = Link(reader, writer, f"{self.node_id}<-{peer.node_id}")
        link.peer, link.role = peer.node_id, peer.role
        link.lane = peer.lanes[0] if peer.lanes else "default"
        self._links.add(link)
        link.start(self._on_envelope, self._on_closed)

    def _refuse_link(self, writer: asyncio.StreamWriter, exc: TransportAuthError) -> None:
        self.metrics.auth_failures.labels("server", exc.reason).inc()
        address = writer.get_extra_info("peername")
        host = str(address[0]) if isinstance(address, tuple) else str(address)  # not the port: new every attempt
        if self._log_limit.should_log(exc.reason, host):
            log.error("refused transport link from %s: %s", address, exc)
        writer.close()

    def _on_envelope(self, link: Link, envelope: Envelope) -> None:
        if isinstance(envelope, Deliver):
            self._deliver(link, envelope)
        elif isinstance(envelope, Interest):
            if link.role == "state":
                self._refused(link, "interest_from_state", "INTEREST (only edges hold client connections)")
                return
            self._update_interest(link, envelope)
        else:
            log.error("unexpected %s from %s; closing link", type(envelope).__name__, link.peer)
            link.close()

    def _deliver(self, link: Link, d: Deliver) -> None:
        refusal = self._refusal(link, d)
        if refusal is not None:
            reason, retryable = refusal
            self._refused(link, reason, f"{type(d.message).__name__} {d.message.message_id[:80]!r} to {d.to}")
            if d.want_reply:
                code = RetryLater.code if retryable else NotAuthorised.code
                reply = Reply(d.message.message_id, False, None, code, f"refused: {reason}", retryable)
                link.send(ReplyEnvelope(d.corr, self.node.ownership.epoch(d.to), reply))
            return
        reply_to = None
        hops = NodeHops()
        if d.want_reply:
            def reply_to(reply: Reply, link: Link = link, d: Deliver = d) -> None:
                if d.want_version:  # an asker of this version: the node's hop durations and the stored version
                    link.send(ReplyEnvelope(d.corr, self.node.ownership.epoch(d.to), reply, hops.durations(),
                                            version_of(reply)))
                else:  # an older edge parses exactly 8 fields
                    link.send(ReplyEnvelope(d.corr, self.node.ownership.epoch(d.to), reply))
        self.node.deliver(d.to, d.message, reply_to, hops)

    def _refusal(self, link: Link, d: Deliver) -> tuple[str, bool] | None:
        """(reason, retryable) when ``link``'s peer may not deliver ``d``; None when it may."""
        message = d.message
        if link.role == "edge":
            return None if isinstance(message, CLIENT_TRAFFIC) else ("entity_message_from_edge", False)
        if not isinstance(message, EntityMessage):
            return "client_message_from_state", False
        if not self.may_speak_for(message.sender, link.peer):
            return "sender_not_owner", True  # maybe a handoff our map has not seen yet: see the module docstring
        return None

    def _refused(self, link: Link, reason: str, what: str) -> None:
        self.metrics.refused_messages.labels(reason).inc()
        if self._log_limit.should_log(reason, link.peer):
            log.error("refused %s from %s %s: %s", what, link.role, link.peer, reason)

    def _update_interest(self, link: Link, i: Interest) -> None:
        for ref in i.add:
            self._interest[ref].add(link)
            self._link_interest[link].add(ref)
        for ref in i.remove:
            self._interest[ref].discard(link)
            self._link_interest[link].discard(ref)
            if not self._interest[ref]:
                del self._interest[ref]

    def _on_closed(self, link: Link) -> None:
        self._links.discard(link)
        for ref in self._link_interest.pop(link, ()):
            links = self._interest.get(ref)
            if links is not None:
                links.discard(link)
                if not links:
                    del self._interest[ref]

    def queued_by_lane(self) -> dict[str, int]:
        """Envelopes (replies, outbound effects) written to callers but not yet sent, per lane."""
        totals: dict[str, int] = {}
        for link in self._links:
            totals[link.lane] = totals.get(link.lane, 0) + link.queued()
        return totals

    def publish(self, source: EntityRef, effect: Send | Terminate) -> None:
        """OutboundSink: once per interested edge. A latest-wins state update (a Send with a
        ``coalesce_key`` to one connection or to all) waits for the end of this loop
        iteration, and only the newest per (entity, target, key) leaves: a group commit
        releases a hot entity's updates of a whole batch together, and the edge keeps only
        the newest per tick anyway, so sending each would cost an encoding here and a
        decoding there per message for frames no client sees. Everything else leaves now."""
        links = self._interest.get(source)
        if not links:
            return
        if isinstance(effect, Send) and effect.coalesce_key is not None and isinstance(
                effect.target, (ToAllConnections, ToConnection)):
            latest = self._latest
            if latest is None:
                latest = self._latest = {}
                asyncio.get_running_loop().call_soon(self._publish_latest)
            latest[(source, effect.target, effect.coalesce_key)] = effect
            return
        self._send_outbound(source, effect, links)

    def _publish_latest(self) -> None:
        latest, self._latest = self._latest, None
        for (source, _target, _key), effect in (latest or {}).items():
            links = self._interest.get(source)
            if links:
                self._send_outbound(source, effect, links)

    def _send_outbound(self, source: EntityRef, effect: Send | Terminate, links: set[Link]) -> None:
        data = frame(Outbound(source, effect))  # encoded once for every interested edge
        for link in list(links):
            link.send_frame(data)
