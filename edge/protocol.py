"""Wire constants and codecs of the client protocol ``xplatform.v1`` (see ``PROTOCOL.md``).

One module so the public edge, the Python client and tests share one definition of frame
kinds and close codes; the edge never decodes a MSG payload (it stays ``bytes``).
"""

from __future__ import annotations

import re
from typing import Any

import msgpack

from edge.errors import FrameError

SUBPROTOCOL = "xplatform.v1"
BEARER_PREFIX = "bearer."

# client → edge
MSG, PING, LATENCY, BYE = 1, 2, 3, 4
# edge → client
WELCOME, REPLY, PUSH, PONG, TERMINATE, ERROR = 10, 11, 12, 13, 14, 15

# close codes
NORMAL = 1000
GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003
POLICY = 1008
TOO_BIG = 1009
TRY_AGAIN_LATER = 1013
TOKEN_EXPIRED = 4401
REFUSED = 4403

MAX_MESSAGE_ID = 64
_CID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def valid_connection_id(cid: str | None) -> bool:
    """True for a canonical lower- or upper-case hyphenated UUID (36 characters)."""
    return cid is not None and len(cid) == 36 and _CID.match(cid.lower()) is not None


def _fallback(value: Any) -> Any:
    """Entities may put values msgpack cannot carry (sets, dates) in pushes: send their text."""
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def pack(frame: list[Any]) -> bytes:
    """Encode one frame (a list whose first element is the kind)."""
    return msgpack.packb(frame, default=_fallback, use_bin_type=True)


def unpack_client_frame(data: bytes) -> list[Any]:
    """Decode a client frame's envelope. Raises FrameError(1008) unless it is a msgpack array
    starting with a known kind. The MSG payload stays bytes (msgpack bin)."""
    try:
        frame = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=len(data),
                                max_str_len=len(data), max_array_len=8, max_map_len=0)
    except Exception:  # msgpack raises several unrelated types
        raise FrameError(POLICY, "frame is not msgpack") from None
    if not isinstance(frame, list) or not frame or not isinstance(frame[0], int) or isinstance(frame[0], bool):
        raise FrameError(POLICY, "frame is not an array starting with a kind")
    if frame[0] not in (MSG, PING, LATENCY, BYE):
        raise FrameError(POLICY, f"unknown frame kind {frame[0]}")
    return frame


def welcome(cid: str, state: Any) -> bytes:
    return pack([WELCOME, cid, state])


def reply(message_id: str, ok: bool, payload: Any, code: str = "", reason: str = "", retryable: bool = False,
          position: str | None = None) -> bytes:
    """A REPLY; ``position``: the entity's position token, appended as a 5th element when
    there is one (PROTOCOL.md "Position tokens": older clients read the first four)."""
    body = payload if ok else {"code": code, "reason": reason, "retryable": retryable}
    if position:
        return pack([REPLY, message_id, ok, body, position])
    return pack([REPLY, message_id, ok, body])


def push(payload: Any) -> bytes:
    return pack([PUSH, payload])


def pong(client_time_ms: Any, edge_time_ms: int) -> bytes:
    return pack([PONG, client_time_ms, edge_time_ms])


def terminate(reason: str, reconnect: bool) -> bytes:
    return pack([TERMINATE, reason, reconnect])


def error(code: str, reason: str) -> bytes:
    return pack([ERROR, code, reason])
