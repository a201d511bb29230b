"""The state node's side of the network transport.

Accepts links from edges and from other state nodes. Each link starts with HELLO; a peer
that is not a known member (``is_member``) is refused: envelopes from an unknown edge are
never delivered. DELIVER goes to the node (which checks shard ownership and answers
``retry`` for shards it does not own); REPLY carries the shard's epoch so edges can drop
answers from an owner that has since been replaced.

Outbound effects: edges send INTEREST for the entities they hold connections of; an effect
of an entity goes once to each interested edge (never to every edge, never once per client);
the edge fans out locally.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

from domain.effects import Reply, Send, Terminate
from domain.refs import EntityRef
from infrastructure.runtime.node import StateNode
from infrastructure.transport.envelopes import Deliver, Envelope, Hello, Interest, Outbound, ReplyEnvelope, frame
from infrastructure.transport.link import Link

log = logging.getLogger(__name__)


class NodeServer:
    """Listens for edges and peers; is the node's OutboundSink. See the module docstring."""

    def __init__(self, node: StateNode, node_id: str, is_member: Callable[[str], bool],
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.node = node
        self.node_id = node_id
        self.is_member = is_member
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None
        self._links: set[Link] = set()
        self._interest: dict[EntityRef, set[Link]] = defaultdict(set)
        self._link_interest: dict[Link, set[EntityRef]] = defaultdict(set)
        self.refused_peers: set[str] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.node.outbound = self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link(reader, writer, f"{self.node_id}<-")
        self._links.add(link)
        link.start(self._on_envelope, self._on_closed)

    def _on_envelope(self, link: Link, envelope: Envelope) -> None:
        if not link.peer:
            if not isinstance(envelope, Hello) or not self.is_member(envelope.node_id):
                peer = envelope.node_id if isinstance(envelope, Hello) else "?"
                if peer not in self.refused_peers:
                    log.error("refusing link from unknown peer %r (not a registered member)", peer)
                    self.refused_peers.add(peer)
                link.close()
                return
            link.peer = envelope.node_id
            link.lane = envelope.lanes[0] if envelope.lanes else "default"
            link.send(Hello(self.node_id, "state"))
            return
        if isinstance(envelope, Deliver):
            self._deliver(link, envelope)
        elif isinstance(envelope, Interest):
            self._update_interest(link, envelope)
        else:
            log.error("unexpected %s from %s; closing link", type(envelope).__name__, link.peer)
            link.close()

    def _deliver(self, link: Link, d: Deliver) -> None:
        reply_to = None
        if d.want_reply:
            def reply_to(reply: Reply, link: Link = link, d: Deliver = d) -> None:
                link.send(ReplyEnvelope(d.corr, self.node.ownership.epoch(d.to), reply))
        self.node.deliver(d.to, d.message, reply_to)

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
        """OutboundSink: once per interested edge."""
        links = self._interest.get(source)
        if links:
            data = frame(Outbound(source, effect))  # encoded once for every interested edge
            for link in list(links):
                link.send_frame(data)
