"""A gevent-friendly client of the edge protocol (``xplatform.v1``, edge/PROTOCOL.md) for
locust users, reporting to locust's request events so that locust's statistics, charts and
CSV are the platform's latencies:

- ``request_type="WS"``: a connect (upgrade until ``WELCOME``), by the name the user gives
  (``connect``, ``reconnect``); a refusal or ``TERMINATE`` is a failure;
- ``request_type="MSG"``: a command, from sending the ``MSG`` until its ``REPLY`` (the reply
  leaves the edge only once the command's events are durable). A domain refusal (``rejected``:
  outbid, lot closed) is the entity's answer and counts as a success under ``<name> (rejected)``;
  every other error code (``overloaded``, ``retry``, ``handler_failed``, ...), a timeout or a
  lost connection is a failure;
- ``request_type="PUSH"``: the freshness of a pushed update, from the moment its cause was sent
  (a time the sender put in the message, wall clock) until it arrives; reported by the user's
  ``on_push`` callback through :meth:`XPlatformSocket.report_freshness`.

Why websocket-client: it does blocking socket I/O, which gevent's monkey-patching (done by
locust on import) turns cooperative, so thousands of sockets share a worker; asyncio clients
(aiohttp, edge.client) would need an event loop per greenlet. Frames come from
:mod:`edge.protocol` (the edge's own encoder and constants): nothing is re-implemented here.
One reader greenlet per socket (a gevent socket refuses a second concurrent reader): replies
are handed to the waiting greenlet, pushes to the callback.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import gevent
import msgpack
import websocket
from gevent.event import AsyncResult

from edge import protocol


class SocketClosed(Exception):
    """Raised when the connection ended (or was refused) before the awaited frame arrived."""


class ReplyError(Exception):
    """Raised (and reported as the failure) when a REPLY carries an error other than a domain refusal."""


PushHandler = Callable[["XPlatformSocket", Any, float, int], None]
"""``on_push(socket, payload, received_at, frame_bytes)``."""


class XPlatformSocket:
    """One connection to one entity; :meth:`connect` again (same ``cid``) resumes it."""

    def __init__(self, environment: Any, base_url: str, category: str, entity_id: str, token: str,
                 cid: str | None = None, on_push: PushHandler | None = None, timeout_s: float = 10.0) -> None:
        self.environment = environment
        self.url = f"{base_url.rstrip('/').replace('http', 'ws', 1)}/ws/{category}/{entity_id}"
        self.token = token
        self.cid = cid or str(uuid.uuid4())
        self.on_push = on_push
        self.timeout_s = timeout_s
        self.welcome: Any = None
        self._ws: websocket.WebSocket | None = None
        self._reader: gevent.Greenlet | None = None
        self._welcomed: AsyncResult | None = None
        self._waiting: dict[str, AsyncResult] = {}

    # ------------------------------------------------------------------ reporting
    def _report(self, request_type: str, name: str, started: float, length: int = 0,
                exception: Exception | None = None) -> None:
        self.environment.events.request.fire(request_type=request_type, name=name,
                                             response_time=(time.perf_counter() - started) * 1000,
                                             response_length=length, exception=exception, context={})

    def report_freshness(self, name: str, sent_at: float, received_at: float, length: int) -> None:
        """A pushed update that arrived ``received_at - sent_at`` seconds after its cause was sent."""
        self.environment.events.request.fire(request_type="PUSH", name=name,
                                             response_time=max(0.0, received_at - sent_at) * 1000,
                                             response_length=length, exception=None, context={})

    # ------------------------------------------------------------------ lifecycle
    @property
    def open(self) -> bool:
        return self._ws is not None and self._ws.connected

    def connect(self, name: str = "connect") -> Any:
        """Upgrade and wait for WELCOME (reported as ``WS <name>``); the initial state, or
        SocketClosed (reported as a failure) if refused or terminated."""
        started = time.perf_counter()
        self._welcomed = AsyncResult()
        try:
            ws = websocket.create_connection(f"{self.url}?cid={self.cid}", timeout=self.timeout_s,
                                             subprotocols=[protocol.SUBPROTOCOL],
                                             header=[f"Authorization: Bearer {self.token}"])
            ws.settimeout(None)  # the reader waits for pushes as long as the connection lives
            self._ws = ws
            self._reader = gevent.spawn(self._read, ws, self._welcomed)
            self.welcome = self._welcomed.get(timeout=self.timeout_s)
        except Exception as failed:
            self.drop()
            error = failed if isinstance(failed, SocketClosed) else SocketClosed(f"{type(failed).__name__}: {failed}")
            self._report("WS", name, started, exception=error)
            raise error from None
        self._report("WS", name, started)
        return self.welcome

    def close(self) -> None:
        """Leave for good: BYE (the entity ends the connection without a grace period)."""
        if self.open:
            try:
                self._send(protocol.pack([protocol.BYE]))
                if self._reader is not None:
                    self._reader.join(timeout=self.timeout_s)  # the edge closes after BYE
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        self.drop()

    def drop(self) -> None:
        """Cut the socket without a word, like a phone losing its network: the entity keeps the
        connection for its grace period, and a reconnect with the same ``cid`` resumes it."""
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.shutdown()
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self._reader is not None and self._reader is not gevent.getcurrent():
            self._reader.kill(block=False)
        self._fail_waiting(SocketClosed("connection dropped"))

    # ------------------------------------------------------------------ commands
    def request(self, payload: dict[str, Any], name: str) -> list[Any] | None:
        """Send ``payload`` as a MSG and wait for its REPLY, reported as ``MSG <name>``; the
        REPLY frame, or None if it failed (already reported)."""
        message_id = uuid.uuid4().hex
        waiter = AsyncResult()
        self._waiting[message_id] = waiter
        started = time.perf_counter()
        try:
            self._send(protocol.pack([protocol.MSG, message_id, msgpack.packb(payload, use_bin_type=True)]))
            frame, length = waiter.get(timeout=self.timeout_s)
        except gevent.Timeout:
            self._report("MSG", name, started, exception=SocketClosed(f"no REPLY within {self.timeout_s:g} s"))
            return None
        except Exception as failed:
            self._report("MSG", name, started, exception=failed if isinstance(failed, SocketClosed)
                         else SocketClosed(f"{type(failed).__name__}: {failed}"))
            return None
        finally:
            self._waiting.pop(message_id, None)
        ok, answer = frame[2], frame[3]
        if ok:
            self._report("MSG", name, started, length)
        elif isinstance(answer, dict) and answer.get("code") == "rejected":
            self._report("MSG", f"{name} (rejected)", started, length)
        else:
            error = answer if isinstance(answer, dict) else {"code": answer}
            self._report("MSG", name, started, length, exception=ReplyError(f"{error.get('code')}: {error.get('reason', '')}"))
        return list(frame)

    # ------------------------------------------------------------------ internals
    def _send(self, data: bytes) -> None:
        if self._ws is None:
            raise SocketClosed("not connected")
        self._ws.send_binary(data)

    def _fail_waiting(self, error: Exception, welcomed: AsyncResult | None = None) -> None:
        """Wake whoever waits for a frame this connection will not bring."""
        welcomed = welcomed or self._welcomed
        if welcomed is not None and not welcomed.ready():
            welcomed.set_exception(error)
        for waiter in list(self._waiting.values()):
            if not waiter.ready():
                waiter.set_exception(error)

    def _read(self, ws: websocket.WebSocket, welcomed: AsyncResult) -> None:
        reason = "connection closed"
        try:
            while True:
                opcode, frame = ws.recv_data_frame()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else 0
                    reason = f"closed {code} {frame.data[2:].decode(errors='replace')}".strip()
                    break
                if opcode != websocket.ABNF.OPCODE_BINARY:
                    continue
                data = frame if isinstance(frame, bytes) else frame.data
                received_at = time.time()
                message = msgpack.unpackb(data, raw=False)
                kind = message[0]
                if kind == protocol.REPLY:
                    waiter = self._waiting.get(message[1])
                    if waiter is not None and not waiter.ready():
                        waiter.set((message, len(data)))
                elif kind == protocol.PUSH:
                    if self.on_push is not None:
                        self.on_push(self, message[1], received_at, len(data))
                elif kind == protocol.WELCOME:
                    if not welcomed.ready():
                        welcomed.set(message[2])
                elif kind == protocol.TERMINATE:
                    reason = f"terminated: {message[1]}"
                elif kind == protocol.ERROR:
                    reason = f"error {message[1]}: {message[2]}"
        except Exception as failed:  # noqa: BLE001 - the socket is gone; waiters learn why
            reason = f"{reason} ({type(failed).__name__})"
        try:
            ws.shutdown()
        except Exception:  # noqa: BLE001 - already gone
            pass
        if self._ws is ws or self._ws is None:  # not replaced by a reconnect meanwhile
            self._ws = None
            self._fail_waiting(SocketClosed(reason), welcomed)
