"""A loopback TCP proxy owned by a test, to cut connections between two processes on demand.

It listens on a free 127.0.0.1 port and forwards every accepted connection to ``target``.
``cut()`` aborts every connection it carries, on both sides (RST, as a failing network
path or a restarted NAT/load balancer does); later connections are forwarded again. It runs
its own event loop in a daemon thread, so it keeps working while the test's loop is busy.
"""

from __future__ import annotations

import asyncio
import threading

from tests.support.servers import free_port


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.accepted = 0
        """Connections accepted since start (a reconnect after a cut adds to it)."""
        self.cut_connections = 0
        """Connections aborted by cut()."""
        self.to_swallow = 0
        """The next this many connections are accepted and never answered (nothing forwarded),
        as a server that accepts before it serves (a restarting ZooKeeper) does; see swallow()."""
        self.swallowed = 0
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> int:
        """Abort every connection now; returns how many were cut."""
        return self._call(self._cut())

    def swallow(self, connections: int) -> None:
        """Accept the next ``connections`` connections and answer nothing on them until they
        are closed (by their client, or by cut())."""
        self.to_swallow = connections

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.to_swallow > 0:
            self.to_swallow -= 1
            self.swallowed += 1
            pair = (client_writer, client_writer)
            self._pairs.add(pair)
            try:
                while await client_reader.read(65536):
                    pass  # read and drop: the peer hears nothing
            except (ConnectionError, OSError):
                pass
            finally:
                self._pairs.discard(pair)
                client_writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer, upstream_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(_pump(client_reader, upstream_writer), _pump(upstream_reader, client_writer))
        finally:
            self._pairs.discard(pair)
            for writer in pair:
                writer.transport.abort()

    async def _cut(self) -> int:
        pairs = list(self._pairs)
        for pair in pairs:
            for writer in pair:
                writer.transport.abort()
        self.cut_connections += len(pairs)
        return len(pairs)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()  # one direction ended: end the whole connection
