"""A minimal websocket client for the edge's load tests: many connections in one process.

Why not ``edge.client``: at ~100k frames/s the load process must stay cheaper per frame than
the server, or a benchmark would measure its client. These are plain asyncio protocols
(RFC 6455 framing, zero mask key, pong, nothing else) that count or decode what arrives.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
import msgpack

from edge import protocol


class Stats:
    """Counters of the client process (one event loop: no locks)."""

    def __init__(self) -> None:
        self.measuring = False
        self.latencies: list[float] = []     # freshness samples, seconds
        self.state_frames = 0                # state frames (reflecting a bid) received by viewers
        self.push_frames = 0                 # every PUSH received by viewers (count mode)
        self.bid_count = 0                   # highest bid_count seen
        self.bid_count_seen_at = 0.0         # when it was first seen (epoch s)
        self.replies = 0
        self.rejected: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.closed = 0
        self.registered = 0                  # bidders whose credit line is in place


class WsClient(asyncio.Protocol):
    """A minimal websocket client: handshake, binary frames in and out, pong, nothing else.

    ``mode``: ``viewer`` decodes state pushes (freshness), ``count`` counts PUSH frames
    without decoding, ``bidder`` reads replies and rejections, ``raw`` counts frames of
    the plain broadcast server (no WELCOME)."""

    def __init__(self, stats: Stats, mode: str, request: bytes) -> None:
        self.stats = stats
        self.mode = mode
        self.upgrade = request
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.open = False
        self.ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.replies: dict[str, asyncio.Future[list[Any]]] = {}

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.upgrade)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc}"))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[:end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace")))
                return
            self.open = True
            if self.mode == "raw":
                self.ready.set_result(None)
        off, n = 0, len(buf)
        count_only = self.mode in ("count", "raw") and self.ready.done()
        pushes = 0
        while n - off >= 2:
            length = buf[off + 1] & 0x7F
            if length < 126:
                head = 2
            elif length == 126:
                if n - off < 4:
                    break
                length, head = int.from_bytes(buf[off + 2:off + 4], "big"), 4
            else:
                if n - off < 10:
                    break
                length, head = int.from_bytes(buf[off + 2:off + 10], "big"), 10
            start = off + head
            if n - start < length:
                break
            opcode = buf[off] & 0x0F
            off = start + length
            if opcode == 2:
                if count_only:
                    if buf[start] == 0x92 and buf[start + 1] == protocol.PUSH:
                        pushes += 1
                else:
                    self._binary(bytes(buf[start:off]), now)
            elif opcode == 9:  # server ping: answer (the edge closes silent connections)
                self.send(bytes(buf[start:off]), 0x8A)
            elif opcode == 8:
                self.stats.errors[f"close_{int.from_bytes(buf[start:start + 2], 'big') if length >= 2 else 0}"] += 1
        del buf[:off]
        if pushes:
            self.stats.push_frames += pushes

    # -- frames
    def _binary(self, data: bytes, now: float) -> None:
        frame = msgpack.unpackb(data, raw=False)
        kind = frame[0]
        stats = self.stats
        if kind == protocol.PUSH:
            payload = frame[1]
            if self.mode == "viewer" and isinstance(payload, dict) and payload.get("type") == "state":
                sent_at = payload.get("sent_at") or 0.0
                if stats.measuring and sent_at > 0:
                    stats.latencies.append(now - sent_at)
                    stats.state_frames += 1
                count = payload.get("bid_count", 0)
                if count > stats.bid_count:
                    stats.bid_count, stats.bid_count_seen_at = count, now
            elif self.mode == "count":
                stats.push_frames += 1
            elif isinstance(payload, dict) and payload.get("type") == "bid_rejected":
                stats.rejected[f"credit: {payload.get('reason', '')[:40]}"] += 1
            elif isinstance(payload, dict) and payload.get("type") == "registered":
                stats.registered += 1
        elif kind == protocol.REPLY:
            waiter = self.replies.pop(frame[1], None)
            if waiter is not None:
                waiter.set_result(frame)
                return
            stats.replies += 1
            if not frame[2]:
                stats.rejected[str(frame[3].get("code"))] += 1
        elif kind == protocol.WELCOME:
            if not self.ready.done():
                self.ready.set_result(frame[2])
        elif kind == protocol.TERMINATE:
            stats.errors[f"terminate: {frame[1]}"] += 1
        elif kind == protocol.ERROR:
            stats.errors[f"error: {frame[1]}"] += 1

    def send(self, payload: bytes, first: int = 0x82) -> None:
        """One frame, FIN set, masked with the zero key (valid RFC 6455; XOR is a no-op)."""
        assert self.transport is not None
        self.transport.write(frame_bytes(payload, first))

    async def request(self, payload: dict[str, Any], timeout: float = 10.0) -> list[Any]:
        """Send and await the REPLY; a retryable refusal (e.g. ``overloaded`` while the
        other clients connect) is resent with the same message ID, as a client would."""
        mid = uuid.uuid4().hex
        deadline = time.monotonic() + timeout
        while True:
            waiter: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self.replies[mid] = waiter
            self.send(protocol.pack([protocol.MSG, mid, msgpack.packb(payload)]))
            frame = await asyncio.wait_for(waiter, max(0.01, deadline - time.monotonic()))
            if frame[2] or not frame[3].get("retryable") or time.monotonic() > deadline:
                return frame
            await asyncio.sleep(0.05)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def frame_bytes(payload: bytes, first: int = 0x82) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def upgrade_request(host: str, port: int, path: str, token: str | None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}", "Sec-WebSocket-Version: 13",
             f"Sec-WebSocket-Protocol: {protocol.SUBPROTOCOL}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_clients(base: tuple[str, int], path_of: Any, token_of: Any, count: int, mode: str,
                       stats: Stats, batch: int = 100, client_class: type[WsClient] | None = None) -> list[Any]:
    """Open ``count`` clients in batches; each is ready after its WELCOME (or the 101, raw).
    ``client_class``: a :class:`WsClient` subclass that handles more frames (default WsClient)."""
    make = client_class or WsClient
    loop = asyncio.get_running_loop()
    host, port = base
    clients: list[WsClient] = []
    for first in range(0, count, batch):
        made = []
        for i in range(first, min(count, first + batch)):
            request = upgrade_request(host, port, path_of(i), token_of(i))
            _, client = await loop.create_connection(lambda r=request: make(stats, mode, r), host, port)
            made.append(client)
        await asyncio.wait_for(asyncio.gather(*(c.ready for c in made)), 60)
        clients += made
    return clients


async def get_token(session: aiohttp.ClientSession, base_url: str, sub: str, role: str) -> str:
    async with session.get(f"{base_url}/dev/token", params={"sub": sub, "role": role}) as resp:
        resp.raise_for_status()
        return str((await resp.json())["token"])


