"""The network transport's batching, over real sockets: fast-path asks (no task per message),
one socket write per loop iteration, bulk reads that survive any split of the byte stream,
and latest-wins updates sent once per iteration (infrastructure/transport/)."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import msgpack

from domain import ClientMessage, Connect, EntityRef
from domain.effects import Reply, Send, Terminate, ToAllConnections
from infrastructure.runtime.sharding import StaticShards
from infrastructure.settings import Settings
from infrastructure.transport.client import ClusterClient
from infrastructure.transport.envelopes import Interest, frame
from infrastructure.transport.link import Link
from infrastructure.transport.server import NodeServer
from tests.integration.test_network_transport import EDGE_AUTH, OWNED, Sink, node_server, owned_ref


async def _edge_asking(server: NodeServer, ref: EntityRef) -> ClusterClient:
    """An edge client of ``server`` whose link is up (one Connect of ``ref`` answered)."""
    edge = ClusterClient("edge-1", "edge", route=lambda _r: ("node-a", 1), address_of=lambda _n: server.address,
                         auth=EDGE_AUTH)
    assert (await edge.ask(ref, Connect("c", time.time(), "conn", {"sub": "u"}))).ok
    return edge


def _add(mid: str, n: int = 1) -> ClientMessage:
    return ClientMessage(mid, time.time(), "conn", msgpack.packb({"type": "add", "n": n}))


def test_asks_on_a_live_link_take_no_task_and_leave_in_one_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = Settings(store="sqlite", data_dir=str(tmp_path))
        async with node_server(settings, StaticShards(64, OWNED, epoch=1), lambda _n: True) as server:
            ref = owned_ref(True)
            edge = await _edge_asking(server, ref)  # opens the link
            [link] = edge._links.values()  # noqa: SLF001
            writes: list[int] = []
            real_write = link.writer.write
            link.writer.write = lambda data: (writes.append(len(data)), real_write(data))[1]  # type: ignore[method-assign]
            replies: list[Reply] = []
            done = asyncio.get_running_loop().create_future()

            def on_reply(reply: Reply | None, error: BaseException | None) -> None:
                assert error is None and reply is not None
                replies.append(reply)
                if len(replies) == 50 and not done.done():
                    done.set_result(None)

            tasks_before = len(asyncio.all_tasks())
            for i in range(50):
                edge.ask_callback(ref, _add(f"m{i}"), on_reply)
            assert len(asyncio.all_tasks()) == tasks_before  # no task (nor future) per message
            await asyncio.wait_for(done, 30)
            assert writes and len(writes) == 1  # the 50 DELIVERs of one loop iteration: one socket write
            assert [r.message_id for r in replies] == [f"m{i}" for i in range(50)]
            assert [r.payload for r in replies] == list(range(1, 51))  # in order, each applied once
            assert not edge._asks  # noqa: SLF001 - nothing left waiting
            await edge.close()

    asyncio.run(scenario())


def test_a_retry_answer_on_the_fast_path_is_resent_to_the_next_owner(tmp_path: Path) -> None:
    """Node A no longer owns the entity (answers ``retry``); the edge's map then moves it to
    B: the ask is resent there with the same message ID, and the caller hears B's answer."""
    async def scenario() -> None:
        ref = owned_ref(False)  # shards 32..63: B's
        settings_a = Settings(store="sqlite", data_dir=str(tmp_path / "a"))
        settings_b = Settings(store="sqlite", data_dir=str(tmp_path / "b"))
        async with node_server(settings_a, StaticShards(64, OWNED, epoch=1), lambda _n: True) as server_a, \
                node_server(settings_b, StaticShards(64, {"Counter": set(range(32, 64))}, epoch=2), lambda _n: True,
                            name="node-b") as server_b:
            owner = {"now": ("node-a", 1)}
            addresses = {"node-a": server_a.address, "node-b": server_b.address}
            edge = ClusterClient("edge-1", "edge", route=lambda _r: owner["now"], address_of=addresses.get,
                                 auth=EDGE_AUTH, handoff_wait_s=5.0)
            await edge.ask(owned_ref(True), Connect("c0", time.time(), "conn", {"sub": "u"}))  # link to A is up
            got: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            edge.ask_callback(ref, Connect("c1", time.time(), "conn", {"sub": "u"}),
                              lambda reply, error: got.set_result(reply) if reply else got.set_exception(error))
            asyncio.get_running_loop().call_later(0.2, owner.update, {"now": ("node-b", 2)})
            reply = await asyncio.wait_for(got, 30)
            assert reply.ok and reply.message_id == "c1"
            assert server_b.node.resident(ref) is not None and server_a.node.resident(ref) is None  # at B, never at A
            await edge.close()

    asyncio.run(scenario())


