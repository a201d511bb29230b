"""One client websocket on the public edge: its reader, its writer and its send queue.

Why one reader and one writer task per socket: aiohttp allows one ``receive()`` at a time
(a second concurrent call raises), and a single writer keeps frames in order without locks.
The reader is the request handler's own task; the writer is started once the entity has
accepted the connection (``WELCOME`` is the first frame a client ever gets).

Send path and slow consumers (``PROTOCOL.md`` "Slow consumers"). Frames wait here only
while the socket's own buffers are full; what counts is bytes the client fails to drain
over time, never how many frames one loop turn happened to queue (a group commit of 300
chats is 300 pushes at once to a viewer that reads everything):

- immediate frames (replies, errors, pushes without a coalesce key) go to a deque counted
  in bytes. Over ``send_queue_bytes``, broadcast pushes are dropped (counted: the client
  reads slower than it is sent to), replies to the client's own requests still queue
  (never dropped silently), and the reader stops reading the client's frames until the
  queue is written (so refusals cannot pile up either);
- a socket that stops taking frames (the transport's buffer over its high-water mark:
  the kernel's buffer is full) starts a watch: if for ``slow_consumer_s`` it took
  nothing at all, the client is not reading: close 1013.
  A client that reads, however slowly, loses pushes but is never closed;
- coalesced frames never queue: a dict keeps the newest per key (by sequence number) and
  the writer sends them when it is free, so a slow client just gets newer state later;
- websocket PONGs: at most one waits (the newest PING's, RFC 6455 5.5.3), and every frame
  a client sends, control frames included, is charged to its rate limits.

Every way the socket ends reaches the entity as one ``Terminated`` with a reason, except
when a newer socket of the same user took this one's connection ID (``superseded``): then
the entity must keep the connection live.

Latency: each MSG's round trip is recorded hop by hop (:mod:`edge.hops`) at the cost of a
few clock reads and one histogram update per message, plus one clock read per socket write
that carries replies (client_write).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from domain.effects import Reply
from domain.messages import ClientMessage, Terminated
from domain.refs import EntityRef
from edge import protocol
from edge.errors import FrameError
from edge.hops import SlowMessage
from edge.ratelimit import TokenBucket
from edge.wsframes import binary_frames
from infrastructure.read_port import Position
from infrastructure.transport.port import NodeHops, version_of

if TYPE_CHECKING:
    from edge.public import PublicEdge

log = logging.getLogger(__name__)

_OUT_KIND = {protocol.WELCOME: "welcome", protocol.REPLY: "reply", protocol.PUSH: "push", protocol.PONG: "pong",
             protocol.TERMINATE: "terminate", protocol.ERROR: "error"}
_PING = struct.Struct("!q")
_CHARGED = (WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG)
"""Frames that cost a token: data and control alike (a PING flood is a flood)."""
_RATE_REASONS = {"connection": "too many frames", "user": "too many frames from this user",
                 "ip": "too many frames from this address"}


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
        self._queued_bytes = 0
        self._coalesced: dict[str, tuple[int, bytes]] = {}
        self._ping: bytes | None = None  # the edge's heartbeat ping waiting to be written
        self._pong: bytes | None = None  # the answer to the client's newest websocket PING
        self._drains = 0  # times the writer waited for the socket to drain and it did
        self._written = 0  # bytes handed to the transport by this class
        self._watch: asyncio.TimerHandle | None = None  # see _check_drain
        self._watch_mark = (0, 0, 0)
        self._wake = asyncio.Event()
        self._writer_idle = False  # the writer task waits for frames (see kick)
        self._close_request: tuple[int, str] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._asking = 0  # messages sent to the entity awaiting their replies
        self._asking_bytes = 0  # and their payload bytes
        self._room = asyncio.Event()  # set while the reader may read on (see _update_room)
        self._room.set()
        self._expiry: asyncio.TimerHandle | None = None
        self._buckets: tuple[tuple[str, TokenBucket], ...] = (
            ("connection", TokenBucket(edge.config.rate_per_s, edge.config.rate_burst)),)
        self.last_seen = time.monotonic()
        self._ping_sent: bytes | None = None  # payload of the heartbeat ping awaiting its PONG
        self._replies_unwritten = 0  # reply frames queued with their hops recorded, not yet written
        self._reply_since = 0.0  # perf_counter when the oldest of them was queued (client_write)
        self._slow: list[SlowMessage] | None = None  # sampled slow messages, logged once written

    # ------------------------------------------------------------------ Receiver (fan-out)
    def push(self, frame: bytes, payload: Any) -> None:
        self._enqueue(frame, droppable=True)

    def coalesce(self, key: str, seq: int, frame: bytes, payload: Any) -> bool:
        held = self._coalesced.get(key)
        if held is not None and held[0] >= seq:
            return False
        self._coalesced[key] = (seq, frame)
        return held is not None

    def flush(self) -> None:
        if self._coalesced and self.accepted:
            self.kick()

    def tick(self, key: str, seq: int, frame: bytes, wire: bytes) -> bool:
        """The fan-out tick's fast path: write ``wire`` (``frame``, already websocket-framed,
        the same bytes for every viewer) now if nothing else waits for this socket and it
        takes bytes; False: the caller keeps the frame coalesced for the writer instead."""
        if not (self._writer_idle and not self._queue and not self._coalesced and self._ping is None
                and self._pong is None and self._close_request is None):
            return False
        writer = self.ws._writer
        if writer is None or writer._closing or writer.protocol._paused:
            return False
        transport = writer.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(wire)
        self._written += len(wire)
        if writer.protocol._paused:
            self._watch_drain()
        return True

    def terminate(self, reason: str, reconnect: bool) -> None:
        """The entity (or the edge) ends this connection: TERMINATE frame, then close 1000.
        Ignored before acceptance: the Connect reply decides then (refusal: 4403)."""
        if not self.accepted:
            return
        self.entity_reason = "terminated"
        self._enqueue(protocol.terminate(reason, reconnect), force=True)
        self.request_close(protocol.NORMAL, reason, "terminated")

    # ------------------------------------------------------------------ sending
    @property
    def queued_bytes(self) -> int:
        """Bytes held for this client beyond its socket's buffers (replies, pushes, PONG)."""
        return self._queued_bytes + (len(self._pong) if self._pong is not None else 0)

    def _enqueue(self, frame: bytes, force: bool = False, droppable: bool = False) -> None:
        if self._close_request is not None and not force:
            return
        if self._queued_bytes >= self.edge.config.send_queue_bytes and self._backed_up():
            self._watch_drain()
            if droppable and not force:
                self.edge.metrics.pushes_dropped.inc()
                return
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        if self._queued_bytes >= self.edge.config.send_queue_bytes and self._backed_up():
            self._room.clear()  # read no further until the client takes what it was sent
            self._watch_drain()
        if self.accepted:
            self.edge.write_soon(self)

    def _backed_up(self) -> bool:
        """The socket takes nothing now: the transport's buffer is over its high-water mark
        (the kernel's buffer is full). Frames queued in one loop turn for a socket that
        takes them are written at the end of the turn: never a reason to drop or close."""
        writer = self.ws._writer
        return writer is not None and writer.protocol._paused

    def _update_room(self) -> None:
        """The reader may go on while fewer than max_in_flight messages (and max_in_flight_bytes
        of their payloads) await replies and the queue is under its bound."""
        config = self.edge.config
        if self._asking < config.max_in_flight and self._asking_bytes < config.max_in_flight_bytes and (
                self._queued_bytes < config.send_queue_bytes or not self._backed_up()):
            self._room.set()
        else:
            self._room.clear()

    @property
    def socket_buffer_bytes(self) -> int:
        """Bytes in the transport's write buffer (the kernel's socket buffer is full then)."""
        writer = self.ws._writer
        transport = writer.transport if writer is not None else None
        return transport.get_write_buffer_size() if transport is not None else 0

    def _watch_drain(self) -> None:
        """The socket takes nothing now: check in ``slow_consumer_s`` whether it took anything."""
        if self._watch is None and self._close_request is None:
            self._watch_mark = (self._drains, self._written, self.socket_buffer_bytes)
            self._watch = asyncio.get_running_loop().call_later(self.edge.config.slow_consumer_s, self._check_drain)

    def _check_drain(self) -> None:
        """``slow_consumer_s`` after the socket stopped taking frames: if it still takes
        none, did it take anything meanwhile (a drain the writer waited for completed, or
        bytes left the transport's buffer)? Nothing at all: the client is not reading."""
        self._watch = None
        if self._close_request is not None or not self._backed_up():
            return  # it drained
        drains, written, buffered = self._watch_mark
        drained = buffered + (self._written - written) - self.socket_buffer_bytes
        if self._drains == drains and drained <= 0:
            log.info("slow consumer %s on %s: its socket took nothing for %.1f s (%d bytes waiting), closing 1013",
                     self.cid, self.ref, self.edge.config.slow_consumer_s, self._queued_bytes + buffered,
                     extra={"entity": str(self.ref), "connection_id": self.cid})
            self.entity_reason = "slow_consumer"
            self.request_close(protocol.TRY_AGAIN_LATER, "not reading", "slow_consumer", flush=False)
            return
        self._watch_drain()

    def kick(self) -> None:
        """Frames wait: write them now if the writer task is idle and the socket takes them,
        else wake the writer. Writing here saves a task switch, and under load every task
        switch is a loop iteration (milliseconds) that the frame would wait."""
        if self._writer_idle and self._ping is None and self._pong is None and self._close_request is None:
            writer = self._open_writer()
            if writer is not None and not writer.protocol._paused:
                batch = self._take_batch()
                if batch:
                    data = binary_frames(batch)
                    writer.transport.write(data)
                    self._written += len(data)
                    if writer.protocol._paused:
                        self._watch_drain()
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
            if self._replies_unwritten:
                self._replies_written()
            batch.extend(self._queue)
            self._queue.clear()
            self._queued_bytes = 0
            if len(batch) == 1:
                frames_out[_OUT_KIND.get(batch[0][1], "error")].inc()
            else:  # a group commit's replies: one metric update per kind, not per frame
                for kind, count in Counter(frame[1] for frame in batch).items():
                    frames_out[_OUT_KIND.get(kind, "error")].inc(count)
            if not self._room.is_set():
                self._update_room()
        if self._coalesced:
            kept = sorted(self._coalesced.values())
            self._coalesced.clear()
            frames_out["push"].inc(len(kept))
            batch.extend(frame for _, frame in kept)
        return batch

    def _replies_written(self) -> None:
        """The queued replies go to the socket now: their client_write hop, and the log lines
        of the slow messages among them (which now have every hop)."""
        now = time.perf_counter()
        hops = self.edge.hops
        hops.written(now - self._reply_since, self._replies_unwritten)
        self._replies_unwritten = 0
        if self._slow is not None:
            slow, self._slow = self._slow, None
            for message in slow:
                hops.log_slow(self.ref, self.cid, message, now - message.replied_at)

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
        self._room.set()  # a reader held back by backpressure sees the close and ends
        self.edge.metrics.closes[reason].inc()
        if not flush or self._writer is None:
            if not flush:
                self._queue.clear()
                self._queued_bytes = 0
                self._replies_unwritten = 0
                self._coalesced.clear()
                self._pong = None
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
                if not (self._queue or self._coalesced or self._ping is not None or self._pong is not None
                        or self._close_request):
                    self._wake.clear()
                    self._writer_idle = True  # meanwhile kick() may write directly
                    try:
                        await self._wake.wait()
                    finally:
                        self._writer_idle = False
                if self._ping is not None:
                    data, self._ping = self._ping, None
                    await ws.ping(data)
                if self._pong is not None:
                    data, self._pong = self._pong, None
                    await ws.pong(data)
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
        data = binary_frames(frames)
        writer.transport.write(data)
        self._written += len(data)
        if writer.protocol._paused:
            self._watch_drain()
            await writer.protocol._drain_helper()
            self._drains += 1

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
        self._ping = self._ping_sent = _PING.pack(time.monotonic_ns())
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
                await self._room.wait()  # backpressure: read on when replies come back / the queue drains
                if self._close_request is not None:
                    break
            msg = await ws.receive()
            self.last_seen = time.monotonic()
            kind = msg.type
            if kind in _CHARGED and not self._within_rate():
                break
            if kind is WSMsgType.BINARY:
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
                self._pong = msg.data  # one pending PONG at most: the newest PING's
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

    def _within_rate(self) -> bool:
        """Charge one frame to every budget of this connection (its own, its user's, its
        address's); over one: ERROR ``rate_limited``, close 1008."""
        for scope, bucket in self._buckets:
            if not bucket.take():
                self.edge.metrics.rate_limited[scope].inc()
                self.entity_reason = "flood"
                self._enqueue(protocol.error("rate_limited", _RATE_REASONS[scope]), force=True)
                self.request_close(protocol.POLICY, "rate limit exceeded", "flood")
                return False
        return True

    def share_budgets(self, buckets: tuple[tuple[str, TokenBucket], ...]) -> None:
        """Add the user's and the address's shared budgets (see :mod:`edge.limits`)."""
        self._buckets = self._buckets + buckets

    def _on_frame(self, frame: list[Any]) -> None:
        kind = frame[0]
        metrics = self.edge.metrics
        if kind == protocol.MSG:
            metrics.frames_in["msg"].inc()
            if len(frame) != 3 or not isinstance(frame[1], str) or not 0 < len(frame[1]) <= protocol.MAX_MESSAGE_ID \
                    or not isinstance(frame[2], bytes):
                self._enqueue(protocol.error("bad_frame", "MSG is [1, message_id (str ≤ 64), payload (bin)]"))
                return
            if self.edge.load.behind(self.ref):  # its entity is behind: refused at once (edge/overload.py)
                metrics.shed.inc()
                self._enqueue(protocol.reply(frame[1], False, None, "overloaded",
                                             "the entity is overloaded; retry shortly", True))
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
        hops = NodeHops()
        in_flight = self.edge.load
        entry = in_flight.enter(self.ref)
        self._asking += 1
        size = len(payload)
        self._asking_bytes += size
        config = self.edge.config
        if self._asking >= config.max_in_flight or self._asking_bytes >= config.max_in_flight_bytes:
            self._room.clear()

        def replied(reply: Reply | None, error: BaseException | None) -> None:
            in_flight.leave(self.ref, entry)
            self._asking -= 1
            self._asking_bytes -= size
            self._update_room()
            if reply is None:
                frame = protocol.reply(message_id, False, None, "unavailable", str(error)[:200], True)
            else:
                now = time.perf_counter()
                self.edge.metrics.round_trip.observe(now - arrived)
                version = version_of(reply)
                frame = protocol.reply(message_id, reply.ok, reply.payload, reply.code, reply.reason, reply.retryable,
                                       Position(self.ref.stream_id, version).token() if version else None)
                if hops.node and self._close_request is None:  # an entity answered, and the frame will be queued
                    slow = self.edge.hops.replied(message_id, now - arrived, hops, now)
                    if slow is not None:
                        self._slow = [slow] if self._slow is None else [*self._slow, slow]
                    if not self._replies_unwritten:
                        self._reply_since = now
                    self._replies_unwritten += 1
            self._enqueue(frame)

        self.edge.transport.ask_callback(self.ref, message, replied, config.connect_timeout_s, hops)

    # ------------------------------------------------------------------ end
    async def finish(self) -> None:
        """After the reader ended: close, stop the writer, unregister, tell the entity."""
        if self._expiry is not None:
            self._expiry.cancel()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
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
        if self._slow is not None:  # their replies were never written
            slow, self._slow = self._slow, None
            for message in slow:
                self.edge.hops.log_slow(self.ref, self.cid, message, None)
        self.edge.forget(self)
        if not self.superseded:
            self.edge.transport.send(self.ref, Terminated(f"terminated-{uuid.uuid4().hex}", time.time(),
                                                          self.cid, self.entity_reason, self.session))
