"""The public edge: websocket connections of browsers and apps, per ``edge/PROTOCOL.md``.

``GET /ws/{category}/{entity_id}?cid=<uuid>`` upgrades to ``xplatform.v1``. Everything that
can be refused is refused BEFORE the 101, with an HTTP status and a JSON body (Origin 403,
address 400/404, connection ID 400, subprotocol 426, token 401, connection ID held by
another user 409, a connection cap 429, the edge full 503), so a refused client never
holds a socket and nothing reaches an entity. Caps and deadlines: :mod:`edge.limits` (per
user and address), :mod:`edge.sockets` (all sockets, the handshake deadline).

After the upgrade the edge asks the entity with ``Connect`` (the token's claims); WELCOME or
TERMINATE + 4403 follow. Each client MSG becomes a ``ClientMessage`` envelope (message ID,
edge timestamp, connection ID, the payload bytes unparsed); its REPLY leaves when the
entity's durable reply is back. The edge depends on the transport port only
(:mod:`infrastructure.transport.port`): ``ask``, ``send`` and ``subscribe``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Collection
from typing import Any

from aiohttp import web
from yarl import URL

from domain.errors import DomainError
from domain.messages import Connect
from domain.refs import EntityRef
from edge import protocol
from edge.auth import KeySet, Verifier
from edge.config import EdgeConfig, is_loopback
from edge.connection import WsConnection
from edge.errors import AuthError, LimitError
from edge.fanout import Fanout
from edge.hops import HopRecorder
from edge.limits import ClientLimits
from edge.metrics import EdgeMetrics
from edge.overload import InFlight
from edge.registry import Receiver, Registry
from edge.sockets import SocketGuard
from infrastructure.transport.port import Transport

log = logging.getLogger(__name__)


def build_verifier(config: EdgeConfig) -> Verifier:
    """The token verifier the settings describe (JWKS file/URL, algorithms, iss/aud, leeway)."""
    keys = KeySet(file=config.jwt_jwks_file, url=config.jwt_jwks_url, max_age_s=config.jwks_max_age_s,
                  refetch_interval_s=config.jwks_refetch_s)
    return Verifier(keys, config.jwt_algorithms, config.jwt_hs256_secret, config.token_issuer, config.token_audience,
                    config.jwt_leeway_s)


def bearer_token(request: web.Request) -> str | None:
    """The token from ``Authorization: Bearer`` or a ``bearer.<JWT>`` subprotocol value."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    for offered in _offered_protocols(request):
        if offered.startswith(protocol.BEARER_PREFIX):
            return offered[len(protocol.BEARER_PREFIX):] or None
    return None


def _offered_protocols(request: web.Request) -> list[str]:
    return [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]


