"""The device end of a serial line in tests: the master side of a pseudo-terminal pair whose
slave side an edge opens as its serial port. Frames are encoded here as edge/PROTOCOL.md
"Devices on a serial line" describes them, not with the edge's own codec."""

from __future__ import annotations

import asyncio
import json
import os
import zlib
from typing import Any


def frame(body: Any) -> bytes:
    data = json.dumps(body).encode()
    return data + b"\t" + f"{zlib.crc32(data):08x}".encode() + b"\n"


class SerialDevice:
    """The device end of the line: the pty's master."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def write(self, raw: bytes) -> None:
        os.write(self.fd, raw)

    async def receive(self) -> dict[str, Any]:
        """The next frame from the edge, its checksum checked."""
        loop = asyncio.get_running_loop()
        while b"\n" not in self.buffer:
            readable = loop.create_future()
            loop.add_reader(self.fd, lambda: readable.done() or readable.set_result(None))
            try:
                await asyncio.wait_for(readable, 10)
            finally:
                loop.remove_reader(self.fd)
            self.buffer += os.read(self.fd, 65536)
        line, _, self.buffer = self.buffer.partition(b"\n")
        data, _, checksum = line.rpartition(b"\t")
        assert int(checksum, 16) == zlib.crc32(data), line
        return json.loads(data)  # type: ignore[no-any-return]

    async def ask(self, body: Any = None, raw: bytes | None = None) -> dict[str, Any]:
        self.write(raw if raw is not None else frame(body))
        return await self.receive()