def test_a_lost_link_hands_waiting_asks_to_the_slow_path(tmp_path: Path) -> None:
    """Asks waiting on a link that breaks are resent on a new link (same IDs: applied once)."""
    async def scenario() -> None:
        settings = Settings(store="sqlite", data_dir=str(tmp_path))
        async with node_server(settings, StaticShards(64, OWNED, epoch=1), lambda _n: True) as server:
            ref = owned_ref(True)
            edge = await _edge_asking(server, ref)
            futures = [edge.ask_future(ref, _add("warm"))]
            await futures[0]
            replies: list[Reply] = []
            done = asyncio.get_running_loop().create_future()

            def on_reply(reply: Reply | None, error: BaseException | None) -> None:
                replies.append(reply if reply is not None else Reply("?", False, None, "error", str(error)))
                if len(replies) == 20 and not done.done():
                    done.set_result(None)

            for i in range(20):
                edge.ask_callback(ref, _add(f"k{i}"), on_reply)
            for link in list(edge._links.values()):  # noqa: SLF001 - cut before anything was written
                link.writer.transport.abort()
            await asyncio.wait_for(done, 30)
            assert all(r.ok for r in replies), [r.reason for r in replies if not r.ok]
            total = await edge.ask(ref, ClientMessage("peek", time.time(), "conn", msgpack.packb({"type": "peek"})))
            assert total.payload == 21  # "warm" + 20, each once
            await edge.close()

    asyncio.run(scenario())


def test_latest_wins_updates_leave_once_per_loop_iteration_and_the_rest_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = Settings(store="sqlite", data_dir=str(tmp_path))
        async with node_server(settings, StaticShards(64, OWNED, epoch=1), lambda _n: True) as server:
            ref = owned_ref(True)
            sink = Sink()
            edge = await _edge_asking(server, ref)
            edge.subscribe(sink)
            edge.hold(ref)
            await edge.ask(ref, ClientMessage("p", time.time(), "conn", msgpack.packb({"type": "peek"})))  # interest is in
            for n in range(10):  # one loop iteration, as a group commit releases them
                server.publish(ref, Send(ToAllConnections(), {"n": n}, "state"))
                server.publish(ref, Send(ToAllConnections(), {"chat": n}))  # no key: never merged
            server.publish(ref, Terminate("conn-x", "bye"))
            await asyncio.sleep(0.3)
            effects = [effect for _source, effect in sink.got]
            keyed = [e for e in effects if isinstance(e, Send) and e.coalesce_key == "state"]
            assert [e.payload for e in keyed] == [{"n": 9}]  # only the newest of the iteration
            assert [e.payload for e in effects if isinstance(e, Send) and e.coalesce_key is None] == \
                [{"chat": n} for n in range(10)]  # every one, in order
            assert Terminate("conn-x", "bye") in effects
            await edge.close()

    asyncio.run(scenario())


def test_frames_split_anywhere_arrive_whole_and_in_order() -> None:
    """The link reads whatever the socket has and hands over complete frames only, however
    the stream is cut (mid-header, mid-body, many frames per read)."""
    async def scenario() -> None:
        got: list[Any] = []
        closed = asyncio.Event()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            link = Link(reader, writer, "test")
            link.start(lambda _l, envelope: got.append(envelope), lambda _l: closed.set())

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = [Interest(add=(EntityRef("Counter", f"e{i}" * (i % 7 + 1)),)) for i in range(300)]
        data = b"".join(frame(e) for e in sent)
        rng = random.Random(7)
        at = 0
        while at < len(data):
            step = rng.choice([1, 2, 3, 5, 64, 700, 5000])
            writer.write(data[at:at + step])
            await writer.drain()
            at += step
            if rng.random() < 0.3:
                await asyncio.sleep(0.001)
        writer.write(b"\x00\x00\x00\x03\xc1\xc1\xc1")  # malformed: the link closes, nothing after it is read
        writer.write(frame(Interest(add=(EntityRef("Counter", "after"),))))
        await writer.drain()
        await asyncio.wait_for(closed.wait(), 30)
        assert got == sent
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())
