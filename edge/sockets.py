"""The edge's listening socket: how many sockets it holds, how long a socket may take to be
answered, and how failed ``accept()`` calls are logged.

Why at the socket, not in a request handler: a socket that never sends a complete request
never reaches a handler, yet it holds a file descriptor. Measured before this module: 500
half-open sockets were kept forever, and at the process's open-file limit legitimate
upgrades and ``/metrics`` timed out while asyncio logged a traceback per failed
``accept()`` (8 MB of log in seconds). So:

- **handshake deadline** (``handshake_timeout_s``): a socket that has not delivered a
  complete request within the deadline is closed by the edge (a request that arrived may
  take as long as its handler needs: a device's long-poll, the upgrade's token check).
  After a plain HTTP answer (``/metrics``, a refusal) the next request on the same socket
  gets its own deadline, so keep-alive is not a way to hold a socket either; a websocket
  is exempt once its request arrived (its heartbeat takes over);
- **socket cap** (``max_sockets``, below the open-file limit): every accepted socket is
  counted, whatever its state; while more than ``max_sockets`` are open, websocket
  upgrades are refused with HTTP 503 ``edge_full`` before anything else is looked at
  (see :meth:`edge.public.PublicEdge.handle`), so the edge keeps descriptors to answer,
  to serve ``/metrics`` and to reach its store and cluster;
- **accept errors** (:class:`AcceptErrorLog`): at most one log line per interval, with
  the count, instead of one traceback per failed call.

:class:`SocketGuard` wraps the aiohttp server's protocol factory with a thin protocol that
forwards every call to aiohttp's own handler and only adds the count and the deadline.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from edge.errors import AddressInUse

log = logging.getLogger(__name__)

ACCEPT_ERROR_LOG_INTERVAL_S = 10.0
"""At most one line per 10 s about failed ``accept()`` calls: an operator learns that (and
how often) the edge is out of descriptors; a log disk does not fill at the loop's speed."""

