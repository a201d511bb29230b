"""Wire envelopes between edges and state nodes (transport protocol v2).

Frames are length-prefixed (4 bytes, big endian) msgpack arrays whose first element is
the envelope kind. The client payload inside a ``Deliver`` of a ``ClientMessage`` stays
raw bytes end to end: neither the edge nor the transport parses it.

Sender → receiver:
- ``HELLO``    [1, node_id, role, lanes, nonce, proof]   either side, first frame of a connection
- ``AUTH``     [6, proof]                           connecting side's second frame (handshake:
                                                      infrastructure/transport/auth.py)
- ``DELIVER``  [2, corr, category, entity_id, message, want_reply]   edge/node → owning node
- ``REPLY``    [3, corr, epoch, ok, payload, code, reason, retryable(, hops(, version))] node → asker
- ``OUTBOUND`` [4, category, entity_id, effect]     node → each edge interested in the entity
- ``INTEREST`` [5, add[[category, id]...], remove[...]]  edge → node: entities it holds
                                                      connections for (outbound goes only there)

``message`` is [kind, message_id, timestamp, ...fields] with kinds 1 Connect, 2 Terminated,
3 ClientMessage, 4 EntityMessage. ``effect`` is [1 Send, target, payload, coalesce_key] or
[2 Terminate, connection_id, reason, reconnect]; ``target`` is [1, connection_id] |
[2] (all) | [3, match].

Compatible additions (no new protocol version: both sides of a rolling upgrade understand
each other): ``want_reply`` 2 (instead of true) marks an asker of this version, which wants
the reply's ``hops`` (index 8) and stored ``version`` (index 9: the read-your-writes position,
:class:`~infrastructure.transport.port.StoredReply`); only then does the node append them to
the ``REPLY``, so a node never sends more than 8 elements to an asker that did not ask (older
parsers take exactly 8), and an older node answers a 2 like true (``bool(2)``), with 8.
Parsers ignore elements beyond those they know.

A malformed envelope raises :class:`EnvelopeError` - and nothing
else, whatever the bytes (a property-based test feeds it arbitrary input).

Optional trailing fields: a field added to an envelope goes at its end and may be left
out, so an envelope of an earlier version still parses; a REPLY's fields after the last
one this version knows are ignored (a later version's additions reach an edge of this one
harmlessly). REPLY's ``hops``: [queue, handler, append], the seconds the message spent in
each hop inside the node (infrastructure/metrics.py NODE_HOPS), each measured on the
node's own clock; absent when no entity processed the message (a refusal). The edge
subtracts their sum from its own round trip to get the transport's share - durations
travel, never timestamps, because two processes' clocks are never subtracted from each
other. (The edge's timestamp travels in every message, ``timestamp`` above, for logs and
entities - not for latency arithmetic.)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from domain.effects import Reply, Send, Target, Terminate, ToAllConnections, ToClaims, ToConnection
from domain.messages import ClientMessage, Connect, EntityMessage, Inbound, Terminated
from domain.refs import EntityRef
from infrastructure.errors import TransportError

HELLO, DELIVER, REPLY, OUTBOUND, INTEREST, AUTH = 1, 2, 3, 4, 5, 6
WANT_REPLY_AND_VERSION = 2
"""``want_reply`` asking for the reply's stored version too (see the module docstring)."""
MAX_HANDSHAKE_BYTES = 64
"""Longest nonce or proof accepted (ours are 32 bytes): nothing big is kept from an unauthenticated peer."""
_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_HANDSHAKE_FRAME_BYTES = 4096
"""Largest HELLO or AUTH frame read: a node id, a role, the lane names and two 32-byte values
take a few hundred bytes; an unauthenticated peer never gets MAX_FRAME_BYTES buffered."""
MAX_HOP_S = 86_400.0
"""Longest hop duration a REPLY may claim: anything else is not a duration (malformed)."""


class EnvelopeError(TransportError):
    """Raised when a frame is not a well-formed envelope of this protocol version."""


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame of each side. ``nonce``: fresh random bytes of the sender; ``proof``: the
    server's HMAC proof (empty from the connecting side, which proves itself in ``Auth``)."""

    node_id: str
    role: str
    lanes: tuple[str, ...] = ()
    nonce: bytes = b""
    proof: bytes = b""


