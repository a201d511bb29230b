"""One persistent TCP connection carrying envelopes (one lane between two processes).

A link has one reader task (frames → the handler, in order). Frames sent during one loop
iteration leave together, in order, in one socket write at the end of it (``call_soon``):
a group commit releases its replies and effects in one go, and one write per envelope cost
a system call each (~5 µs) - more than the envelope's encoding. A link whose buffer grows
past ``max_buffer`` is a peer that does not read: it is closed rather than let it hold
memory or delay anything else (at-most-once: senders see the failure and may retry by ID).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from infrastructure.transport.envelopes import (
    HEADER_BYTES,
    MAX_FRAME_BYTES,
    Envelope,
    EnvelopeError,
    frame,
    header_length,
    parse,
)

log = logging.getLogger(__name__)

Handler = Callable[["Link", Envelope], None]

READ_CHUNK = 64 * 1024
"""Most bytes handed over per read (~400 envelopes of a hot entity): after each chunk the
reader yields to the loop, so that a node that fell behind still runs its group commit's
completions, replies and other links between chunks instead of after a whole backlog."""


async def read_envelope(reader: asyncio.StreamReader, max_bytes: int = MAX_FRAME_BYTES) -> Envelope:
    """The next framed envelope; EnvelopeError for a malformed one or one longer than
    ``max_bytes`` (refused from its header, before its body is read), IncompleteReadError at EOF."""
    header = await reader.readexactly(HEADER_BYTES)
    return parse(await reader.readexactly(header_length(header, max_bytes)))


class Link:
    """A framed, persistent connection. See the module docstring."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str,
                 max_buffer: int = 16 * 1024 * 1024) -> None:
        self.reader = reader
        self.writer = writer
        self.name = name
        self.peer = ""  # node id, from its HELLO (authenticated by the handshake before the link starts)
        self.role = ""  # the peer's authenticated role: "edge" or "state"
        self.lane = "default"  # the lane the connecting side named in its HELLO
        self.max_buffer = max_buffer
        self.closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._written = 0
        """Bytes handed to the socket transport so far."""
        self._unsent_ends: deque[int] = deque()
        """End offsets (in ``_written``) of frames not yet fully sent: the queue depth in envelopes."""
        self._out: list[bytes] | None = None
        """Frames of this loop iteration, written together by :meth:`_flush`; None: none yet."""

    def start(self, handler: Handler, on_close: Callable[[Link], None] | None = None) -> None:
        self._task = asyncio.create_task(self._read_forever(handler, on_close), name=f"link-{self.name}")

    def send(self, envelope: Envelope) -> bool:
        """Queue one envelope; False when the link is closed or had to be closed."""
        return self.send_frame(frame(envelope))

    def send_frame(self, data: bytes) -> bool:
        """Queue an already encoded frame (one encoding for many links); it leaves with the
        other frames of this loop iteration. False when the link is closed."""
        if self.closed.is_set():
            return False
        out = self._out
        if out is None:
            self._out = [data]
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            out.append(data)
        return True

    def _flush(self) -> None:
        out, self._out = self._out, None
        if not out or self.closed.is_set():
            return
        transport = self.writer.transport
        if transport.get_write_buffer_size() > self.max_buffer:
            log.warning("link %s to %s: peer not reading (%d bytes buffered); closing", self.name, self.peer,
                        transport.get_write_buffer_size())
            self.close()
            return
        start = self._written
        data = out[0] if len(out) == 1 else b"".join(out)
        self.writer.write(data)
        self._written += len(data)
        if transport.get_write_buffer_size():
            end = start
            for frame_bytes in out:
                end += len(frame_bytes)
                self._unsent_ends.append(end)
        else:
            self._unsent_ends.clear()  # all sent at once (the common case: nothing to count)

    def queued(self) -> int:
        """Envelopes written but not yet (fully) sent: the socket buffer in messages. Exact,
        from the transport's buffered byte count and where each frame ends."""
        transport = self.writer.transport
        if self.closed.is_set() or transport.is_closing():
            return 0
        sent = self._written - transport.get_write_buffer_size()
        ends = self._unsent_ends
        while ends and ends[0] <= sent:
            ends.popleft()
        return len(ends)

    def close(self) -> None:
        if not self.closed.is_set():
            self._flush()  # what was sent before close() still leaves (the transport writes it out, then closes)
            self.closed.set()
            self.writer.close()
            if self._task is not None and self._task is not asyncio.current_task():
                self._task.cancel()

    async def _read_forever(self, handler: Handler, on_close: Callable[[Link], None] | None) -> None:
        """Read what the socket has (up to READ_CHUNK), hand over every complete frame in it,
        in order: one wait per chunk, not two per frame (at thousands of envelopes a second
        the per-frame waits cost more than the parsing)."""
        buffer = bytearray()
        try:
            while True:
                chunk = await self.reader.read(READ_CHUNK)
                if not chunk:
                    break  # peer went away
                buffer += chunk
                start, end = 0, len(buffer)
                while end - start >= HEADER_BYTES:
                    length = header_length(bytes(buffer[start:start + HEADER_BYTES]))
                    if end - start - HEADER_BYTES < length:
                        break
                    body = bytes(buffer[start + HEADER_BYTES:start + HEADER_BYTES + length])
                    start += HEADER_BYTES + length
                    handler(self, parse(body))
                    if self.closed.is_set():
                        return  # the handler closed us: nothing more from this peer is read
                del buffer[:start]
                await asyncio.sleep(0)  # the rest of the loop's work goes between chunks (READ_CHUNK)
        except ConnectionError:
            pass  # peer went away
        except EnvelopeError as exc:
            log.error("link %s from %s: %s; closing", self.name, self.peer or "?", exc)  # logged once: we close
        except asyncio.CancelledError:
            pass
        finally:
            self.closed.set()
            self.writer.close()
            if on_close is not None:
                on_close(self)
