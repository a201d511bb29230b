"""Memory and fairness at the public edge, over real sockets: control-frame floods, slow
consumers decided by bytes not drained (never by one loop turn's frames), per-user and
per-address caps, the socket cap and the handshake deadline (``edge/PROTOCOL.md`` "Limits")."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import msgpack
import pytest

from edge import protocol
from edge.config import EdgeConfig, open_file_limit
from edge.connection import WsConnection
from edge.errors import EdgeConfigurationError
from edge.limits import ClientLimits
from edge.sockets import AcceptErrorLog
from tests.edge.harness import ROOM, Edge, RawSocket, eventually, gated_journal, new_cid, run_edge, token

PING, PONG_LIMIT = 0x9, 125  # websocket PING opcode; control payloads are at most 125 bytes


def _conn_of(edge: Edge, sub: str) -> WsConnection | None:
    return next((c for c in edge.public.registry if isinstance(c, WsConnection) and c.claims["sub"] == sub), None)


async def _upgrade_as(edge: Edge, sub: str) -> tuple[int, dict]:
    return await edge.upgrade(f"/ws/Room/r1?cid={new_cid()}", {"Authorization": f"Bearer {token(sub)}"})


# ---------------------------------------------------------------- (a) websocket PING floods
def test_ping_flood_from_a_client_that_never_reads_is_closed_1008(tmp_path: Path) -> None:
    """Control frames cost tokens like data frames: a PING flood is a flood."""
    async def scenario(edge: Edge) -> None:
        bob = await edge.client("bob")
        raw = await RawSocket.upgraded(edge.base_url, "mallory", rcvbuf=4096)
        await eventually(lambda: _conn_of(edge, "mallory") is not None and _conn_of(edge, "mallory").accepted,
                         what="mallory's connection")
        ping = RawSocket.frame(PING, b"p" * PONG_LIMIT)
        await raw.send(ping * 500)  # five times the burst, never reading
        await eventually(lambda: _conn_of(edge, "mallory") is None, timeout=10, what="the flood closed")
        assert edge.metric("xplatform_edge_closes_total", {"reason": "flood"}) == 1
        assert edge.metric("xplatform_edge_rate_limited_total", {"scope": "connection"}) == 1
        assert (await bob.request({"type": "set", "value": 1})).ok  # the edge serves the others
        raw.close()
        await bob.close()

    run_edge(tmp_path, scenario)


def test_ping_flood_within_the_rate_limit_keeps_one_pong_pending(tmp_path: Path) -> None:
    """Limits raised so the flood is allowed: the edge still holds at most one PONG for a
    client that never reads (the newest PING's), and its socket buffer stays at the
    transport's high-water mark, whatever the number of PINGs (~8 MB of PONGs here)."""
    async def scenario(edge: Edge) -> None:
        raw = await RawSocket.upgraded(edge.base_url, "mallory", rcvbuf=4096)
        await eventually(lambda: _conn_of(edge, "mallory") is not None and _conn_of(edge, "mallory").accepted,
                         what="mallory's connection")
        conn = _conn_of(edge, "mallory")
        assert conn is not None
        pings = RawSocket.frame(PING, b"p" * PONG_LIMIT) * 1000
        for _ in range(60):
            await raw.send(pings)
        # a data frame after the PINGs: once it is applied, every PING before it was read
        await raw.send(RawSocket.frame(0x2, protocol.pack([protocol.MSG, "after", protocol.pack(
            {"type": "set", "value": 42})])))
        await eventually(lambda: edge.entity().value == 42, timeout=15, what="the frame after the flood")
        assert conn.queued_bytes <= PONG_LIMIT
        assert conn.socket_buffer_bytes <= 64 * 1024 + 2 * (PONG_LIMIT + 2)  # asyncio's high-water mark + a frame
        assert edge.metric("xplatform_edge_send_queue_bytes") <= PONG_LIMIT
        assert _conn_of(edge, "mallory") is conn  # kept (bounded), not closed
        raw.close()

    run_edge(tmp_path, scenario, rate_per_s=1e6, rate_burst=1e6, user_rate_per_s=0, shed_after_ms=0)


# ---------------------------------------------------------------- (b) slow consumers, fairness
def test_readers_are_never_closed_while_one_user_floods_the_lot_from_eight_connections(tmp_path: Path) -> None:
    """One user, 8 connections, many broadcasts at once (group commits publish hundreds of
    pushes in one loop turn): every reader keeps its connection and gets every push."""
    async def scenario(edge: Edge) -> None:
        readers = [await edge.client(f"reader-{i}") for i in range(4)]
        spammers = [await edge.client("spammer") for _ in range(8)]
        requests = [s.request({"type": "spam", "n": 8, "size": 10}) for s in spammers for _ in range(12)]
        replies = await asyncio.gather(*requests)
        assert all(r.ok for r in replies)  # the sender's own replies all arrived
        for reader in readers:
            for _ in range(8 * 12 * 8):
                await reader.next_push(timeout=10)
        assert all(r.close_code is None for r in readers + spammers)
        assert edge.metric("xplatform_edge_closes_total", {"reason": "slow_consumer"}) == 0
        assert edge.metric("xplatform_edge_pushes_dropped_total") == 0
        for c in readers + spammers:
            await c.close()

    run_edge(tmp_path, scenario)


def test_a_burst_of_refusals_never_closes_a_client_that_reads(tmp_path: Path) -> None:
    """600 messages refused 'overloaded' in one burst (aiohttp hands buffered frames over
    without yielding, and refusals do not count against max_in_flight): all 600 answered."""
    async def scenario(edge: Edge) -> None:
        client = await edge.client("ann", retries=0)
        with gated_journal(edge):  # the store stops answering: the Room falls behind, new messages are shed
            stuck = asyncio.create_task(client.request({"type": "set", "value": -1}))
            await eventually(lambda: edge.public.load.behind(ROOM), what="the entity behind")
            replies = await asyncio.gather(*(client.request({"type": "set", "value": i}) for i in range(600)))
        assert [r.code for r in replies] == ["overloaded"] * 600
        assert (await stuck).ok and client.close_code is None
        assert edge.metric("xplatform_edge_closes_total", {"reason": "slow_consumer"}) == 0
        await client.close()

    run_edge(tmp_path, scenario, shed_after_ms=50, rate_per_s=1e6, rate_burst=1e6, user_rate_per_s=0)


def test_a_client_that_stops_reading_loses_pushes_never_its_replies(tmp_path: Path) -> None:
    """It asks for 60 x 8 broadcasts of 50 KB (24 MB) and reads nothing meanwhile: over the
    queue bound the pushes are dropped (counted) and the edge stops reading its frames;
    when it reads again, every one of its 60 replies arrives, in order."""
    async def scenario(edge: Edge) -> None:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{edge.base_url}/ws/Room/r1?cid={new_cid()}", protocols=("xplatform.v1",),
                                          headers={"Authorization": f"Bearer {token('slow')}"}, max_msg_size=0)
            assert (await ws.receive()).data[1] == protocol.WELCOME
            for i in range(60):
                await ws.send_bytes(protocol.pack([protocol.MSG, f"m{i}", protocol.pack(
                    {"type": "spam", "n": 8, "size": 50_000})]))
            await eventually(lambda: edge.metric("xplatform_edge_pushes_dropped_total") > 0, timeout=10,
                             what="pushes dropped")
            replies, pushes = [], 0
            while len(replies) < 60:
                frame = msgpack.unpackb((await ws.receive(timeout=10)).data)
                if frame[0] == protocol.REPLY:
                    replies.append(frame[1])
                elif frame[0] == protocol.PUSH:
                    pushes += 1
            assert replies == [f"m{i}" for i in range(60)]
            assert pushes < 480 and edge.metric("xplatform_edge_closes_total", {"reason": "slow_consumer"}) == 0
            await ws.close()

    run_edge(tmp_path, scenario, slow_consumer_s=30.0, rate_per_s=1e6, rate_burst=1e6, shed_after_ms=0)