@dataclass(frozen=True, slots=True)
class Auth:
    """The connecting side's proof, sent after it verified the server's."""

    proof: bytes


@dataclass(frozen=True, slots=True)
class Deliver:
    corr: int
    to: EntityRef
    message: Inbound
    want_reply: bool
    want_version: bool = False  # the asker wants the reply's hops and stored version (REPLY's 9th, 10th)


@dataclass(frozen=True, slots=True)
class ReplyEnvelope:
    corr: int
    epoch: int
    reply: Reply
    hops: tuple[float, float, float] | None = None
    """The node's (queue, handler, append) seconds; optional (see the module docstring)."""
    version: int = 0  # the stored version (0: none, or not asked for); sent only when non-zero


@dataclass(frozen=True, slots=True)
class Outbound:
    source: EntityRef
    effect: Send | Terminate


@dataclass(frozen=True, slots=True)
class Interest:
    add: tuple[EntityRef, ...] = ()
    remove: tuple[EntityRef, ...] = ()


Envelope = Hello | Deliver | ReplyEnvelope | Outbound | Interest | Auth


def frame(envelope: Envelope) -> bytes:
    """Length-prefixed bytes of ``envelope``."""
    body = msgpack.packb(_to_list(envelope), use_bin_type=True)
    return _HEADER.pack(len(body)) + body


def parse(body: bytes) -> Envelope:
    """Envelope from a frame body (without the length prefix)."""
    try:
        data = msgpack.unpackb(body, raw=False)
        return _from_list(data)
    except EnvelopeError:
        raise
    except Exception as exc:  # msgpack and shape errors of many kinds
        raise EnvelopeError(f"malformed envelope: {type(exc).__name__}: {exc}") from None


def header_length(header: bytes, max_bytes: int = MAX_FRAME_BYTES) -> int:
    (length,) = _HEADER.unpack(header)
    if length > max_bytes:
        raise EnvelopeError(f"frame of {length} bytes exceeds {max_bytes}")
    return length


HEADER_BYTES = _HEADER.size


def _to_list(e: Envelope) -> list[Any]:
    if isinstance(e, Deliver):
        want = WANT_REPLY_AND_VERSION if e.want_reply and e.want_version else e.want_reply
        return [DELIVER, e.corr, e.to.category, e.to.entity_id, _message_to_list(e.message), want]
    if isinstance(e, ReplyEnvelope):
        r = e.reply
        fields = [REPLY, e.corr, e.epoch, r.ok, r.payload, r.code, r.reason, r.retryable]
        if e.hops is not None or e.version:
            fields.append(None if e.hops is None else list(e.hops))  # index 8: hops (None: not measured)
        if e.version:
            fields.append(e.version)  # index 9: only when the asker asked for it
        return fields
    if isinstance(e, Outbound):
        return [OUTBOUND, e.source.category, e.source.entity_id, _effect_to_list(e.effect)]
    if isinstance(e, Interest):
        return [INTEREST, [[r.category, r.entity_id] for r in e.add], [[r.category, r.entity_id] for r in e.remove]]
    if isinstance(e, Auth):
        return [AUTH, e.proof]
    return [HELLO, e.node_id, e.role, list(e.lanes), e.nonce, e.proof]


def _from_list(d: Any) -> Envelope:
    if not isinstance(d, list) or not d:
        raise EnvelopeError("envelope must be a non-empty array")
    kind = d[0]
    if kind == DELIVER:
        _, corr, category, entity_id, message, want_reply = d[:6]
        want_version = want_reply == WANT_REPLY_AND_VERSION and not isinstance(want_reply, bool)
        return Deliver(_wire_int(corr), EntityRef(category, entity_id), _message_from_list(message), bool(want_reply),
                       want_version)
    if kind == REPLY:
        _, corr, epoch, ok, payload, code, reason, retryable = d[:8]
        hops = _hops(d[8]) if len(d) > 8 and d[8] is not None else None
        version = d[9] if len(d) > 9 else 0
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise EnvelopeError("a reply's stored version must be a non-negative integer")
        return ReplyEnvelope(_wire_int(corr), _wire_int(epoch), Reply("", bool(ok), payload, code, reason, bool(retryable)),
                             hops, version)
    if kind == OUTBOUND:
        _, category, entity_id, effect = d
        return Outbound(EntityRef(category, entity_id), _effect_from_list(effect))
    if kind == INTEREST:
        _, add, remove = d
        return Interest(tuple(EntityRef(c, i) for c, i in add), tuple(EntityRef(c, i) for c, i in remove))
    if kind == HELLO:
        _, node_id, role, lanes, nonce, proof = d
        if not isinstance(node_id, str) or not node_id or not isinstance(role, str):
            raise EnvelopeError("hello without a node id or role")
        return Hello(node_id, role, tuple(map(str, lanes)), _short_bytes(nonce), _short_bytes(proof))
    if kind == AUTH:
        _, proof = d
        return Auth(_short_bytes(proof))
    raise EnvelopeError(f"unknown envelope kind {kind!r}")


