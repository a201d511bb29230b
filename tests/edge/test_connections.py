"""Happy paths of the public edge over real sockets: welcome, durable replies, fan-out by
target, coalescing, slow consumers, drops, reconnects, expiry, shutdown, metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from domain.refs import EntityRef
from edge import protocol
from edge.app import DEV_ISSUER_KEY
from infrastructure.persistence import new_mapper, open_journal
from tests.edge.harness import ROOM, Edge, RawSocket, eventually, run_edge, running_edge, token


def test_connect_welcome_and_reply_after_durability(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        ann = await edge.client("ann", token_in_protocol=True)  # the browser way: bearer.<JWT> subprotocol
        assert ann.welcome == {"value": 0, "reconnected": False}
        assert edge.event_types() == ["ConnectionAccepted"]
        reply = await ann.request({"type": "set", "value": 5})
        assert reply.ok and reply.payload == 5
        assert edge.event_types()[-1] == "Set"  # durable when the REPLY arrived
        assert edge.metric("xplatform_edge_round_trip_seconds_count") == 1
        await ann.close()

    run_edge(tmp_path, scenario)


def test_pushes_to_all_by_claims_and_to_one_connection(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        ann = await edge.client("ann", "admin")
        bob = await edge.client("bob", "member")
        cat = await edge.client("cat", "member")
        await ann.request({"type": "say", "text": "all"})
        for c in (ann, bob, cat):
            assert await c.next_push() == {"text": "all"}
        await ann.request({"type": "say", "text": "members", "role": "member"})
        assert await bob.next_push() == {"text": "members"} and await cat.next_push() == {"text": "members"}
        await ann.request({"type": "say", "text": "just cat", "to": cat.cid})
        assert await cat.next_push() == {"text": "just cat"}
        await ann.request({"type": "say", "text": "all again"})
        for c in (ann, bob, cat):  # nothing else was queued before it
            assert await c.next_push() == {"text": "all again"}
        for c in (ann, bob, cat):
            await c.close()

    run_edge(tmp_path, scenario)


def test_coalescing_many_updates_give_fewer_frames_and_the_last_one_wins(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        ann = await edge.client("ann")
        bob = await edge.client("bob")
        replies = await asyncio.gather(*(ann.request({"type": "set", "value": i}) for i in range(1, 61)))
        assert all(r.ok for r in replies)
        seen: list[int] = []
        while not seen or seen[-1] != 60:  # the last state always arrives (60 is the last one set)
            seen.append((await bob.next_push(timeout=30))["value"])
        assert len(seen) < 30, seen
        assert seen == sorted(seen)  # never an older state after a newer one
        assert edge.metric("xplatform_edge_coalesced_dropped_total") > 0
        await ann.close()
        await bob.close()

    run_edge(tmp_path, scenario, coalesce_hz=10.0)


def test_slow_consumer_is_closed_1013_while_another_keeps_receiving(tmp_path: Path) -> None:
    """A client that never reads (a raw socket with a small receive buffer: the kernel takes
    little, then nothing) is closed 1013 once its socket took nothing for slow_consumer_s;
    a client that reads gets every push meanwhile."""
    async def scenario(edge: Edge) -> None:
        ann = await edge.client("ann")
        fast = await edge.client("fast")
        slow = await RawSocket.upgraded(edge.base_url, "slow", rcvbuf=4096)
        await eventually(lambda: len(edge.public.registry) == 3, what="the slow client registered")
        slow_cid = next(c.cid for c in edge.public.registry if c.claims["sub"] == "slow")
        received = 0

        async def read_fast() -> None:
            nonlocal received
            while received < 480:
                await fast.next_push(timeout=5)
                received += 1

        reader = asyncio.create_task(read_fast())
        for _ in range(60):  # 480 pushes of 50 KB: ~24 MB the slow client never reads
            assert (await ann.request({"type": "spam", "n": 8, "size": 50_000})).ok
        await asyncio.wait_for(reader, 10)
        assert received == 480  # the fast client got everything, never stalled
        await eventually(lambda: edge.metric("xplatform_edge_closes_total", {"reason": "slow_consumer"}) == 1,
                         timeout=10, what="slow consumer closed")
        assert edge.metric("xplatform_edge_pushes_dropped_total") > 0  # what it could not take was not kept
        frames = await asyncio.wait_for(slow.frames_until_closed(), 10)  # now read: what was sent, then the end
        closes = [payload for opcode, payload in frames if opcode == 0x8]
        assert not closes or int.from_bytes(closes[0][:2], "big") == protocol.TRY_AGAIN_LATER
        await eventually(lambda: not edge.entity().is_live(slow_cid), what="Terminated for the slow consumer")
        await ann.close()
        await fast.close()

    run_edge(tmp_path, scenario, slow_consumer_s=0.5, close_timeout_s=1.0, shed_after_ms=0)  # not about shedding


def test_terminated_reaches_the_entity_when_the_socket_drops(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        ann = await edge.client("ann")
        assert edge.entity().is_live(ann.cid)
        ann.drop_for_test()
        await eventually(lambda: not edge.entity().is_live(ann.cid), what="Terminated at the entity")
        assert edge.entity().connection_claims(ann.cid)["sub"] == "ann"  # kept for the grace period
        assert len(edge.public.registry) == 0
        await ann.close()

    run_edge(tmp_path, scenario)


def test_reconnect_with_the_same_cid_resumes_within_the_grace_period(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        ann = await edge.client("ann", reconnect=True, backoff_initial_s=0.01)
        bob = await edge.client("bob")
        ann.drop_for_test()
        await eventually(lambda: ann.connects == 2, what="the reconnect")
        assert ann.welcome["reconnected"] is True and edge.entity().is_live(ann.cid)
        assert edge.event_types().count("ConnectionAccepted") == 2  # ann once, bob once
        reply = await ann.request({"type": "set", "value": 3})
        assert reply.ok and (await bob.next_push()) == {"value": 3}
        await ann.close()
        await bob.close()

    run_edge(tmp_path, scenario)


def test_token_expiry_terminates_with_4401(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        ann = await edge.client("ann", token=token("ann", ttl=0.5), reconnect=True)
        await eventually(lambda: ann.close_code is not None, timeout=5, what="the expiry close")
        assert ann.close_code == protocol.TOKEN_EXPIRED and ann.terminated == ("token expired", True)
        await eventually(lambda: not edge.entity().is_live(ann.cid), what="Terminated at the entity")
        await ann.close()

    run_edge(tmp_path, scenario)


def test_entity_terminate_sends_terminate_and_closes(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        ann = await edge.client("ann")
        bob = await edge.client("bob", reconnect=True)
        assert (await ann.request({"type": "kick", "cid": bob.cid})).ok
        await eventually(lambda: bob.close_code is not None, what="bob's close")
        assert bob.terminated == ("kicked", False) and bob.close_code == protocol.NORMAL
        await asyncio.sleep(0.1)
        assert bob.connects == 1  # reconnect false: the client went away
        await ann.close()
        await bob.close()

    run_edge(tmp_path, scenario)


def test_shutdown_closes_with_going_away_and_tells_the_entity(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_edge(tmp_path) as edge:
            ann = await edge.client("ann")
            settings = edge.platform.settings
        # the edge shut down before the platform stopped: Terminated was applied and stored
        await eventually(lambda: ann.close_code is not None, what="ann's close")
        assert ann.close_code == protocol.GOING_AWAY
        await ann.close()
        journal, mapper = open_journal(settings), new_mapper()
        try:
            dropped = [mapper.to_domain_event(e) for e in journal.read(ROOM.stream_id)][-2]
        finally:
            journal.close()
        assert type(dropped).__name__ == "ConnectionDropped" and dropped.reason == "edge_shutdown"

    asyncio.run(main())


def test_heartbeat_and_latency_metrics_are_exposed(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        ann = await edge.client("ann", heartbeat_s=0.05)
        await ann.request({"type": "set", "value": 1})
        await eventually(lambda: edge.metric("xplatform_edge_heartbeat_rtt_seconds_count") > 0, what="edge ping RTT")
        await eventually(lambda: edge.metric("xplatform_edge_client_latency_seconds_count") > 0, what="LATENCY")
        assert ann.rtts_ms and min(ann.rtts_ms) >= 0
        async with aiohttp.ClientSession() as session, session.get(f"{edge.base_url}/metrics") as resp:
            text = await resp.text()
        for name in ("xplatform_edge_connections{kind=\"websocket\"} 1.0", "xplatform_edge_frames_in_total{kind=\"msg\"}",
                     "xplatform_edge_frames_out_total{kind=\"push\"}", "xplatform_edge_round_trip_seconds_bucket",
                     "xplatform_edge_auth_failures_total{reason=\"expired\"} 0.0", "xplatform_node_messages_total"):
            assert name in text, name
        await ann.close()

    run_edge(tmp_path, scenario, heartbeat_s=0.05)


def test_dev_tokens_are_served_only_when_enabled(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{edge.base_url}/dev/token", params={"sub": "ann", "role": "auctioneer"}) as resp:
                body = await resp.json()
            assert resp.status == 200 and body["expires_in"] == 3600
            async with session.get(f"{edge.base_url}/dev/token", params={"sub": "a b"}) as resp:
                assert resp.status == 400
        client = await edge.client(token=body["token"], ref=EntityRef("Lot", "l1"))
        assert client.welcome["status"] == "new"
        await client.close()
        assert DEV_ISSUER_KEY in edge.app

    run_edge(tmp_path, scenario, dev_tokens=True)

    async def disabled(edge: Edge) -> None:
        async with aiohttp.ClientSession() as session, session.get(f"{edge.base_url}/dev/token?sub=ann") as resp:
            assert resp.status == 404

    run_edge(tmp_path / "off", disabled)


def test_same_user_reconnecting_over_a_half_open_socket_takes_over(tmp_path: Path) -> None:
    """The old socket is superseded: it must not tell the entity the connection left."""
    async def scenario(edge: Edge) -> None:
        ann = await edge.client("ann")
        again = await edge.client("ann", cid=ann.cid)
        await eventually(lambda: ann.terminated is not None, what="the old socket's TERMINATE")
        await asyncio.sleep(0.05)
        assert edge.entity().is_live(ann.cid)
        assert (await again.request({"type": "set", "value": 2})).ok
        await again.close()
        await ann.close()

    started = time.monotonic()
    run_edge(tmp_path, scenario)
    assert time.monotonic() - started < 10
