"""The internal edge: devices reach entities over plain HTTP, authenticated by network.

Why: devices on the plant network (sensors, kiosks, serial bridges) often cannot hold a
websocket or a JWT; the seed lets them in by IP allow-list and device class instead. Each
configured network (``XPLATFORM_EDGE_INTERNAL_NETWORKS="10.1.0.0/16=sensor"``) maps to a
device class; a request from elsewhere gets 403 and nothing else happens.

- ``POST /internal/{category}/{entity_id}/messages?device=<id>`` — body JSON or msgpack
  (``Content-Type: application/msgpack``) ``{"message_id": str, "payload": ...}``; answered
  with the entity's reply once it is durable: 200 ``{"ok": true, "payload"}``, 422 for a
  refusal, 503 when retrying is safe, each with ``{"ok": false, "error": {code, reason, retryable}}``.
- ``GET /internal/{category}/{entity_id}/messages?device=<id>&cursor=<n>&wait=<s>`` — long
  poll: the outbound messages for this device's connection with a sequence number above
  ``cursor`` (waits up to ``wait`` seconds for the first one); ``missed`` counts messages
  that fell out of the bounded buffer; coalesced updates keep only the newest per key.

A device is a connection like any other: the first request sends ``Connect`` with claims
``{"sub": "device:<class>:<id>", "role": device_class, "device_class": device_class,
"auth": "network"}`` - its own namespace, so a device named ``bob`` is not the user ``bob``
(tokens with a ``device:`` subject are refused at the public edge). A device class holds no
``:`` (an edge configured with one does not start), so no two (class, ID) pairs share a
subject, though IDs may hold ``:``. Its connection ID is an
HMAC of class and device ID under the device secret (``XPLATFORM_EDGE_DEVICE_SECRET_FILE``,
the same file on every edge: stable across requests and edges, and nobody without the
secret can compute another device's ID). A device idle for ``internal_idle_s`` is
disconnected (``Terminated`` reason ``idle``).

The work is transport-neutral (:meth:`InternalEdge.entity_ref`, :meth:`~InternalEdge.send`,
:meth:`~InternalEdge.outbound`, :func:`message_of`): the HTTP handlers here and the serial
line (edge/serial_line.py) frame it, each with its own notion of where a device is from.
Where the routes are served (public port or a listener of their own): edge/internal_listener.py.

Malformed requests get a 4xx JSON error before anything reaches an entity: ``malformed``
(not JSON/msgpack, JSON nested deeper than Python parses, ``NaN``/``Infinity``), and
``bad_payload`` for a payload msgpack cannot carry (integers outside -2^63..2^64-1).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
import uuid
from collections import deque
from collections.abc import Collection, Mapping
from typing import Any

import msgpack
from aiohttp import web

from domain.errors import DomainError
from domain.messages import ClientMessage, Connect, Terminated
from domain.refs import EntityRef
from edge import protocol
from edge.auth import DEVICE_SUB_PREFIX
from edge.config import DEVICE_ID, EdgeConfig
from edge.errors import EdgeConfigurationError, EdgeError
from edge.fanout import Fanout
from edge.metrics import EdgeMetrics
from edge.overload import InFlight
from edge.registry import Registry
from infrastructure.errors import ConfigurationError
from infrastructure.secrets import MIN_SECRET_BYTES, read_secret
from infrastructure.transport.port import Transport

MSGPACK = "application/msgpack"


class DeviceRefused(EdgeError):
    """Raised when the entity refuses a device's connection (its claims are not accepted)."""


