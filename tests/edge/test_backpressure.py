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

    def ask_future(self, to: Any, message: Any, timeout: float | None = None) -> Any:
        return asyncio.ensure_future(self.ask(to, message, timeout))

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


def test_late_event_loop_sheds_messages_with_a_retryable_overloaded_reply(tmp_path: Path) -> None:
    """While the edge's loop runs late (here: a callback hogging it 40 ms at a time), a MSG
    is answered 'overloaded' (retryable) at once and never reaches the entity; once the loop
    is on time again the same message ID goes through."""
    import time

    async def scenario(edge: Edge) -> None:
        client = await edge.client()
        assert (await client.request({"type": "set", "value": 1})).ok
        loop = asyncio.get_running_loop()
        hogging = True

        def hog() -> None:
            time.sleep(0.04)  # a blocking step: the loop is 40 ms late for everything else
            if hogging:
                loop.call_later(0.001, hog)

        hog()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if edge.public.load.overloaded:
                break
        bound = edge.config.shed_lag_ms / 1000
        assert edge.public.load.overloaded and edge.public.load.lag_s > bound
        refused = await client.request({"type": "set", "value": 2}, message_id="while-late")
        assert not refused.ok and refused.code == "overloaded" and refused.retryable
        assert edge.entity().value == 1  # the entity never saw it
        assert edge.metric("xplatform_edge_shed_messages_total") == 1
        assert edge.metric("xplatform_edge_loop_lag_seconds") > bound
        hogging = False
        for _ in range(200):
            await asyncio.sleep(0.01)
            if not edge.public.load.overloaded:
                break
        again = await client.request({"type": "set", "value": 2}, message_id="while-late")
        assert again.ok and edge.entity().value == 2
        await client.close()

    run_edge(tmp_path, scenario)


def test_shedding_can_be_turned_off(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        time_now = asyncio.get_running_loop().time
        edge.public.load.lag_s = 1.0  # whatever the loop did, 0 means never shed
        assert not edge.public.load.overloaded
        client = await edge.client()
        started = time_now()
        assert (await client.request({"type": "set", "value": 3})).ok and time_now() - started < 5
        await client.close()

    run_edge(tmp_path, scenario, shed_lag_ms=0)
