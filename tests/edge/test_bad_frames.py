"""Bad input after the upgrade: each bad frame closes the socket with its documented code,
the entity's state is unchanged (only the connection's drop is recorded, as for any
closed socket), and the edge keeps serving other clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import pytest

from edge import protocol
from edge.client import Client
from tests.edge.harness import ROOM, Edge, eventually, new_cid, run_edge, token

CONNECTION_EVENTS = {"ConnectionDropped", "TimerStarted"}


async def _baseline(edge: Edge) -> tuple[Client, Client, int]:
    """Two clients; a value of 7 stored; returns them and the journal length."""
    ann = await edge.client("ann")
    bob = await edge.client("bob")
    assert (await ann.request({"type": "set", "value": 7})).ok
    await bob.next_push()  # the coalesced state update
    await ann.next_push()
    return ann, bob, len(edge.event_types())


async def _assert_closed_and_unchanged(edge: Edge, bad: Client, code: int, before: int, other: Client) -> None:
    await eventually(lambda: bad.close_code is not None, what="the bad client's close")
    assert bad.close_code == code
    await eventually(lambda: not edge.entity().is_live(bad.cid), what="Terminated at the entity")
    assert edge.entity().value == 7
    assert set(edge.event_types()[before:]) <= CONNECTION_EVENTS
    reply = await other.request({"type": "get"})
    assert reply.ok and reply.payload == 7  # the edge and the entity keep serving


@pytest.mark.parametrize("frame, code", [
    (b"\xc1\xc1 not msgpack", protocol.POLICY),
    (msgpack.packb({"kind": 1}), protocol.POLICY),           # not an array
    (msgpack.packb([99, "x"]), protocol.POLICY),             # unknown frame kind
    (msgpack.packb(["1", "x", b""]), protocol.POLICY),       # kind is not an integer
])
def test_malformed_frames_close_1008(tmp_path: Path, frame: bytes, code: int) -> None:
    async def scenario(edge: Edge) -> None:
        ann, bob, before = await _baseline(edge)
        await ann.send_raw(frame)
        await _assert_closed_and_unchanged(edge, ann, code, before, bob)
        assert edge.metric("xplatform_edge_frames_in_total", {"kind": "bad"}) == 1
        await bob.close()

    run_edge(tmp_path, scenario)


def test_text_frame_closes_1003(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        ann, bob, before = await _baseline(edge)
        await ann.send_raw('[1, "m1", {"type": "set", "value": 99}]')
        await _assert_closed_and_unchanged(edge, ann, protocol.UNSUPPORTED_DATA, before, bob)
        await bob.close()

    run_edge(tmp_path, scenario)


def test_frame_over_the_size_limit_closes_1009(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        ann, bob, before = await _baseline(edge)
        big = msgpack.packb({"type": "set", "value": 99, "pad": "x" * 5000})
        await ann.send_raw(protocol.pack([protocol.MSG, "m-big", big]))
        await _assert_closed_and_unchanged(edge, ann, protocol.TOO_BIG, before, bob)
        assert edge.metric("xplatform_edge_closes_total", {"reason": "too_big"}) == 1
        await bob.close()

    run_edge(tmp_path, scenario, max_frame_bytes=4096)


def test_flood_over_the_rate_limit_closes_1008(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        ann, bob, before = await _baseline(edge)
        ping = protocol.pack([protocol.PING, 0])
        for _ in range(200):
            await ann.send_raw(ping)
        await _assert_closed_and_unchanged(edge, ann, protocol.POLICY, before, bob)
        assert ("rate_limited", "too many frames") in ann.errors
        assert edge.metric("xplatform_edge_closes_total", {"reason": "flood"}) == 1
        await bob.close()

    run_edge(tmp_path, scenario, rate_per_s=20.0, rate_burst=40.0)


def test_messages_within_the_rate_limit_are_served(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        ann = await edge.client("ann")
        replies = await asyncio.gather(*(ann.request({"type": "set", "value": i}) for i in range(30)))
        assert all(r.ok for r in replies) and ann.close_code is None
        await ann.close()

    run_edge(tmp_path, scenario, rate_per_s=20.0, rate_burst=40.0)


def test_bad_msg_fields_get_an_error_frame_and_an_undecodable_payload_an_error_reply(tmp_path: Path) -> None:
    """The edge never parses the payload: the entity refuses it (bad_payload), nothing changes."""
    async def scenario(edge: Edge) -> None:
        ann, bob, before = await _baseline(edge)
        await ann.send_raw(protocol.pack([protocol.MSG, "x" * 65, b"\x80"]))   # message ID too long
        await ann.send_raw(protocol.pack([protocol.MSG, "m1", "not bin"]))     # payload not bin
        await eventually(lambda: len(ann.errors) == 2, what="two ERROR frames")
        reply = await ann.request(b"\xc1 not msgpack")
        assert not reply.ok and reply.code == "bad_payload"
        reply = await ann.request({"type": "no-such-type"})
        assert not reply.ok and reply.code == "unknown_message_type"
        assert ann.close_code is None and edge.entity().value == 7 and len(edge.event_types()) == before
        await ann.close()
        await bob.close()

    run_edge(tmp_path, scenario)


def test_connection_id_of_a_live_connection_cannot_be_taken_by_another_user(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        ann, bob, before = await _baseline(edge)
        status, body = await edge.upgrade(f"/ws/Room/r1?cid={ann.cid}",
                                          {"Authorization": f"Bearer {token('mallory')}"})
        assert status == 409 and body["error"] == "connection_id_in_use"
        assert edge.entity().connection_claims(ann.cid)["sub"] == "ann"
        assert (await ann.request({"type": "say", "text": "still me"})).ok
        assert await ann.next_push() == {"text": "still me"}  # ann's socket still holds the connection
        assert len(edge.event_types()) == before
        await ann.close()
        await bob.close()

    run_edge(tmp_path, scenario)


def test_connection_id_in_grace_period_cannot_be_taken_by_another_user(tmp_path: Path) -> None:
    """ann drops; mallory presents ann's connection ID: the entity refuses (TERMINATE, 4403),
    ann's identity is untouched, and ann resumes with her connection ID."""
    async def scenario(edge: Edge) -> None:
        ann, bob, _ = await _baseline(edge)
        cid = ann.cid
        ann.drop_for_test()
        await eventually(lambda: not edge.entity().is_live(cid), what="ann's drop at the entity")
        before = len(edge.event_types())
        from edge.errors import ClientError

        with pytest.raises(ClientError) as refused:
            await edge.client("mallory", cid=cid)
        assert refused.value.status == protocol.REFUSED
        assert edge.entity().connection_claims(cid)["sub"] == "ann" and not edge.entity().is_live(cid)
        assert len(edge.event_types()) == before
        again = await edge.client("ann", cid=cid)
        assert again.welcome["reconnected"] is True and edge.entity().is_live(cid)
        await again.close()
        await bob.close()

    run_edge(tmp_path, scenario)


def test_entity_refusal_terminates_with_4403(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        from edge.errors import ClientError

        with pytest.raises(ClientError) as refused:
            await edge.client("eve", role="banned")
        assert refused.value.status == protocol.REFUSED and "banned" in refused.value.reason
        assert edge.event_types(ROOM) == []

    run_edge(tmp_path, scenario)


def test_new_cid_helper_is_a_uuid() -> None:
    assert protocol.valid_connection_id(new_cid()) and not protocol.valid_connection_id("x" * 36)