class BadRequest(EdgeError):
    """Raised when an internal-edge request is malformed; ``status`` and ``error`` go back as JSON."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason


class DeviceConnection:
    """A device's connection: outbound messages kept in a bounded, numbered buffer for pulls."""

    def __init__(self, ref: EntityRef, cid: str, claims: Mapping[str, Any], capacity: int) -> None:
        self.ref = ref
        self.cid = cid
        self.session = ""  # message ID of this device session's Connect (Terminated.session)
        self.claims = claims
        self.accepted = False
        self.terminated: tuple[str, bool] | None = None
        self.last_used = time.monotonic()
        self._buffer: deque[tuple[int, str | None, Any]] = deque(maxlen=capacity)
        self._newest: dict[str, int] = {}   # coalesce key → buffer seq of its newest message
        self._fanout_seq: dict[str, int] = {}
        self._seq = 0
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ Receiver
    def push(self, frame: bytes, payload: Any) -> None:
        self._append(None, payload)

    def coalesce(self, key: str, seq: int, frame: bytes, payload: Any) -> bool:
        if self._fanout_seq.get(key, 0) >= seq:
            return False
        replaced = key in self._newest
        self._fanout_seq[key] = seq
        self._append(key, payload)
        return replaced

    def flush(self) -> None:
        """Nothing waits for a tick: coalesced messages are already in the buffer."""

    def terminate(self, reason: str, reconnect: bool) -> None:
        self.terminated = (reason, reconnect)
        self._changed.set()

    def _append(self, key: str | None, payload: Any) -> None:
        self._seq += 1
        self._buffer.append((self._seq, key, payload))
        if key is not None:
            self._newest[key] = self._seq
        self._changed.set()

    # ------------------------------------------------------------------ pulls
    def since(self, cursor: int) -> tuple[list[dict[str, Any]], int, int]:
        """(messages after ``cursor``, the new cursor, how many fell out of the buffer).
        A cursor from the future (another edge, a restarted one) starts over from 0."""
        if cursor > self._seq:
            cursor = 0
        first = self._buffer[0][0] if self._buffer else self._seq + 1
        missed = max(0, first - cursor - 1)
        out = [{"seq": seq, "payload": payload} for seq, key, payload in self._buffer
               if seq > cursor and (key is None or self._newest.get(key) == seq)]
        return out, self._seq, missed

    async def wait(self, timeout: float) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass


