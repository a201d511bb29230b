"""One client websocket on the public edge: its reader, its writer and its send queue.

Why one reader and one writer task per socket: aiohttp allows one ``receive()`` at a time
(a second concurrent call raises), and a single writer keeps frames in order without locks.
The reader is the request handler's own task; the writer is started once the entity has
accepted the connection (``WELCOME`` is the first frame a client ever gets).

Send path and slow consumers (``PROTOCOL.md`` "Slow consumers"):

- immediate frames (replies, pushes without a coalesce key, pongs) go to a bounded deque;
  when it is over ``send_queue_frames`` the client is not reading fast enough: the writer is
  cancelled, the socket closes with 1013 and nobody else waits for it;
- coalesced frames never queue: a dict keeps the newest per key (by sequence number) and
  the writer sends them when it is free, so a slow client just gets newer state later.

Every way the socket ends reaches the entity as one ``Terminated`` with a reason, except
when a newer socket of the same user took this one's connection ID (``superseded``): then
the entity must keep the connection live.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from domain.effects import Reply
from domain.messages import ClientMessage, Terminated
from domain.refs import EntityRef
from edge import protocol
from edge.errors import FrameError
from edge.ratelimit import TokenBucket
from edge.wsframes import binary_frames

if TYPE_CHECKING:
    from edge.public import PublicEdge

log = logging.getLogger(__name__)

_OUT_KIND = {protocol.WELCOME: "welcome", protocol.REPLY: "reply", protocol.PUSH: "push", protocol.PONG: "pong",
             protocol.TERMINATE: "terminate", protocol.ERROR: "error"}
_PING = struct.Struct("!q")


class WsConnection:
    """A client websocket registered for one entity. See the module docstring."""

    def __init__(self, edge: PublicEdge, ws: web.WebSocketResponse, ref: EntityRef, cid: str,
                 claims: Mapping[str, Any]) -> None:
        self.edge = edge
        self.ws = ws
        self.ref = ref
        self.cid = cid
        self.session = ""  # message ID of the Connect this socket sent (see Terminated.session)
        self.claims = claims
        self.accepted = False
        self.superseded = False
        self.close_reason = "client"       # metrics label (bounded)
        self.entity_reason = "closed"      # what the entity's Terminated says
        self._queue: deque[bytes] = deque()
        self._coalesced: dict[str, tuple[int, bytes]] = {}
        self._control: deque[tuple[WSMsgType, bytes]] = deque()
        self._wake = asyncio.Event()
        self._writer_idle = False  # the writer task waits for frames (see kick)
        self._close_request: tuple[int, str] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._asks: set[asyncio.Future[Reply]] = set()
        self._room = asyncio.Event()  # set while fewer than max_in_flight messages await replies
        self._room.set()
        self._expiry: asyncio.TimerHandle | None = None
        self._bucket = TokenBucket(edge.config.rate_per_s, edge.config.rate_burst)
        self.last_seen = time.monotonic()
        self._ping_sent: bytes | None = None  # payload of the heartbeat ping awaiting its PONG

    # ------------------------------------------------------------------ Receiver (fan-out)
    def push(self, frame: bytes, payload: Any) -> None:
        self._enqueue(frame)

    def coalesce(self, key: str, seq: int, frame: bytes, payload: Any) -> bool:
        held = self._coalesced.get(key)
        if held is not None and held[0] >= seq:
            return False
        self._coalesced[key] = (seq, frame)
        return held is not None

    def flush(self) -> None:
        if self._coalesced and self.accepted:
            self.kick()

    def terminate(self, reason: str, reconnect: bool) -> None:
        """The entity (or the edge) ends this connection: TERMINATE frame, then close 1000.
        Ignored before acceptance: the Connect reply decides then (refusal: 4403)."""
        if not self.accepted:
            return
        self.entity_reason = "terminated"
        self._enqueue(protocol.terminate(reason, reconnect), force=True)
        self.request_close(protocol.NORMAL, reason, "terminated")

    # ------------------------------------------------------------------ sending
    def _enqueue(self, frame: bytes, force: bool = False) -> None:
        if self._close_request is not None and not force:
            return
        if len(self._queue) >= self.edge.config.send_queue_frames and not force:
            log.info("slow consumer %s on %s: send queue over %d frames, closing 1013",
                     self.cid, self.ref, self.edge.config.send_queue_frames)
            self.entity_reason = "slow_consumer"
            self.request_close(protocol.TRY_AGAIN_LATER, "send queue full", "slow_consumer", flush=False)
            return
        self._queue.append(frame)
        if self.accepted:
            self.edge.write_soon(self)

    def kick(self) -> None:
        """Frames wait: write them now if the writer task is idle and the socket takes them,
        else wake the writer. Writing here saves a task switch, and under load every task
        switch is a loop iteration (milliseconds) that the frame would wait."""
        if self._writer_idle and not self._control and self._close_request is None:
            writer = self._open_writer()
            if writer is not None and not writer.protocol._paused:
                batch = self._take_batch()
                if batch:
                    writer.transport.write(binary_frames(batch))
                return
        self._wake.set()

    def _open_writer(self) -> Any:
        """aiohttp's writer of this socket while it still takes frames, else None."""
        writer = self.ws._writer
        if writer is None or writer._closing or writer.transport is None or writer.transport.is_closing():
            return None
        return writer

    def _take_batch(self) -> list[bytes]:
        """Every queued frame, then the kept coalesced ones (oldest first), counted."""
        frames_out = self.edge.metrics.frames_out
        batch: list[bytes] = []
        if self._queue:
            batch.extend(self._queue)
            self._queue.clear()
            for frame in batch:
                frames_out[_OUT_KIND.get(frame[1], "error")].inc()
        if self._coalesced:
            kept = sorted(self._coalesced.values())
            self._coalesced.clear()
            frames_out["push"].inc(len(kept))
            batch.extend(frame for _, frame in kept)
        return batch

    def accept(self, initial_state: Any) -> None:
        """The entity accepted: WELCOME goes first, then whatever was pushed meanwhile."""
        self.accepted = True
        self._queue.appendleft(protocol.welcome(self.cid, initial_state))
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.cid}")
        self._wake.set()

    def request_close(self, code: int, message: str, reason: str, flush: bool = True) -> None:
        """Close the socket with ``code``; ``flush``: send what is queued first (the writer
        closes when done); otherwise drop it and close now (slow consumer, flood)."""
        if self._close_request is not None:
            return
        self._close_request = (code, message)
        self.close_reason = reason
        self.edge.metrics.closes[reason].inc()
        if not flush or self._writer is None:
            if not flush:
                self._queue.clear()
                self._coalesced.clear()
            if self._writer is not None and not self._writer.done():
                self._writer.cancel()
            if self._writer is None and flush and self._queue:
                # never accepted (refusal): the writer sends the TERMINATE, then closes
                self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.cid}")
                self._wake.set()
                return
            self._closer = asyncio.create_task(self._close(code, message), name=f"ws-close-{self.cid}")
        else:
            self._wake.set()

    async def _write_loop(self) -> None:
        ws = self.ws
        try:
            while True:
                if not (self._queue or self._coalesced or self._control or self._close_request):
                    self._wake.clear()
                    self._writer_idle = True  # meanwhile kick() may write directly
                    try:
                        await self._wake.wait()
                    finally:
                        self._writer_idle = False
                while self._control:
                    kind, data = self._control.popleft()
                    await (ws.ping(data) if kind is WSMsgType.PING else ws.pong(data))
                batch = self._take_batch()
                if batch:
                    await self._write_batch(batch)
                if self._close_request is not None and not self._queue:
                    await self._close(*self._close_request)
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket broke under us: the reader sees it end
            log.debug("writer of %s on %s stopped: %s", self.cid, self.ref, exc)

    async def _write_batch(self, frames: list[bytes]) -> None:
        """All queued frames in one socket write (see ``edge.wsframes``), then the same flow
        control as aiohttp's writer: wait while the transport's buffer is over its limit."""
        writer = self._open_writer()
        if writer is None:
            raise ConnectionResetError("socket closing")
        writer.transport.write(binary_frames(frames))
        if writer.protocol._paused:
            await writer.protocol._drain_helper()

    async def _close(self, code: int, message: str) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message.encode()[:120]),
                                   self.edge.config.close_timeout_s * 2)
        except (TimeoutError, Exception):
            pass
        transport = self.ws._req.transport if self.ws._req is not None else None
        if transport is not None and not transport.is_closing():
            transport.abort()
        elif transport is not None:
            # close() flushes first; a client that never reads would keep it forever
            asyncio.get_running_loop().call_later(self.edge.config.close_timeout_s, transport.abort)

    # ------------------------------------------------------------------ heartbeat, expiry
    def send_ping(self) -> None:
        """A heartbeat ping; only a PONG echoing this payload is timed (one outstanding at a time)."""
        self._ping_sent = _PING.pack(time.monotonic_ns())
        self._control.append((WSMsgType.PING, self._ping_sent))
        self._wake.set()

    def expire_at(self, exp: float) -> None:
        """Terminate with 4401 when the token's ``exp`` (epoch s) passes."""
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(max(0.0, exp - time.time()), self._expired)

    def _expired(self) -> None:
        self.entity_reason = "token_expired"
        self._enqueue(protocol.terminate("token expired", True), force=True)
        self.request_close(protocol.TOKEN_EXPIRED, "token expired", "token_expired")

    # ------------------------------------------------------------------ reading
    async def read_loop(self) -> None:
        """Read frames until the socket ends (this is the handler's task: the only reader)."""
        ws = self.ws
        metrics = self.edge.metrics
        while True:
            if not self._room.is_set():
                await self._room.wait()  # backpressure: read on when replies come back
            msg = await ws.receive()
            self.last_seen = time.monotonic()
            kind = msg.type
            if kind is WSMsgType.BINARY:
                if not self._bucket.take():
                    self.entity_reason = "flood"
                    self._enqueue(protocol.error("rate_limited", "too many frames"), force=True)
                    self.request_close(protocol.POLICY, "rate limit exceeded", "flood")
                    break
                try:
                    self._on_frame(protocol.unpack_client_frame(msg.data))
                except FrameError as exc:
                    metrics.frames_in["bad"].inc()
                    self.entity_reason = "protocol_error"
                    self.request_close(exc.close_code, exc.reason, "protocol", flush=False)
                    break
                if self._close_request is not None:
                    break
            elif kind is WSMsgType.TEXT:
                metrics.frames_in["bad"].inc()
                self.entity_reason = "protocol_error"
                self.request_close(protocol.UNSUPPORTED_DATA, "binary frames only", "text", flush=False)
                break
            elif kind is WSMsgType.PING:
                self._control.append((WSMsgType.PONG, msg.data))
                self._wake.set()
            elif kind is WSMsgType.PONG:
                if self._ping_sent is not None and msg.data == self._ping_sent:  # unsolicited PONGs are ignored
                    self._ping_sent = None
                    sent = _PING.unpack(msg.data)[0]
                    metrics.heartbeat_rtt.observe(max(0, time.monotonic_ns() - sent) / 1e9)
            elif kind is WSMsgType.ERROR:
                if getattr(msg.data, "code", None) == protocol.TOO_BIG:
                    self.entity_reason = "protocol_error"
                    metrics.frames_in["bad"].inc()
                    metrics.closes["too_big"].inc()
                    self._close_request = (protocol.TOO_BIG, "frame too big")
                break
            else:  # CLOSE, CLOSING, CLOSED
                break

    def _on_frame(self, frame: list[Any]) -> None:
        kind = frame[0]
        metrics = self.edge.metrics
        if kind == protocol.MSG:
            metrics.frames_in["msg"].inc()
            if len(frame) != 3 or not isinstance(frame[1], str) or not 0 < len(frame[1]) <= protocol.MAX_MESSAGE_ID \
                    or not isinstance(frame[2], bytes):
                self._enqueue(protocol.error("bad_frame", "MSG is [1, message_id (str ≤ 64), payload (bin)]"))
                return
            if self.edge.load.overloaded:  # refused at once: see edge/overload.py
                metrics.shed.inc()
                self._enqueue(protocol.reply(frame[1], False, None, "overloaded",
                                             "the edge is overloaded; retry shortly", True))
                return
            self._ask(frame[1], frame[2])
        elif kind == protocol.PING:
            metrics.frames_in["ping"].inc()
            self._enqueue(protocol.pong(frame[1] if len(frame) > 1 else None, int(time.time() * 1000)))
        elif kind == protocol.LATENCY:
            metrics.frames_in["latency"].inc()
            rtt = frame[1] if len(frame) > 1 else None
            if isinstance(rtt, (int, float)) and not isinstance(rtt, bool) and 0 <= rtt < 600_000:
                metrics.client_latency.observe(rtt / 1000.0)
        elif kind == protocol.BYE:
            metrics.frames_in["bye"].inc()
            self.entity_reason = "client_left"
            self.request_close(protocol.NORMAL, "bye", "bye")

    def _ask(self, message_id: str, payload: bytes) -> None:
        arrived = time.perf_counter()
        message = ClientMessage(message_id, time.time(), self.cid, payload)
        future = self.edge.transport.ask_future(self.ref, message, self.edge.config.connect_timeout_s)
        self._asks.add(future)
        if len(self._asks) >= self.edge.config.max_in_flight:
            self._room.clear()

        def replied(done: asyncio.Future[Reply]) -> None:
            self._asks.discard(done)
            if len(self._asks) < self.edge.config.max_in_flight:
                self._room.set()
            if done.cancelled():
                return
            exc = done.exception()
            if exc is not None:
                frame = protocol.reply(message_id, False, None, "unavailable", str(exc)[:200], True)
            else:
                r = done.result()
                self.edge.metrics.round_trip.observe(time.perf_counter() - arrived)
                frame = protocol.reply(message_id, r.ok, r.payload, r.code, r.reason, r.retryable)
            self._enqueue(frame)

        future.add_done_callback(replied)

    # ------------------------------------------------------------------ end
    async def finish(self) -> None:
        """After the reader ended: close, stop the writer, unregister, tell the entity."""
        if self._expiry is not None:
            self._expiry.cancel()
        if self._close_request is None:
            self.request_close(protocol.NORMAL, "", self.close_reason, flush=False)
        for task in (self._writer, self._closer):
            if task is not None and not task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(task), self.edge.config.close_timeout_s * 3)
                except (TimeoutError, asyncio.CancelledError, Exception):
                    task.cancel()
        if not self.ws.closed:
            await self._close(*(self._close_request or (protocol.NORMAL, "")))
        self.edge.forget(self)
        if not self.superseded:
            self.edge.transport.send(self.ref, Terminated(f"terminated-{uuid.uuid4().hex}", time.time(),
                                                          self.cid, self.entity_reason, self.session))
