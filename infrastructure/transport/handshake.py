"""The link handshake of both sides (protocol and key choice: ``auth.py``).

Runs on the raw stream before a :class:`~infrastructure.transport.link.Link` starts reading:
nothing a peer sends is handed to the node until the peer has proven its role, and a
connecting side sends nothing but its HELLO and its proof until the server has proven it
holds the same secret. A handshake frame longer than ``MAX_HANDSHAKE_FRAME_BYTES`` (4 KiB) is
refused from its length prefix, so an unauthenticated peer holds at most that much of our
memory. Every failure raises :class:`TransportAuthError` with a bounded reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from infrastructure.transport.auth import NONCE_BYTES, ROLES, LinkAuth, TransportAuthError, new_nonce
from infrastructure.transport.envelopes import MAX_HANDSHAKE_FRAME_BYTES, Auth, EnvelopeError, Hello, frame
from infrastructure.transport.link import read_envelope


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of an accepted link, as proven by the handshake."""

    node_id: str
    role: str
    lanes: tuple[str, ...]


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, auth: LinkAuth, server_id: str,
                 is_member: Callable[[str], bool]) -> Peer:
    """Server side: HELLO in, HELLO with our proof out, AUTH in and checked."""
    hello = await _read(reader, Hello, "HELLO")
    if len(hello.nonce) != NONCE_BYTES:
        raise TransportAuthError("protocol", f"{hello.node_id!r} sent a HELLO without a {NONCE_BYTES}-byte nonce "
                                 "(transport protocol v1 peer?)")
    if hello.role not in ROLES:
        raise TransportAuthError("unknown_role", f"{hello.node_id!r} claims role {hello.role[:20]!r}")
    if not is_member(hello.node_id):
        raise TransportAuthError("not_member", f"{hello.node_id!r} is not a registered member")
    nonce_s = new_nonce()
    proof = auth.proof(True, hello.node_id, hello.role, server_id, hello.nonce, nonce_s)
    writer.write(frame(Hello(server_id, "state", (), nonce_s, proof)))
    answer = await _read(reader, Auth, "AUTH")
    auth.check(answer.proof, False, hello.node_id, hello.role, server_id, hello.nonce, nonce_s)
    return Peer(hello.node_id, hello.role, hello.lanes)


async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, auth: LinkAuth, client_id: str,
                  role: str, lanes: tuple[str, ...], server_id: str) -> None:
    """Connecting side: HELLO out, the server's proof checked (it must be ``server_id``), AUTH out."""
    nonce_c = new_nonce()
    writer.write(frame(Hello(client_id, role, lanes, nonce_c)))
    hello = await _read(reader, Hello, "HELLO")
    if hello.node_id != server_id:
        raise TransportAuthError("wrong_peer", f"dialled {server_id!r} but {hello.node_id!r} answered")
    if len(hello.nonce) != NONCE_BYTES:
        raise TransportAuthError("protocol", f"{server_id!r} answered without a {NONCE_BYTES}-byte nonce")
    auth.check(hello.proof, True, client_id, role, server_id, nonce_c, hello.nonce)
    writer.write(frame(Auth(auth.proof(False, client_id, role, server_id, nonce_c, hello.nonce))))


_E = TypeVar("_E", Hello, Auth)


async def _read(reader: asyncio.StreamReader, kind: type[_E], name: str) -> _E:
    try:
        envelope = await read_envelope(reader, MAX_HANDSHAKE_FRAME_BYTES)
    except EnvelopeError as exc:
        raise TransportAuthError("protocol", f"malformed handshake frame: {exc}") from None
    except (asyncio.IncompleteReadError, ConnectionError):
        raise TransportAuthError("protocol", f"closed before its {name}") from None
    if not isinstance(envelope, kind):
        raise TransportAuthError("protocol", f"sent {type(envelope).__name__} where {name} belongs")
    return envelope