class InternalEdge:
    """Device entry point (HTTP push and pull). See the module docstring."""

    def __init__(self, transport: Transport, config: EdgeConfig, *, registry: Registry | None = None,
                 metrics: EdgeMetrics | None = None, categories: Collection[str] | None = None,
                 load: InFlight | None = None) -> None:
        self.transport = transport
        self.config = config
        self.metrics = metrics or EdgeMetrics()
        self.load = load  # the public edge's, when both share a loop (edge/overload.py); None: never shed
        self.own_fanout = registry is None
        self.registry = registry if registry is not None else Registry()
        self.fanout = Fanout(self.registry, self.metrics, config.coalesce_tick_s) if self.own_fanout else None
        self.categories = frozenset(categories) if categories is not None else None
        self._connecting: dict[tuple[EntityRef, str], asyncio.Future[DeviceConnection]] = {}
        self._devices: set[DeviceConnection] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._secret = device_secret(config)

    def connection_id(self, device_class: str, device: str) -> str:
        """The device's connection ID: HMAC-SHA256 of class and ID under the device secret, as a UUID."""
        digest = hmac.new(self._secret, f"{device_class}/{device}".encode(), hashlib.sha256).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))

    async def start(self) -> None:
        if self.fanout is not None:
            self.transport.subscribe(self.fanout)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="internal-edge-idle-sweep")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self._devices):
            self._forget(conn, "edge_shutdown")
        if self.fanout is not None:
            self.transport.unsubscribe(self.fanout)
            self.fanout.close()

    def routes(self) -> list[web.RouteDef]:
        path = "/internal/{category}/{entity_id}/messages"
        return [web.post(path, self.push), web.get(path, self.pull)]

    # ------------------------------------------------------------------ checks
    def _device_class(self, request: web.Request) -> str:
        try:
            address = ipaddress.ip_address((request.remote or "").split("%")[0])
        except ValueError:
            raise BadRequest(403, "network_not_allowed", "unknown client address") from None
        for network, device_class in self.config.internal_networks:
            if address.version == network.version and address in network:
                return device_class
        raise BadRequest(403, "network_not_allowed", "this address is not in a configured device network")

    def _address(self, request: web.Request) -> tuple[EntityRef, str, str]:
        device_class = self._device_class(request)
        ref = self.entity_ref(request.match_info["category"], request.match_info["entity_id"])
        device = request.headers.get("X-Device-Id") or request.query.get("device", "")
        if not DEVICE_ID.match(device):
            raise BadRequest(400, "bad_device_id", "device (query or X-Device-Id) must be 1-64 of A-Z a-z 0-9 _ . : -")
        return ref, device, device_class

    # ------------------------------------------------------------------ handlers
    async def push(self, request: web.Request) -> web.Response:
        try:
            ref, device, device_class = self._address(request)
            message_id, payload = await self._body(request)
            status, body = await self.send(ref, device, device_class, message_id, payload)
        except BadRequest as exc:
            return _error(exc.status, exc.error, exc.reason, retryable=exc.status == 503)
        except DeviceRefused as exc:
            return _error(403, "refused", str(exc))
        return _respond(request, status, body)

    async def pull(self, request: web.Request) -> web.Response:
        try:
            ref, device, device_class = self._address(request)
            cursor = _number(request.query.get("cursor", "0"), int, "cursor")
            wait = min(_number(request.query.get("wait", "0"), float, "wait"), self.config.internal_max_wait_s)
            body = await self.outbound(ref, device, device_class, cursor, wait)
        except BadRequest as exc:
            return _error(exc.status, exc.error, exc.reason, retryable=exc.status == 503)
        except DeviceRefused as exc:
            return _error(403, "refused", str(exc))
        return _respond(request, 200, body)

    # ------------------------------------------------------------------ what every device interface shares
    def entity_ref(self, category: str, entity_id: str) -> EntityRef:
        """The addressed entity; BadRequest ``bad_address`` / ``unknown_category`` (404) otherwise."""
        try:
            ref = EntityRef(category, entity_id)
        except DomainError as exc:
            raise BadRequest(400, "bad_address", exc.reason) from None
        if self.categories is not None and ref.category not in self.categories:
            raise BadRequest(404, "unknown_category", f"no entity category {ref.category!r}")
        return ref

    async def send(self, ref: EntityRef, device: str, device_class: str, message_id: str,
                   payload: bytes) -> tuple[int, dict[str, Any]]:
        """Deliver one message of the device (``device_class``, ``device``) to ``ref`` once its
        connection is accepted: (200/422/503, the answer body with the entity's durable reply).
        Raises BadRequest (503 ``overloaded``/``unavailable``: retry; nothing else changed) or
        DeviceRefused when the entity refuses the device."""
        conn = await self._device(ref, device, device_class)
        conn.last_used = time.monotonic()
        self.metrics.frames_in["msg"].inc()
        if self.load is not None and self.load.behind(ref):  # its entity is behind (edge/overload.py)
            self.metrics.shed.inc()
            raise BadRequest(503, "overloaded", "the entity is overloaded; retry shortly")
        arrived = time.perf_counter()
        entry = self.load.enter(ref) if self.load is not None else None
        try:
            reply = await self.transport.ask(ref, ClientMessage(message_id, time.time(), conn.cid, payload),
                                             self.config.connect_timeout_s)
        except Exception as exc:
            raise BadRequest(503, "unavailable", str(exc)[:200]) from None
        finally:
            if entry is not None:
                self.load.leave(ref, entry)  # type: ignore[union-attr]
        self.metrics.round_trip.observe(time.perf_counter() - arrived)
        if reply.ok:
            return 200, {"message_id": message_id, "ok": True, "payload": reply.payload}
        return 503 if reply.retryable else 422, {"message_id": message_id, "ok": False, "error": {
            "code": reply.code, "reason": reply.reason, "retryable": reply.retryable}}

    async def outbound(self, ref: EntityRef, device: str, device_class: str, cursor: int,
                       wait: float) -> dict[str, Any]:
        """The device's outbound messages for ``ref`` after ``cursor`` (waiting up to ``wait``
        seconds for the first): ``{"cursor", "messages", "missed", "terminated"}``. Raises
        BadRequest / DeviceRefused as :meth:`send`."""
        conn = await self._device(ref, device, device_class)
        conn.last_used = time.monotonic()
        messages, new_cursor, missed = conn.since(cursor)
        if not messages and wait > 0 and conn.terminated is None:
            await conn.wait(wait)
            conn.last_used = time.monotonic()
            messages, new_cursor, missed = conn.since(cursor)
        terminated = None
        if conn.terminated is not None:
            terminated = {"reason": conn.terminated[0], "reconnect": conn.terminated[1]}
            self._forget(conn, "terminated")
        return {"cursor": new_cursor, "messages": messages, "missed": missed, "terminated": terminated}

    async def _body(self, request: web.Request) -> tuple[str, bytes]:
        raw = await request.read()
        if len(raw) > self.config.max_frame_bytes:
            raise BadRequest(413, "too_big", f"body over {self.config.max_frame_bytes} bytes")
        if request.content_type == MSGPACK:
            try:
                body = msgpack.unpackb(raw, raw=False, strict_map_key=True)
            except Exception:
                raise BadRequest(400, "malformed", "body is not msgpack") from None
        elif request.content_type in ("application/json", ""):
            body = parse_json(raw, "body")
        else:
            raise BadRequest(415, "unsupported_media_type", "send application/json or application/msgpack")
        if not isinstance(body, dict) or set(body) - {"message_id", "payload"}:
            raise BadRequest(400, "malformed", "body must be a map with message_id and payload only")
        return message_of(body)

    # ------------------------------------------------------------------ device connections
    async def _device(self, ref: EntityRef, device: str, device_class: str) -> DeviceConnection:
        cid = self.connection_id(device_class, device)
        held = self.registry.get(ref, cid)
        if isinstance(held, DeviceConnection) and held.terminated is None:
            return held
        pending = self._connecting.get((ref, cid))
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[DeviceConnection] = asyncio.get_running_loop().create_future()
        self._connecting[(ref, cid)] = future
        try:
            conn = await self._connect(ref, cid, device, device_class)
            future.set_result(conn)
            return conn
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            del self._connecting[(ref, cid)]

    async def _connect(self, ref: EntityRef, cid: str, device: str, device_class: str) -> DeviceConnection:
        claims = {"sub": device_subject(device_class, device), "role": device_class,
                  "device_class": device_class, "auth": "network"}
        conn = DeviceConnection(ref, cid, claims, self.config.internal_buffer)
        if isinstance(self.registry.get(ref, cid), DeviceConnection):
            self.registry.remove(self.registry.get(ref, cid))  # type: ignore[arg-type]
        if self.registry.add(conn) is not None:
            raise DeviceRefused("connection ID in use")
        try:
            connect = Connect(f"connect-{cid}-{uuid.uuid4().hex}", time.time(), cid, claims)
            conn.session = connect.message_id
            reply = await self.transport.ask(ref, connect, self.config.connect_timeout_s)
        except Exception as exc:
            self.registry.remove(conn)
            raise BadRequest(503, "unavailable", str(exc)[:200]) from None
        if not reply.ok:
            self.registry.remove(conn)
            if reply.retryable:  # no owner yet, a shard moving: the device retries (503), it was not refused
                raise BadRequest(503, reply.code, reply.reason or reply.code)
            raise DeviceRefused(reply.reason or reply.code)
        conn.accepted = True
        self._devices.add(conn)
        self.metrics.device_connections.inc()
        return conn

    def _forget(self, conn: DeviceConnection, reason: str) -> None:
        self.registry.remove(conn)
        if conn in self._devices:
            self._devices.discard(conn)
            self.metrics.device_connections.dec()
            self.transport.send(conn.ref, Terminated(f"terminated-{uuid.uuid4().hex}", time.time(), conn.cid, reason,
                                                     conn.session))

    async def _sweep_forever(self) -> None:
        idle = self.config.internal_idle_s
        while True:
            await asyncio.sleep(min(5.0, idle / 4))
            cutoff = time.monotonic() - idle
            for conn in list(self._devices):
                if conn.last_used < cutoff:
                    self._forget(conn, "idle")