def test_a_raw_client_that_stops_reading_loses_pushes_never_its_replies(tmp_path: Path) -> None:
    """The same over a hand-made websocket that really stops reading (a small receive buffer,
    nothing read), so replies meet a full queue: it asks for broadcasts of 1 MB until its
    socket takes no more; then, while the store holds a write of its, for 10 x 8 broadcasts of
    50 KB, whose replies wait for that write and so come after pushes have filled its queue.
    Reading again and sending a last message, it gets every reply, in order, before the last
    one's, while pushes were dropped."""
    async def scenario(edge: Edge) -> None:
        slow = await RawSocket.upgraded(edge.base_url, "slow", rcvbuf=4096)
        conn = await eventually(lambda: _conn_of(edge, "slow"), what="the connection")
        asked: list[str] = []

        async def ask(frames: bytes, *ids: str) -> None:
            asked.extend(ids)
            await slow.send(frames)
            await eventually(lambda: edge.metric("xplatform_edge_frames_in_total", {"kind": "msg"}) == len(asked),
                             what="read by the edge")

        while not conn._backed_up():  # 1 MB of broadcasts at a time until the socket takes no more
            assert len(asked) < 64, "the socket never backed up"
            await ask(_spam(f"fill{len(asked)}", 20), f"fill{len(asked)}")
            await eventually(lambda: conn._asking == 0 and (not conn._queued_bytes or conn._backed_up()),
                             what="answered and written")
        assert edge.metric("xplatform_edge_pushes_dropped_total") == 0
        with gated_journal(edge) as gate:
            await ask(RawSocket.frame(0x2, protocol.pack([protocol.MSG, "set", protocol.pack({"type": "set", "value": 1})])),
                      "set")
            ids = [f"m{i}" for i in range(10)]
            await ask(b"".join(_spam(mid, 8) for mid in ids), *ids)
            gate.set()
            await eventually(lambda: conn._asking == 0, what="every message answered")
        assert edge.metric("xplatform_edge_pushes_dropped_total") > 0
        reading = asyncio.create_task(_replies_until(slow, "last"))  # reads again: the queue drains
        await slow.send(RawSocket.frame(0x2, protocol.pack([protocol.MSG, "last", protocol.pack({"type": "get"})])))
        replies, pushes = await reading
        assert replies == [*asked, "last"]
        assert pushes < 20 * (len(asked) - 11) + 8 * 10
        assert edge.metric("xplatform_edge_closes_total", {"reason": "slow_consumer"}) == 0
        slow.close()

    run_edge(tmp_path, scenario, slow_consumer_s=30.0, send_queue_bytes=64 * 1024, shed_after_ms=0)


