"""Python asyncio client of the public edge (protocol ``xplatform.v1``), for tests, load tests
and Python apps.

    client = await connect("http://127.0.0.1:8080", "Lot", "vase", token)
    reply = await client.request({"type": "bid", "amount": 10})   # waits for REPLY (durable)
    async for update in client:                                   # PUSH payloads
        ...
    await client.close()                                          # BYE

    board = await read("http://127.0.0.1:8080", "auction_board", token, key="vase",
                       after=reply.position)                      # sees the bid (read-your-writes)

Why these behaviours: a client that reconnects must keep its connection ID (the entity
resumes it within its grace period), back off with jitter (a dropped edge must not be hit
by every client at the same millisecond), and resend unanswered messages with their
original IDs (the entity applies each ID once, so resending is safe). The heartbeat
measures the RTT and reports it to the edge (LATENCY frames), as the seed asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import msgpack

from edge import protocol
from edge.errors import ClientError, RequestFailed

log = logging.getLogger(__name__)

TokenSource = str | Callable[[], Awaitable[str]]
FINAL_CLOSE_CODES = {protocol.UNSUPPORTED_DATA, protocol.POLICY, protocol.TOO_BIG, protocol.REFUSED}
_END = object()


@dataclass(frozen=True)
class ClientReply:
    """A REPLY: ``ok`` with ``payload``, or an entity's error (code, reason, retryable).
    ``position``: the entity's position token (``<stream>@<version>``, PROTOCOL.md "Position
    tokens") when the entity answered; give it to :func:`read` (``after=``) to read your writes."""

    message_id: str
    ok: bool
    payload: Any = None
    code: str = ""
    reason: str = ""
    retryable: bool = False
    position: str | None = None


