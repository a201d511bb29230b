"""The stored version a reply carries across the cluster transport (the read-your-writes
position token, infrastructure/transport/envelopes.py): asked for with ``want_reply`` 2, sent
only when asked, and both directions of a rolling upgrade keep working (an older peer's
frames parse, and nothing a newer peer sends unasked breaks an older parser)."""

from __future__ import annotations

import msgpack

from domain.effects import Reply
from domain.messages import ClientMessage
from domain.refs import EntityRef
from infrastructure.transport.envelopes import Deliver, ReplyEnvelope, frame, parse
from infrastructure.transport.port import StoredReply, version_of, with_version

LOT = EntityRef("Lot", "vase")


def _wire(envelope: Deliver | ReplyEnvelope) -> list[object]:
    return msgpack.unpackb(frame(envelope)[4:], raw=False)


def old_parse_reply(body: list[object]) -> tuple[object, ...]:
    """How a peer of the previous version reads a REPLY: exactly eight elements."""
    _, corr, epoch, ok, payload, code, reason, retryable = body
    return corr, epoch, ok


def test_a_deliver_asks_for_the_version_with_want_reply_2_which_older_nodes_read_as_true() -> None:
    message = ClientMessage("m1", 0.0, "c1", b"\x80")
    wire = _wire(Deliver(7, LOT, message, True, True))
    assert wire[5] == 2 and bool(wire[5]) is True  # an older node: bool(want_reply), answers without a version
    parsed = parse(frame(Deliver(7, LOT, message, True, True))[4:])
    assert isinstance(parsed, Deliver) and parsed.want_reply and parsed.want_version
    plain = parse(frame(Deliver(7, LOT, message, True))[4:])  # an older edge's frame
    assert isinstance(plain, Deliver) and plain.want_reply and not plain.want_version


def test_a_reply_carries_its_version_only_when_there_is_one() -> None:
    with_it = _wire(ReplyEnvelope(7, 3, Reply("", True, {"a": 1}), None, 12))
    assert len(with_it) == 10 and with_it[8] is None and with_it[9] == 12  # hops (none measured), version
    parsed = parse(frame(ReplyEnvelope(7, 3, Reply("", True, {"a": 1}), None, 12))[4:])
    assert isinstance(parsed, ReplyEnvelope) and parsed.version == 12
    without = _wire(ReplyEnvelope(7, 3, Reply("", True, None)))
    assert len(without) == 8 and old_parse_reply(without) == (7, 3, True)  # what an older edge can read
    older = parse(msgpack.packb([3, 7, 3, True, None, "", "", False]))  # an older node's reply
    assert isinstance(older, ReplyEnvelope) and older.version == 0


def test_stored_replies_are_replies_with_a_version() -> None:
    reply = Reply("m1", True, {"status": "ok"})
    assert with_version(reply, 0) is reply and version_of(reply) == 0
    stored = with_version(reply, 5)
    assert isinstance(stored, StoredReply) and stored.version == 5 and version_of(stored) == 5
    assert (stored.message_id, stored.ok, stored.payload) == (reply.message_id, reply.ok, reply.payload)
    assert with_version(reply, 6) == stored  # the same answer (a duplicate's), whatever the stream's version now
