"""The network transport between an edge-side client and a state node over real sockets."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack

from domain import ClientMessage, Connect, EntityRef
from domain.effects import Send, ToAllConnections
from infrastructure.runtime.sharding import StaticShards
from infrastructure.settings import Settings
from infrastructure.transport import LocalTransport, handshake
from infrastructure.transport.auth import LinkAuth
from infrastructure.transport.client import ClusterClient
from infrastructure.transport.envelopes import Deliver, Hello, frame
from infrastructure.transport.port import version_of
from infrastructure.transport.server import NodeServer
from ops.wiring.node import build_node, start_node, stop_node
from tests.support.entities import Counter

OWNED = {"Counter": set(range(32))}  # shards 32..63 belong to nobody here
SECRETS = {"edge": secrets.token_bytes(32), "state": secrets.token_bytes(32)}
NODE_AUTH = LinkAuth(SECRETS)
EDGE_AUTH = LinkAuth({"edge": SECRETS["edge"]})


@asynccontextmanager
async def node_server(settings: Settings, ownership: StaticShards, is_member: Any,
                      name: str = "node-a") -> AsyncIterator[NodeServer]:
    """A state node ``name`` of Counters whose outbound sink is its network server (as the
    wiring connects a clustered node), listening."""
    node = build_node(settings, entities=[Counter], ownership=ownership)
    server = NodeServer(node, name, is_member=is_member, auth=NODE_AUTH,
                        may_speak_for=lambda ref, node: node == name)
    node.connect(router=LocalTransport(node, settings.ask_timeout_s), outbound=server)
    await start_node(node)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
        await stop_node(node)


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[EntityRef, Any]] = []

    def publish(self, source: EntityRef, effect: Any) -> None:
        self.got.append((source, effect))


def owned_ref(owned: bool) -> EntityRef:
    from infrastructure.runtime.sharding import shard_of

    for i in range(1000):
        ref = EntityRef("Counter", f"e{i}")
        if (shard_of(ref, 64) < 32) == owned:
            return ref
    raise AssertionError


def test_ask_reply_outbound_interest_and_refusals(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = Settings(store="sqlite", data_dir=str(tmp_path))
        async with node_server(settings, StaticShards(64, OWNED, epoch=3), lambda peer: peer.startswith("edge-")) as server:
            mine, nobodys = owned_ref(True), owned_ref(False)
            edge = ClusterClient("edge-1", "edge", route=lambda ref: ("node-a", 3), address_of=lambda n: server.address, auth=EDGE_AUTH)
            sink = Sink()
            edge.subscribe(sink)
            assert (await edge.ask(mine, Connect("c", time.time(), "conn", {"sub": "u"}))).ok
            edge.hold(mine)
            await asyncio.sleep(0.05)
            add = ClientMessage("m1", time.time(), "conn", msgpack.packb({"type": "add", "n": 4}))
            reply = await edge.ask(mine, add)
            assert reply.ok and reply.payload == 4 and reply.message_id == "m1"
            await asyncio.sleep(0.05)
            assert sink.got == [(mine, Send(ToAllConnections(), {"total": 4}, "total"))]  # via INTEREST

            other_edge = ClusterClient("edge-2", "edge", route=lambda ref: ("node-a", 3), address_of=lambda n: server.address,
                                       auth=EDGE_AUTH)
            other_sink = Sink()
            other_edge.subscribe(other_sink)
            await other_edge.ask(mine, ClientMessage("m2", time.time(), "conn", msgpack.packb({"type": "add", "n": 1})))
            await asyncio.sleep(0.05)
            assert other_sink.got == []  # outbound only to edges that hold connections of the entity
            assert len(sink.got) == 2

            not_owned = await edge.ask(nobodys, Connect("c2", time.time(), "conn", {"sub": "u"}))
            assert not not_owned.ok and not_owned.code == "retry"

            stale = ClusterClient("edge-3", "edge", route=lambda ref: ("node-a", 4), address_of=lambda n: server.address, auth=EDGE_AUTH)
            dropped = await stale.ask(mine, ClientMessage("m3", time.time(), "conn", msgpack.packb({"type": "peek"})))
            assert not dropped.ok and "replaced owner" in dropped.reason  # epoch 3 < 4 known to the edge

            # An unknown peer is refused: nothing it sends is delivered.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(frame(Hello("intruder", "edge", (), secrets.token_bytes(32))))
            writer.write(frame(Deliver(1, mine, ClientMessage("evil", time.time(), "conn",
                                                              msgpack.packb({"type": "add", "n": 1000})), True)))
            await writer.drain()
            assert await reader.read() == b""  # closed on us
            # A malformed frame from an authenticated edge closes its link; the node keeps serving.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            await handshake.connect(reader, writer, EDGE_AUTH, "edge-9", "edge", (), "node-a")
            writer.write(b"\x00\x00\x00\x03\xc1\xc1\xc1")
            await writer.drain()
            assert await reader.read() == b""
            total = await edge.ask(mine, ClientMessage("m4", time.time(), "conn", msgpack.packb({"type": "peek"})))
            assert total.ok and total.payload == 5
            def failures(reason: str) -> float:
                return server.metrics.registry.get_sample_value(
                    "xplatform_transport_auth_failures_total", {"side": "server", "reason": reason}) or 0.0
            assert failures("not_member") == 1 and failures("protocol") == 0  # edge-9 did authenticate
            for client in (edge, other_edge, stale):
                await client.close()
            await server.stop()

    asyncio.run(scenario())


def test_cut_connection_reconnects_and_outbound_resumes(tmp_path: Path) -> None:
    """The edge -> node link is cut (socket aborted): the next message opens a new link, the
    edge's interest is announced again, pushes resume; nothing acknowledged is lost."""
    async def scenario() -> None:
        settings = Settings(store="sqlite", data_dir=str(tmp_path))
        async with node_server(settings, StaticShards(64, OWNED, epoch=1), lambda peer: True) as server:
            ref = owned_ref(True)
            edge = ClusterClient("edge-1", "edge", route=lambda r: ("node-a", 1), address_of=lambda n: server.address, auth=EDGE_AUTH)
            sink = Sink()
            edge.subscribe(sink)
            edge.hold(ref)
            assert (await edge.ask(ref, Connect("c", time.time(), "conn", {"sub": "u"}))).ok
            acknowledged = 0
            for i in range(1, 31):
                if i in (10, 20):
                    for link in list(edge._links.values()):  # noqa: SLF001 - the cut
                        link.writer.transport.abort()
                reply = await edge.ask(ref, ClientMessage(f"m{i}", time.time(), "conn",
                                                          msgpack.packb({"type": "add", "n": 1})))
                acknowledged += reply.ok
            await asyncio.sleep(0.2)
            total = await edge.ask(ref, ClientMessage("peek", time.time(), "conn", msgpack.packb({"type": "peek"})))
            assert total.payload == acknowledged >= 28  # at most the in-flight one per cut needed a resend
            assert sink.got and sink.got[-1][1].payload == {"total": acknowledged}  # pushes flow again
            await edge.close()
            await server.stop()

    asyncio.run(scenario())


