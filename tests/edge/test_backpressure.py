"""Backpressure: the edge stops reading a socket while max_in_flight of its messages await
replies, so a client far ahead of its entity is held back by TCP, not by server memory."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.edge.harness import Edge, run_edge


class GatedTransport:
    """Delegates to the real transport, but holds every ask until the gate opens."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.most = 0

    async def ask(self, to: Any, message: Any, timeout: float | None = None) -> Any:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await self.gate.wait()
            return await self.inner.ask(to, message, timeout)
        finally:
            self.in_flight -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_edge_reads_no_further_than_max_in_flight(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        client = await edge.client()
        gated = GatedTransport(edge.public.transport)
        edge.public.transport = gated
        requests = [asyncio.create_task(client.request({"type": "set", "value": i})) for i in range(1, 21)]
        await asyncio.sleep(0.3)
        assert gated.in_flight == 4 and gated.most == 4  # the other 16 frames wait in the socket
        gated.gate.set()
        replies = await asyncio.gather(*requests)
        assert all(r.ok for r in replies) and gated.most == 4
        assert edge.entity().value == 20  # every message applied, in order
        await client.close()

    run_edge(tmp_path, scenario, max_in_flight=4)