def device_secret(config: EdgeConfig) -> bytes:
    """The device secret from ``device_secret_file``; in dev mode (dev tokens on, no file) a
    random one per process. Raises EdgeConfigurationError when it is missing or short."""
    if not config.device_secret_file:
        if config.dev_tokens or not (config.internal_networks or config.serial_ports):
            return secrets.token_bytes(MIN_SECRET_BYTES)
        raise EdgeConfigurationError("XPLATFORM_EDGE_DEVICE_SECRET_FILE is required with device networks or serial ports")
    try:
        secret = read_secret(config.device_secret_file, "XPLATFORM_EDGE_DEVICE_SECRET_FILE")
    except ConfigurationError as exc:
        raise EdgeConfigurationError(str(exc)) from None
    return secret


def parse_json(raw: bytes, what: str) -> Any:
    """``raw`` as JSON; BadRequest ``malformed`` when it is not (or nests deeper than Python
    parses, or holds ``NaN``/``Infinity``, which are not JSON)."""
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise BadRequest(400, "malformed", f"{what} is not JSON (or nested too deep, or NaN/Infinity)") from None


def message_of(body: Mapping[str, Any]) -> tuple[str, bytes]:
    """A device message's ``(message_id, payload as msgpack)`` from its decoded ``body``;
    BadRequest ``bad_message_id`` / ``malformed`` / ``bad_payload`` when it cannot be one."""
    message_id = body.get("message_id")
    if not isinstance(message_id, str) or not 0 < len(message_id) <= protocol.MAX_MESSAGE_ID:
        raise BadRequest(400, "bad_message_id", "message_id must be a string of 1-64 characters")
    if "payload" not in body:
        raise BadRequest(400, "malformed", "payload is missing")
    payload = body["payload"]
    if isinstance(payload, bytes):
        return message_id, payload
    try:
        return message_id, msgpack.packb(payload, use_bin_type=True)
    except (ValueError, OverflowError, TypeError, RecursionError):
        raise BadRequest(400, "bad_payload", "payload cannot be carried as msgpack "
                                             "(integers must be within -2^63..2^64-1)") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _number(raw: str, kind: type, name: str) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        raise BadRequest(400, f"bad_{name}", f"{name} must be a number") from None
    if value < 0 or value != value:
        raise BadRequest(400, f"bad_{name}", f"{name} must not be negative")
    return value