_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class _Guarded(asyncio.Protocol):
    """One accepted socket: aiohttp's request handler behind it, counted, with a deadline."""

    __slots__ = ("deadline", "guard", "inner", "transport")

    def __init__(self, guard: SocketGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.BaseTransport | None = None
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.guard._opened(self)
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard._closed(self)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class SocketGuard:
    """Counts the sockets of a listener and enforces the handshake deadline (module docstring)."""

    def __init__(self, max_sockets: int, handshake_timeout_s: float, *,
                 on_count: Callable[[int], None] | None = None, on_timeout: Callable[[], None] | None = None) -> None:
        self.max_sockets = max_sockets
        self.handshake_timeout_s = handshake_timeout_s
        self.open = 0
        self.timed_out = 0
        self._on_count = on_count
        self._on_timeout = on_timeout

    @property
    def full(self) -> bool:
        """More sockets are open than the cap allows (the asking socket is one of them)."""
        return self.open > self.max_sockets

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` that wraps ``inner`` (aiohttp's server)."""
        return lambda: _Guarded(self, inner())

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """An aiohttp middleware: a complete request arrived, the deadline is met; after a
        plain HTTP answer the socket's next request gets a new one."""
        transport = request.transport
        proto = transport.get_protocol() if transport is not None else None
        if not isinstance(proto, _Guarded) or proto.guard is not self:
            return await handler(request)
        if proto.deadline is not None:
            proto.deadline.cancel()
            proto.deadline = None
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            return response
        finally:
            if not isinstance(response, web.WebSocketResponse) and proto.transport is not None \
                    and not proto.transport.is_closing():
                self._arm(proto)  # keep-alive: the next request gets its own deadline

    # ------------------------------------------------------------------ internals
    def _opened(self, proto: _Guarded) -> None:
        self.open += 1
        if self._on_count is not None:
            self._on_count(self.open)
        self._arm(proto)

    def _closed(self, proto: _Guarded) -> None:
        self.open -= 1
        if self._on_count is not None:
            self._on_count(self.open)
        if proto.deadline is not None:
            proto.deadline.cancel()
            proto.deadline = None

    def _arm(self, proto: _Guarded) -> None:
        if proto.deadline is not None:
            proto.deadline.cancel()
        proto.deadline = asyncio.get_running_loop().call_later(self.handshake_timeout_s, self._expire, proto)

    def _expire(self, proto: _Guarded) -> None:
        proto.deadline = None
        transport = proto.transport
        if transport is None or transport.is_closing():
            return
        self.timed_out += 1
        if self._on_timeout is not None:
            self._on_timeout()
        log.debug("socket not answered within %.1f s: closed", self.handshake_timeout_s)
        transport.close()


class AcceptErrorLog:
    """A loop exception handler: failed ``accept()`` calls are counted and logged at most
    once per ``interval_s`` (with how many there were); everything else goes to the handler
    that was installed before (or the loop's default)."""

    def __init__(self, interval_s: float = ACCEPT_ERROR_LOG_INTERVAL_S, *, logger: logging.Logger = log,
                 clock: Callable[[], float] = time.monotonic, on_error: Callable[[], None] | None = None,
                 previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], Any] | None = None) -> None:
        self.interval_s = interval_s
        self.logger = logger
        self.clock = clock
        self.on_error = on_error
        self.previous = previous
        self.total = 0
        self._unlogged = 0
        self._last_line = float("-inf")

    @classmethod
    def install(cls, loop: asyncio.AbstractEventLoop, **options: Any) -> AcceptErrorLog:
        """Make this the exception handler of ``loop`` (the previous one keeps other errors)."""
        handler = cls(previous=loop.get_exception_handler(), **options)
        loop.set_exception_handler(handler)
        return handler

    @staticmethod
    def is_accept_error(context: dict[str, Any]) -> bool:
        """asyncio's context for an ``accept()`` that failed for lack of descriptors or memory."""
        exc = context.get("exception")
        return (str(context.get("message", "")).startswith("socket.accept()")
                or (isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES))

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not self.is_accept_error(context):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.total += 1
        self._unlogged += 1
        if self.on_error is not None:
            self.on_error()
        now = self.clock()
        if now - self._last_line < self.interval_s:
            return
        self._last_line = now
        count, self._unlogged = self._unlogged, 0
        self.logger.error("accept() failed %d time(s) since the last report: %s (raise the open-file limit "
                          "`nofile` or lower XPLATFORM_EDGE_MAX_SOCKETS; see ops/RUNBOOK.md)",
                          count, context.get("exception") or context.get("message"))


def raise_open_file_limit() -> int | None:
    """Raise this process's soft open-file limit to its hard limit (as Go programs do at
    start) and return the new soft limit: the hard limit is the operator's decision, the
    soft default (often 1,024) is an accident that would cap an edge at ~800 clients."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return None if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft
    return hard


async def listen(runner: web.AppRunner, guard: SocketGuard | None, host: str, port: int, backlog: int = 128,
                 on_accept_error: Callable[[], None] | None = None, sock: socket.socket | None = None) -> asyncio.Server:
    """Serve ``runner``'s application on ``host:port`` (or on the already listening ``sock``,
    e.g. one inherited from ``xplatform run --workers``) behind ``guard`` (None: unguarded),
    with accept errors rate limited on this loop. Close the returned server before
    ``runner.cleanup()``. Raises :class:`~edge.errors.AddressInUse` when the address is taken."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop.get_exception_handler(), AcceptErrorLog):
        AcceptErrorLog.install(loop, on_error=on_accept_error)
    server = runner.server
    assert server is not None, "runner.setup() first"
    factory = guard.factory(server) if guard is not None else server
    if sock is not None:
        return await loop.create_server(factory, sock=sock, backlog=backlog)
    try:
        return await loop.create_server(factory, host, port, backlog=backlog, reuse_address=True)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise AddressInUse.at(host, port) from None