class Client:
    """One connection to one entity, reconnecting as needed. Use :func:`connect`."""

    def __init__(self, base_url: str | Sequence[str], category: str, entity_id: str, token: TokenSource,
                 cid: str | None = None, *,
                 session: aiohttp.ClientSession | None = None, token_in_protocol: bool = False,
                 heartbeat_s: float = 5.0, reconnect: bool = True, backoff_initial_s: float = 0.05,
                 backoff_max_s: float = 5.0, request_timeout_s: float = 10.0, origin: str | None = None,
                 retries: int = 5, retry_backoff_initial_s: float = 0.05,
                 retry_backoff_max_s: float = 2.0) -> None:
        bases = [base_url] if isinstance(base_url, str) else list(base_url)
        # Several edges: an edge going away (1001) or unreachable sends us to the next one,
        # with the same connection ID (the entity resumes us).
        self.urls = [f"{b.rstrip('/').replace('http', 'ws', 1)}/ws/{category}/{entity_id}" for b in bases]
        self._edge = 0
        self.cid = cid or str(uuid.uuid4())
        self.token = token
        self.token_in_protocol = token_in_protocol
        self.heartbeat_s = heartbeat_s
        self.reconnect = reconnect
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.request_timeout_s = request_timeout_s
        self.retries = retries
        """Resends of a request answered with a retryable refusal (0: none); see :meth:`request`."""
        self.retry_backoff_initial_s = retry_backoff_initial_s
        self.retry_backoff_max_s = retry_backoff_max_s
        self.origin = origin
        self.welcome: Any = None
        self.terminated: tuple[str, bool] | None = None
        self.close_code: int | None = None
        self.errors: list[tuple[str, str]] = []
        self.rtts_ms: deque[float] = deque(maxlen=1000)
        self.connects = 0
        self.connected = asyncio.Event()
        self._session = session
        self._own_session = session is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: dict[str, tuple[bytes, asyncio.Future[ClientReply]]] = {}
        self._pushes: asyncio.Queue[Any] = asyncio.Queue()
        self._closing = False
        self._done = False
        self._runner: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The edge this client uses now."""
        return self.urls[self._edge]

    def _next_edge(self) -> None:
        self._edge = (self._edge + 1) % len(self.urls)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> Client:
        """Connect (raises :class:`ClientError` if the edge refuses) and start reading."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            await self._open()
        except BaseException:
            await self._release_session()
            raise
        self._runner = asyncio.create_task(self._run(), name=f"xplatform-client-{self.cid}")
        if self.heartbeat_s > 0:
            self._heartbeat = asyncio.create_task(self._heartbeat_forever(), name=f"xplatform-heartbeat-{self.cid}")
        return self

    async def close(self) -> None:
        """Leave for good: BYE, close, stop the tasks."""
        self._closing = True
        ws = self._ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.send_bytes(protocol.pack([protocol.BYE]))
                await asyncio.wait_for(ws.close(), 2)
        for task in (self._heartbeat, self._runner):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._finish(RequestFailed("client closed"))
        await self._release_session()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _release_session(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def drop_for_test(self) -> None:
        """Simulate a network failure (abort the TCP connection); the client reconnects."""
        ws = self._ws
        if ws is not None and ws._response.connection is not None:
            transport = ws._response.connection.transport
            if transport is not None:
                transport.abort()

    # ------------------------------------------------------------------ API
    async def request(self, payload: Any, message_id: str | None = None, timeout: float | None = None) -> ClientReply:
        """Send a MSG (``payload``: bytes as is, anything else msgpack-encoded) and wait for
        its REPLY. Unanswered messages are resent after a reconnect with the same ID. A
        retryable refusal (``retryable`` true: ``overloaded`` while the entity is behind,
        ``retry`` while its shard moves or its node fails over, ``unavailable``; nothing was
        applied, or a resend is answered from the entity's memory) is resent with the same ID
        after a full-jitter exponential backoff, at most ``retries`` times and within
        ``timeout``; then that refusal is the answer (``PROTOCOL.md`` "Retryable refusals")."""
        if self._done:
            raise RequestFailed("client is closed")
        mid = message_id or uuid.uuid4().hex
        raw = payload if isinstance(payload, bytes) else msgpack.packb(payload, use_bin_type=True)
        frame = protocol.pack([protocol.MSG, mid, raw])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.request_timeout_s)
        attempt = 0
        try:
            while True:
                future: asyncio.Future[ClientReply] = loop.create_future()
                self._pending[mid] = (frame, future)
                await self._send(frame)
                try:
                    reply = await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    raise RequestFailed(f"no reply to {mid} within the timeout (resend with the same ID)") from None
                if reply.ok or not reply.retryable or attempt >= self.retries:
                    return reply
                delay = random.uniform(0, min(self.retry_backoff_max_s,
                                              self.retry_backoff_initial_s * 2 ** attempt))  # full jitter
                attempt += 1
                if loop.time() + delay >= deadline:
                    return reply
                self._pending.pop(mid, None)  # not resent by a reconnect while it waits
                await asyncio.sleep(delay)
                if self._done:
                    raise RequestFailed("client is closed")
        finally:
            self._pending.pop(mid, None)

    async def send_raw(self, data: bytes | str) -> None:
        """Send a frame as is (tests of the edge's handling of bad input)."""
        ws = self._ws
        assert ws is not None
        if isinstance(data, str):
            await ws.send_str(data)
        else:
            await ws.send_bytes(data)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        item = await self._pushes.get()
        if item is _END:
            self._pushes.put_nowait(_END)
            raise StopAsyncIteration
        return item

    async def next_push(self, timeout: float = 5.0) -> Any:
        """The next PUSH payload (raises TimeoutError)."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    # ------------------------------------------------------------------ internals
    async def _token(self) -> str:
        return self.token if isinstance(self.token, str) else await self.token()

    async def _open(self) -> None:
        assert self._session is not None
        token = await self._token()
        headers: dict[str, str] = {}
        protocols: tuple[str, ...] = (protocol.SUBPROTOCOL,)
        if self.token_in_protocol:
            protocols += (protocol.BEARER_PREFIX + token,)
        else:
            headers["Authorization"] = f"Bearer {token}"
        if self.origin:
            headers["Origin"] = self.origin
        try:
            ws = await self._session.ws_connect(f"{self.url}?cid={self.cid}", protocols=protocols, headers=headers,
                                                autoping=True, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as exc:
            raise ClientError(exc.status, "refused", exc.message) from None
        msg = await ws.receive(timeout=self.request_timeout_s)
        frame = _decode(msg)
        if frame is not None and frame[0] == protocol.WELCOME:
            self.welcome = frame[2]
            self._ws = ws
            self.connects += 1
            self.terminated = None
            self.connected.set()
            for raw, future in list(self._pending.values()):
                if not future.done():
                    await self._send(raw)
            return
        if frame is not None and frame[0] == protocol.TERMINATE:
            self.terminated = (frame[1], frame[2])
        with contextlib.suppress(Exception):
            await ws.receive(timeout=2)
        await ws.close()
        self.close_code = ws.close_code
        raise ClientError(ws.close_code or 0, "terminated", self.terminated[0] if self.terminated else "no welcome")

    async def _send(self, frame: bytes) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return  # resent after the reconnect
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_bytes(frame)

    async def _run(self) -> None:
        backoff = self.backoff_initial_s
        while True:
            await self._read()
            self.connected.clear()
            if self._closing or not self._may_reconnect():
                break
            if self.close_code == protocol.GOING_AWAY:
                self._next_edge()  # that edge is shutting down: use another one
            while not self._closing:
                await asyncio.sleep(random.uniform(0, backoff))  # full jitter
                backoff = min(self.backoff_max_s, backoff * 2)
                try:
                    await self._open()
                    backoff = self.backoff_initial_s
                    break
                except ClientError as exc:
                    if exc.status in (400, 401, 403, 404, 409, 426) and not (exc.status == 401 and callable(self.token)):
                        self._finish(exc)
                        return
                    if exc.status in FINAL_CLOSE_CODES:
                        self._finish(exc)
                        return
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    log.debug("reconnect of %s to %s failed: %s", self.cid, self.url, exc)
                    self._next_edge()
        self._finish(ClientError(self.close_code or 0, "closed",
                                 self.terminated[0] if self.terminated else "connection closed"))

    def _may_reconnect(self) -> bool:
        if not self.reconnect:
            return False
        if self.terminated is not None and not self.terminated[1]:
            return False
        if self.close_code in FINAL_CLOSE_CODES:
            return False
        if self.close_code == protocol.TOKEN_EXPIRED:
            return callable(self.token)  # only a token source can give a fresh token
        return True

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        while True:
            msg = await ws.receive()
            frame = _decode(msg)
            if frame is None:
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.ERROR):
                    break
                continue
            kind = frame[0]
            if kind == protocol.PUSH:
                self._pushes.put_nowait(frame[1])
            elif kind == protocol.REPLY:
                held = self._pending.get(frame[1])
                if held is not None and not held[1].done():
                    position = frame[4] if len(frame) > 4 and isinstance(frame[4], str) else None
                    if frame[2]:
                        held[1].set_result(ClientReply(frame[1], True, frame[3], position=position))
                    else:
                        e = frame[3] or {}
                        held[1].set_result(ClientReply(frame[1], False, None, e.get("code", ""), e.get("reason", ""),
                                                       bool(e.get("retryable")), position))
            elif kind == protocol.PONG:
                rtt = time.monotonic() * 1000 - float(frame[1])
                self.rtts_ms.append(rtt)
                await self._send(protocol.pack([protocol.LATENCY, round(rtt, 3)]))
            elif kind == protocol.TERMINATE:
                self.terminated = (frame[1], bool(frame[2]))
            elif kind == protocol.ERROR:
                self.errors.append((frame[1], frame[2]))
        with contextlib.suppress(Exception):
            await ws.close()
        self.close_code = ws.close_code

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self._send(protocol.pack([protocol.PING, time.monotonic() * 1000]))

    def _finish(self, error: Exception) -> None:
        if self._done:
            return
        self._done = True
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(error)
                future.exception()
        self._pushes.put_nowait(_END)


def _decode(msg: aiohttp.WSMessage) -> list[Any] | None:
    if msg.type is not aiohttp.WSMsgType.BINARY:
        return None
    try:
        frame = msgpack.unpackb(msg.data, raw=False)
    except Exception:
        return None
    return frame if isinstance(frame, list) and frame else None


async def read(base_url: str, projection: str, token: str, *, key: str | None = None,
               filters: Mapping[str, str | int] | None = None, limit: int | None = None,
               after: str | Sequence[str] | None = None, max_lag_ms: int | None = None, wait_ms: int | None = None,
               session: aiohttp.ClientSession | None = None) -> Any:
    """Read a read model through the edge's query API (PROTOCOL.md "Reading read models"):
    document ``key`` of ``projection`` (its JSON object), or without ``key`` the documents
    matching ``filters`` (``{"documents": [...], "more": bool}``). ``after``: position tokens
    of replies to wait for (read-your-writes); ``max_lag_ms``: bounded staleness. Raises
    :class:`ClientError` (status, error code, reason) for a refusal, e.g. 504 ``consistency_timeout``."""
    params: list[tuple[str, str]] = [(name, str(value)) for name, value in (filters or {}).items()]
    tokens = [after] if isinstance(after, str) else list(after or ())
    params += [("after", t) for t in tokens]
    params += [(name, str(value)) for name, value in (("limit", limit), ("max_lag_ms", max_lag_ms),
                                                       ("wait_ms", wait_ms)) if value is not None]
    url = f"{base_url.rstrip('/')}/read/{quote(projection, safe='')}"
    if key is not None:
        url += f"/{quote(key, safe='')}"
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        async with session.get(url, params=params, headers={"Authorization": f"Bearer {token}"}) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = {}
            if response.status != 200:
                raise ClientError(response.status, str(body.get("error", "")), str(body.get("reason", "")))
            return body["document"] if key is not None else body
    finally:
        if own:
            await session.close()


async def connect(base_url: str | Sequence[str], category: str, entity_id: str, token: TokenSource, cid: str | None = None,
                  **options: Any) -> Client:
    """Open a connection to entity ``category``/``entity_id`` (see :class:`Client` for options)."""
    return await Client(base_url, category, entity_id, token, cid, **options).start()