def _spam(message_id: str, n: int) -> bytes:
    """A MSG frame asking the room to broadcast ``n`` pushes of 50 KB."""
    return RawSocket.frame(0x2, protocol.pack([protocol.MSG, message_id, protocol.pack(
        {"type": "spam", "n": n, "size": 50_000})]))


async def _replies_until(raw: RawSocket, last: str) -> tuple[list[str], int]:
    """Message IDs of the REPLYs read up to and including ``last``'s, and how many PUSHes came."""
    replies: list[str] = []
    pushes = 0
    while not replies or replies[-1] != last:
        opcode, payload = await raw.next_frame()
        if opcode != 0x2:
            continue
        frame = msgpack.unpackb(payload)
        if frame[0] == protocol.REPLY:
            replies.append(frame[1])
        elif frame[0] == protocol.PUSH:
            pushes += 1
    return replies, pushes


# ---------------------------------------------------------------- (c) per-user and per-address caps
def test_connections_per_user_are_capped_before_the_upgrade(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        first = await edge.client("ann")
        second = await edge.client("ann")
        status, body = await _upgrade_as(edge, "ann")
        assert status == 429 and body["error"] == "too_many_connections"
        assert edge.metric("xplatform_edge_limit_refusals_total", {"limit": "user"}) == 1
        assert edge.metric("xplatform_edge_upgrades_refused_total", {"status": "429"}) == 1
        bob = await edge.client("bob")  # other users are not affected
        await first.close()
        await eventually(lambda: sum(1 for c in edge.public.registry if c.claims["sub"] == "ann") == 1,
                         what="ann's first connection gone")
        third = await edge.client("ann")  # a slot is free again
        for c in (second, third, bob):
            await c.close()

    run_edge(tmp_path, scenario, max_connections_per_user=2)


@pytest.mark.parametrize("limit, overrides, status, error", [
    ("ip", {"max_connections_per_ip": 2}, 429, "too_many_connections"),
    ("sockets", {"max_sockets": 2}, 503, "edge_full"),  # every open socket counts: ann's, bob's, cat's
])
def test_connections_per_address_and_sockets_in_all_are_capped_before_the_upgrade(
        tmp_path: Path, limit: str, overrides: dict, status: int, error: str) -> None:
    async def scenario(edge: Edge) -> None:
        ann = await edge.client("ann")
        bob = await edge.client("bob")
        refused = await _upgrade_as(edge, "cat")
        assert refused[0] == status and refused[1]["error"] == error
        assert edge.metric("xplatform_edge_limit_refusals_total", {"limit": limit}) == 1
        assert edge.metric("xplatform_edge_upgrades_refused_total", {"status": str(status)}) == 1
        await bob.close()
        await eventually(lambda: len(edge.public.registry) == 1 and edge.public.sockets.open <= 1,
                         what="bob's connection and socket gone")
        cat = await edge.client("cat")  # room again
        await cat.close()
        await ann.close()

    run_edge(tmp_path, scenario, **overrides)


@pytest.mark.parametrize("scope, overrides, reason", [
    ("user", {"user_rate_per_s": 1.0, "user_rate_burst": 10.0}, "too many frames from this user"),
    ("ip", {"user_rate_per_s": 0, "ip_rate_per_s": 1.0, "ip_rate_burst": 10.0}, "too many frames from this address"),
])
def test_frames_are_budgeted_per_user_and_per_address_over_all_connections(
        tmp_path: Path, scope: str, overrides: dict, reason: str) -> None:
    """Two connections, each far under the per-connection limit, together over the shared
    budget: the connection that sends the frame over it is closed 1008."""
    async def scenario(edge: Edge) -> None:
        first = await edge.client("ann" if scope == "user" else "bob")
        second = await edge.client("ann" if scope == "user" else "cat")
        for _ in range(5):  # one frame each (PING would add the client's LATENCY report)
            assert (await first.request({"type": "get"})).ok
        get = protocol.pack([protocol.MSG, "again", protocol.pack({"type": "get"})])
        for _ in range(10):
            await second.send_raw(get)
        await eventually(lambda: second.close_code is not None, what="the close over the shared budget")
        assert second.close_code == protocol.POLICY and ("rate_limited", reason) in second.errors
        assert first.close_code is None
        assert edge.metric("xplatform_edge_rate_limited_total", {"scope": scope}) == 1
        await first.close()
        await second.close()

    run_edge(tmp_path, scenario, **overrides)


def test_reconnecting_does_not_refill_a_users_frame_budget(tmp_path: Path) -> None:
    """A user who spent most of his budget, closed his last connection and came back gets
    what was left, not a fresh budget (the refill is 1 frame per 1,000 s here)."""
    async def scenario(edge: Edge) -> None:
        first = await edge.client("ann")
        for _ in range(7):
            assert (await first.request({"type": "get"})).ok
        await first.close()
        await eventually(lambda: _conn_of(edge, "ann") is None, what="the first connection gone")
        second = await edge.client("ann")
        get = protocol.pack([protocol.MSG, "again", protocol.pack({"type": "get"})])
        for _ in range(5):
            await second.send_raw(get)
        await eventually(lambda: second.close_code is not None, what="the close over the budget left")
        assert second.close_code == protocol.POLICY and ("rate_limited", "too many frames from this user") in second.errors
        assert edge.metric("xplatform_edge_rate_limited_total", {"scope": "user"}) == 1
        await second.close()

    run_edge(tmp_path, scenario, user_rate_per_s=0.001, user_rate_burst=10.0)


def test_a_budget_is_kept_for_its_refill_period_after_the_last_connection_then_forgotten() -> None:
    """Bounded memory: an idle user's entry lives as long as his budget could still be short."""
    now = [0.0]
    limits = ClientLimits(max_per_user=0, max_per_address=0, user_rate_per_s=1.0, user_rate_burst=10.0,
                          address_rate_per_s=0, address_rate_burst=0, clock=lambda: now[0])
    lease = limits.admit("ann", "10.0.0.1")
    (_scope, bucket), = lease.buckets
    assert all(bucket.take() for _ in range(10)) and not bucket.take()
    limits.release(lease)
    now[0] = 4.0  # back within the refill period (10 s): the same, still short, budget
    again = limits.admit("ann", "10.0.0.1")
    assert again.buckets[0][1] is bucket and sum(bucket.take() for _ in range(10)) == 4
    limits.release(again)
    now[0] = 13.9
    limits.release(limits.admit("bob", "10.0.0.2"))
    assert set(limits.users.holders) == {"ann", "bob"}
    now[0] = 14.0  # ann idle for a whole refill period: full by now, forgotten
    limits.release(limits.admit("cat", "10.0.0.3"))
    assert set(limits.users.holders) == {"bob", "cat"}
    now[0] = 100.0
    limits.release(limits.admit("dan", "10.0.0.4"))
    assert set(limits.users.holders) == {"dan"} and not limits.addresses.holders
    fresh = limits.admit("ann", "10.0.0.1")
    assert fresh.buckets[0][1] is not bucket and sum(fresh.buckets[0][1].take() for _ in range(11)) == 10


# ---------------------------------------------------------------- (d) sockets: deadline, cap, accept errors
def test_half_open_sockets_are_closed_after_the_handshake_deadline(tmp_path: Path) -> None:
    """A socket that sends nothing and one that sends half a request are closed by the edge;
    an upgraded websocket is not subject to the deadline."""
    async def scenario(edge: Edge) -> None:
        ann = await edge.client("ann")
        silent = await RawSocket.open(edge.base_url)
        partial = await RawSocket.open(edge.base_url)
        await partial.send(b"GET /ws/Room/r1?cid=" + new_cid().encode() + b" HTTP/1.1\r\nHost: edge\r\n")
        kept_alive = await RawSocket.open(edge.base_url)  # one answered request, then idle
        await kept_alive.send(b"GET /metrics HTTP/1.1\r\nHost: edge\r\n\r\n")
        assert (await kept_alive.reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(silent.closed_by_server(), 15)
        assert await asyncio.wait_for(partial.closed_by_server(), 15)
        assert await asyncio.wait_for(kept_alive.closed_by_server(), 15)
        assert edge.metric("xplatform_edge_handshake_timeouts_total") == 3
        assert (await ann.request({"type": "set", "value": 3})).ok  # the websocket was kept
        assert ann.close_code is None
        await eventually(lambda: edge.public.sockets.open == 1, what="only ann's socket left")
        await ann.close()

    run_edge(tmp_path, scenario, handshake_timeout_s=0.2)


def test_a_request_that_arrived_may_take_longer_than_the_deadline(tmp_path: Path) -> None:
    """The deadline is for sending the request, not for the edge's answer: an upgrade held
    up in the token check (here: an ask that waits) is not cut off."""
    async def scenario(edge: Edge) -> None:
        verify = edge.public.verifier.verify

        async def slow_verify(raw: str | None) -> dict:
            await asyncio.sleep(0.6)  # three deadlines
            return await verify(raw)

        edge.public.verifier.verify = slow_verify  # type: ignore[method-assign]
        ann = await edge.client("ann")
        assert (await ann.request({"type": "set", "value": 1})).ok
        assert edge.metric("xplatform_edge_handshake_timeouts_total") == 0
        await ann.close()

    run_edge(tmp_path, scenario, handshake_timeout_s=0.2)


def test_the_socket_cap_must_be_below_the_open_file_limit() -> None:
    nofile = open_file_limit()
    assert nofile is not None
    with pytest.raises(EdgeConfigurationError, match="open-file limit"):
        EdgeConfig(max_sockets=nofile)
    assert 0 < EdgeConfig(dev_tokens=True).socket_cap < nofile and EdgeConfig(dev_tokens=True, max_sockets=100).socket_cap == 100


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_accept_errors_are_logged_at_most_once_per_interval_with_their_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    logger = logging.getLogger("tests.accept_errors")
    passed_on: list[dict] = []
    handler = AcceptErrorLog(10.0, logger=logger, clock=clock, previous=lambda loop, ctx: passed_on.append(ctx))
    emfile = {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")}
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR, logger="tests.accept_errors"):
            for i in range(1000):
                clock.now = i * 0.005  # 1,000 failures in 5 s
                handler(loop, emfile)
            clock.now = 10.0
            handler(loop, emfile)
            handler(loop, {"message": "something else", "exception": ValueError("x")})
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "tests.accept_errors"]
    assert len(lines) == 2, lines
    assert "failed 1 time(s)" in lines[0] and "failed 1000 time(s)" in lines[1] and "nofile" in lines[1]
    assert handler.total == 1001
    assert [c["message"] for c in passed_on] == ["something else"]  # other errors go where they went before


def test_the_edge_loop_rate_limits_accept_errors(tmp_path: Path) -> None:
    """The serving loop carries the handler (asyncio reports a failed accept() through it)."""
    async def scenario(edge: Edge) -> None:
        handler = asyncio.get_running_loop().get_exception_handler()
        assert isinstance(handler, AcceptErrorLog)
        handler(asyncio.get_running_loop(), {"message": "socket.accept() out of system resource",
                                             "exception": OSError(24, "Too many open files")})
        assert edge.metric("xplatform_edge_accept_errors_total") == 1

    run_edge(tmp_path, scenario)




def test_an_edge_raises_its_soft_open_file_limit_to_the_hard_one() -> None:
    """So the socket cap (80% of the limit) is derived from what the operator set (the hard
    limit), not from the soft default of 1,024."""
    import subprocess
    import sys

    script = ("import resource\n"
              "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
              "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
              "from edge.sockets import raise_open_file_limit\n"
              "from edge.config import EdgeConfig\n"
              "raised = raise_open_file_limit()\n"
              "print(raised == resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard,\n"
              "      EdgeConfig(dev_tokens=True).socket_cap == int(hard * 0.8))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"], out
