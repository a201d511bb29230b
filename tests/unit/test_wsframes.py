"""Batched frames are byte for byte what aiohttp's own writer sends, at every length class."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WSMsgType
from aiohttp._websocket.writer import WebSocketWriter

from edge.wsframes import binary_frames


class _Capture:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: Any) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False


class _Protocol:
    _paused = False


def test_binary_frames_match_aiohttp_at_each_length_boundary() -> None:
    payloads = [b"", b"x" * 125, b"y" * 126, b"z" * 65535, b"w" * 65536, bytes(range(256)) * 3]

    async def reference() -> bytes:
        transport = _Capture()
        writer = WebSocketWriter(_Protocol(), transport, use_mask=False)  # type: ignore[arg-type]
        for payload in payloads:
            await writer.send_frame(payload, WSMsgType.BINARY)
        return bytes(transport.data)

    assert binary_frames(payloads) == asyncio.run(reference())
    assert binary_frames([]) == b""