def _wire_int(value: Any) -> int:
    """A correlation ID or epoch: an integer msgpack can carry (a float such as 1e19 would
    parse and then fail to encode again)."""
    number = int(value)
    if not -(2**63) <= number < 2**64:
        raise EnvelopeError(f"integer field out of range: {number}")
    return number


def _hops(value: Any) -> tuple[float, float, float]:
    """A REPLY's hop durations: three numbers of seconds, none negative or absurd."""
    if not isinstance(value, list) or len(value) != 3 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= MAX_HOP_S for v in value):
        raise EnvelopeError(f"reply hops must be [queue, handler, append] seconds in 0..{MAX_HOP_S:.0f}")
    return float(value[0]), float(value[1]), float(value[2])


def _short_bytes(value: Any) -> bytes:
    if not isinstance(value, bytes) or len(value) > MAX_HANDSHAKE_BYTES:
        raise EnvelopeError(f"nonce or proof must be at most {MAX_HANDSHAKE_BYTES} bytes")
    return value


def _message_to_list(m: Inbound) -> list[Any]:
    if isinstance(m, ClientMessage):
        return [3, m.message_id, m.timestamp, m.connection_id, m.payload]
    if isinstance(m, Connect):
        return [1, m.message_id, m.timestamp, m.connection_id, dict(m.claims)]
    if isinstance(m, Terminated):
        return [2, m.message_id, m.timestamp, m.connection_id, m.reason, m.session]
    if isinstance(m, EntityMessage):
        return [4, m.message_id, m.timestamp, m.sender.category, m.sender.entity_id, m.type, dict(m.data)]
    raise EnvelopeError(f"{type(m).__name__} does not travel between processes")


def _message_from_list(d: list[Any]) -> Inbound:
    kind, message_id, timestamp = d[0], str(d[1]), float(d[2])
    if kind == 3 and isinstance(d[4], bytes):
        return ClientMessage(message_id, timestamp, str(d[3]), d[4])
    if kind == 1 and isinstance(d[4], dict):
        return Connect(message_id, timestamp, str(d[3]), d[4])
    if kind == 2:
        return Terminated(message_id, timestamp, str(d[3]), str(d[4]), str(d[5]) if len(d) > 5 else "")
    if kind == 4 and isinstance(d[6], dict):
        return EntityMessage(message_id, timestamp, EntityRef(d[3], d[4]), str(d[5]), d[6])
    raise EnvelopeError(f"unknown or malformed message kind {kind!r}")


def _effect_to_list(effect: Send | Terminate) -> list[Any]:
    if isinstance(effect, Send):
        return [1, _target_to_list(effect.target), effect.payload, effect.coalesce_key]
    return [2, effect.connection_id, effect.reason, effect.reconnect]


def _effect_from_list(d: list[Any]) -> Send | Terminate:
    if d[0] == 1:
        return Send(_target_from_list(d[1]), d[2], d[3])
    if d[0] == 2:
        return Terminate(str(d[1]), str(d[2]), bool(d[3]))
    raise EnvelopeError(f"unknown effect kind {d[0]!r}")


def _target_to_list(t: Target) -> list[Any]:
    if isinstance(t, ToConnection):
        return [1, t.connection_id]
    if isinstance(t, ToAllConnections):
        return [2]
    return [3, dict(t.match)]


def _target_from_list(d: list[Any]) -> Target:
    if d[0] == 1:
        return ToConnection(str(d[1]))
    if d[0] == 2:
        return ToAllConnections()
    if d[0] == 3 and isinstance(d[1], dict):
        return ToClaims(d[1])
    raise EnvelopeError(f"unknown target kind {d[0]!r}")