def json_default(value: Any) -> Any:
    """What JSON cannot carry, as answers show it: sets and tuples as lists, bytes as hex, the rest as text."""
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _respond(request: web.Request, status: int, body: dict[str, Any]) -> web.Response:
    if MSGPACK in request.headers.get("Accept", "") or request.content_type == MSGPACK:
        return web.Response(status=status, body=msgpack.packb(body, default=json_default, use_bin_type=True),
                            content_type=MSGPACK)
    return web.Response(status=status, text=json.dumps(body, default=json_default), content_type="application/json")


def device_subject(device_class: str, device: str) -> str:
    """``device:<class>:<id>``. One subject per (class, ID) pair: a class never holds ``:``
    (``edge.config.DEVICE_CLASS``, checked at start), so the class is what comes before the
    first ``:`` and the ID (which may hold ``:``, e.g. a MAC address) all after it."""
    return f"{DEVICE_SUB_PREFIX}{device_class}:{device}"


def _error(status: int, error: str, reason: str, retryable: bool = False) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error": {"code": error, "reason": reason, "retryable": retryable}}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


INTERNAL_EDGE_KEY = web.AppKey("xplatform_internal_edge", InternalEdge)


def add_internal_edge(app: web.Application, edge: InternalEdge) -> None:
    """Mount ``edge`` on ``app`` (routes + cleanup-context lifecycle)."""
    app[INTERNAL_EDGE_KEY] = edge
    app.add_routes(edge.routes())

    async def lifecycle(app: web.Application) -> Any:
        await edge.start()
        yield
        await edge.stop()

    app.cleanup_ctx.append(lifecycle)