def test_replies_carry_the_stored_version_only_to_askers_that_ask(tmp_path: Path) -> None:
    """The read-your-writes position crosses the network: the edge-side client asks for it and
    gets the stored version; a peer that does not ask (an edge of the previous version) gets the
    eight-element REPLY it can parse."""
    async def scenario() -> None:
        settings = Settings(store="sqlite", data_dir=str(tmp_path))
        async with node_server(settings, StaticShards(64, OWNED, epoch=1), lambda peer: True) as server:
            ref = owned_ref(True)
            edge = ClusterClient("edge-1", "edge", route=lambda r: ("node-a", 1), address_of=lambda n: server.address,
                                 auth=EDGE_AUTH)
            assert (await edge.ask(ref, Connect("c", time.time(), "conn", {"sub": "u"}))).ok
            reply = await edge.ask(ref, ClientMessage("m1", time.time(), "conn", msgpack.packb({"type": "add", "n": 2})))
            stored = len(server.node.journal.read(ref.stream_id))
            assert reply.ok and version_of(reply) == stored > 0

            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            await handshake.connect(reader, writer, EDGE_AUTH, "edge-old", "edge", (), "node-a")

            async def ask_raw(corr: int, message_id: str, want: bool, want_version: bool) -> list[Any]:
                message = ClientMessage(message_id, time.time(), "conn", msgpack.packb({"type": "add", "n": 1}))
                writer.write(frame(Deliver(corr, ref, message, want, want_version)))
                await writer.drain()
                length = int.from_bytes(await reader.readexactly(4), "big")
                body: list[Any] = msgpack.unpackb(await reader.readexactly(length), raw=False)
                return body

            old = await ask_raw(1, "m2", True, False)
            assert old[0] == 3 and len(old) == 8 and old[3] is True  # what an older edge parses
            new = await ask_raw(2, "m3", True, True)
            assert len(new) == 10 and new[9] == len(server.node.journal.read(ref.stream_id)) == stored + 2
            assert isinstance(new[8], list) and len(new[8]) == 3  # the node's hop durations
            writer.close()
            await edge.close()

    asyncio.run(scenario())