class PublicEdge:
    """State of one public edge: registry, fan-out, metrics, verifier. See the module docstring."""

    def __init__(self, transport: Transport, config: EdgeConfig, *, categories: Collection[str] | None = None,
                 verifier: Verifier | None = None, metrics: EdgeMetrics | None = None) -> None:
        self.transport = transport
        self.config = config
        self.metrics = metrics or EdgeMetrics()
        self.registry = Registry()
        self.fanout = Fanout(self.registry, self.metrics, config.coalesce_tick_s)
        self.verifier = verifier or build_verifier(config)
        self.categories = frozenset(categories) if categories is not None else None
        self._heartbeat: asyncio.Task[None] | None = None
        self._counted: set[int] = set()
        self.load = InFlight(config.shed_after_ms)
        self.hops = HopRecorder(self.metrics, config.slow_message_ms, config.slow_log_interval_s)
        self._to_write: set[WsConnection] = set()
        self._write_scheduled = False
        self.metrics.oldest_in_flight.set_function(self.load.oldest_s)
        self.metrics.send_queue_bytes.set_function(self._queued_bytes)
        self.limits = ClientLimits(
            max_per_user=config.max_connections_per_user, max_per_address=config.max_connections_per_ip,
            user_rate_per_s=config.user_rate_per_s, user_rate_burst=config.user_rate_burst,
            address_rate_per_s=config.ip_rate_per_s, address_rate_burst=config.ip_rate_burst)
        self.sockets = SocketGuard(config.socket_cap, config.handshake_timeout_s,
                                   on_count=self.metrics.sockets.set, on_timeout=self.metrics.handshake_timeouts.inc)

    def _queued_bytes(self) -> float:
        return float(sum(c.queued_bytes for c in self.registry if isinstance(c, WsConnection)))

    # ------------------------------------------------------------------ writes
    def write_soon(self, conn: WsConnection) -> None:
        """``conn`` has frames queued: write them at the end of this loop iteration, in one
        callback for every such connection. Frames queued meanwhile go in the same socket
        write (a hot entity's publishes to 1,000 viewers), and no writer task is woken."""
        self._to_write.add(conn)
        if not self._write_scheduled:
            self._write_scheduled = True
            asyncio.get_running_loop().call_soon(self._write_all)

    def _write_all(self) -> None:
        self._write_scheduled = False
        conns, self._to_write = self._to_write, set()
        for conn in conns:
            conn.kick()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.transport.subscribe(self.fanout)
        self._heartbeat = asyncio.create_task(self._heartbeat_forever(), name="edge-heartbeat")

    async def shutdown(self) -> None:
        """Close every websocket with 1001 GOING_AWAY (clients reconnect elsewhere, same cid)."""
        sockets = [c for c in self.registry if isinstance(c, WsConnection)]
        for conn in sockets:
            conn.entity_reason = "edge_shutdown"
            conn.request_close(protocol.GOING_AWAY, "edge shutting down", "going_away", flush=False)
        deadline = time.monotonic() + self.config.close_timeout_s * 3
        while any(isinstance(c, WsConnection) for c in self.registry) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self.transport.unsubscribe(self.fanout)
        self.fanout.close()

    async def _heartbeat_forever(self) -> None:
        interval = self.config.heartbeat_s
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in self.registry:
                if not isinstance(conn, WsConnection) or not conn.accepted:
                    continue
                if now - conn.last_seen > interval * 2.5:
                    conn.entity_reason = "heartbeat_timeout"
                    conn.request_close(protocol.NORMAL, "heartbeat timeout", "heartbeat_timeout", flush=False)
                else:
                    conn.send_ping()

    def forget(self, conn: Receiver) -> None:
        """Unregister ``conn`` (if it still holds its slot) and count it out once."""
        self.registry.remove(conn)
        if id(conn) in self._counted:
            self._counted.discard(id(conn))
            self.metrics.ws_connections.dec()

    # ------------------------------------------------------------------ the upgrade
    def _refuse(self, status: int, error: str, reason: str) -> web.Response:
        self.metrics.refused[status].inc()
        return web.json_response({"error": error, "reason": reason}, status=status)

    def _origin_allowed(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser: Origin is a browser's statement, others authenticate by token
        allowed = self.config.allowed_origins
        if "*" in allowed or origin in allowed:
            return True
        if allowed:
            return False
        # None configured: the dev server's own page, i.e. a loopback origin on the port this
        # socket was accepted on. Never compared with Host: a DNS-rebinding page names itself there.
        sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
        try:
            url = URL(origin)
            return (url.scheme in ("http", "https") and is_loopback(url.host or "") and sockname is not None
                    and url.port == sockname[1])
        except (ValueError, TypeError):
            return False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /ws/{category}/{entity_id}?cid=``: refuse before the 101, or serve the socket."""
        if self.sockets.full:  # first: the cheapest answer while descriptors are scarce
            self.metrics.limit_refusals["sockets"].inc()
            refusal = self._refuse(503, "edge_full", "this edge holds as many connections as it may; try another "
                                   "or retry later")
            refusal.force_close()  # no keep-alive: the descriptor is what is short
            return refusal
        if not self._origin_allowed(request):
            return self._refuse(403, "origin_not_allowed", "Origin is not in the allow-list")
        try:
            ref = EntityRef(request.match_info["category"], request.match_info["entity_id"])
        except DomainError as exc:
            return self._refuse(400, "bad_address", exc.reason)
        if self.categories is not None and ref.category not in self.categories:
            return self._refuse(404, "unknown_category", f"no entity category {ref.category!r}")
        cid = request.query.get("cid")
        if not protocol.valid_connection_id(cid):
            return self._refuse(400, "bad_connection_id", "cid must be a UUID (36 characters, hyphenated)")
        assert cid is not None
        ws = web.WebSocketResponse(protocols=(protocol.SUBPROTOCOL,), max_msg_size=self.config.max_frame_bytes,
                                   autoping=False, timeout=self.config.close_timeout_s, compress=False)
        if protocol.SUBPROTOCOL not in _offered_protocols(request) or not ws.can_prepare(request).ok:
            return self._refuse(426, "subprotocol_required", f"offer the {protocol.SUBPROTOCOL} websocket subprotocol")
        try:
            claims = await self.verifier.verify(bearer_token(request))
        except AuthError as exc:
            self.metrics.auth_failures[exc.reason].inc()
            return self._refuse(401, exc.reason, exc.detail)
        try:
            lease = self.limits.admit(str(claims.get("sub")), request.remote or "")
        except LimitError as exc:
            self.metrics.limit_refusals[exc.scope].inc()
            return self._refuse(429, "too_many_connections", exc.reason)
        try:
            return await self._serve(request, ws, ref, cid, claims, lease.buckets)
        finally:
            self.limits.release(lease)

    async def _serve(self, request: web.Request, ws: web.WebSocketResponse, ref: EntityRef, cid: str,
                     claims: Any, budgets: Any) -> web.StreamResponse:
        held = self.registry.get(ref, cid)
        if held is not None and held.claims.get("sub") != claims.get("sub"):
            return self._refuse(409, "connection_id_in_use", "the connection ID is in use by another user")

        await ws.prepare(request)
        conn = WsConnection(self, ws, ref, cid, claims)
        conn.share_budgets(budgets)
        held = self.registry.add(conn)
        if held is not None:
            if held.claims.get("sub") != claims.get("sub"):  # lost a race to another user
                conn.superseded = True
                await ws.close(code=protocol.POLICY, message=b"connection ID in use")
                return ws
            # The same user again (the old socket is half-open, or a reconnect raced it):
            # the new socket takes over; the old one must not tell the entity it left.
            self.registry.replace(held, conn)
            if isinstance(held, WsConnection):
                held.superseded = True
            held.terminate("replaced by a newer connection with the same connection ID", False)
        self._counted.add(id(conn))
        self.metrics.ws_connections.inc()
        try:
            await self._connect(conn)
            if conn.accepted:
                await conn.read_loop()
        finally:
            await conn.finish()
        return ws

    async def _connect(self, conn: WsConnection) -> None:
        message = Connect(f"connect-{conn.cid}-{uuid.uuid4().hex}", time.time(), conn.cid, conn.claims)
        conn.session = message.message_id  # its Terminated names this session
        try:
            reply = await self.transport.ask(conn.ref, message, self.config.connect_timeout_s)
        except Exception as exc:  # TransportError: the entity may come back; the client retries
            log.warning("connect of %s to %s failed: %s", conn.cid, conn.ref, exc,
                        extra={"entity": str(conn.ref), "connection_id": conn.cid})
            conn.entity_reason = "unavailable"
            conn._enqueue(protocol.terminate("entity unavailable, retry", True), force=True)
            conn.request_close(protocol.TRY_AGAIN_LATER, "entity unavailable", "unavailable")
            return
        if conn.superseded:
            conn.request_close(protocol.NORMAL, "replaced", "superseded")
            return
        if not reply.ok:
            conn.entity_reason = "refused"
            conn._queue.clear()
            conn._enqueue(protocol.terminate(reply.reason or reply.code, False), force=True)
            conn.request_close(protocol.REFUSED, (reply.reason or reply.code)[:100], "refused")
            return
        conn.accept(reply.payload)
        exp = conn.claims.get("exp")
        if isinstance(exp, (int, float)):
            conn.expire_at(float(exp))

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/ws/{category}/{entity_id}", self.handle)]


EDGE_KEY = web.AppKey("xplatform_public_edge", PublicEdge)


def add_public_edge(app: web.Application, edge: PublicEdge) -> None:
    """Mount ``edge`` on ``app`` with its lifecycle: start in a cleanup context, GOING_AWAY on shutdown."""
    app[EDGE_KEY] = edge
    app.add_routes(edge.routes())
    app.middlewares.append(edge.sockets.middleware)

    async def lifecycle(app: web.Application) -> Any:
        await edge.start()
        yield
        await edge.stop()

    async def going_away(app: web.Application) -> None:
        await edge.shutdown()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(going_away)
