"""Backpressure: the edge stops reading a socket while max_in_flight of its messages await
replies, so a client far ahead of its entity is held back by TCP, not by server memory."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from domain.refs import EntityRef
from infrastructure.transport.port import callback_when_done
from tests.edge.harness import ROOM, Edge, eventually, gated_journal, run_edge


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

    def ask_callback(self, to: Any, message: Any, on_reply: Any, timeout: float | None = None) -> None:
        callback_when_done(self.ask_future(to, message, timeout), on_reply)

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


def test_a_long_fan_out_tick_does_not_shed(tmp_path: Path) -> None:
    """The loop kept busy 40 ms at a time (what a long 20 Hz fan-out tick does to it) while the
    entity itself keeps up: nothing is shed, every message is applied (default settings).
    The former signal, the loop's own lateness, refused these."""
    import time

    async def scenario(edge: Edge) -> None:
        client = await edge.client()
        loop = asyncio.get_running_loop()
        hogging = True

        def tick() -> None:
            time.sleep(0.04)  # a blocking step: the loop is 40 ms late for everything else
            if hogging:
                loop.call_later(0.001, tick)

        tick()
        try:
            replies = [await client.request({"type": "set", "value": i}) for i in range(1, 31)]
        finally:
            hogging = False
        assert [r.code for r in replies if not r.ok] == []
        assert edge.entity().value == 30
        assert edge.metric("xplatform_edge_shed_messages_total") == 0
        await client.close()

    run_edge(tmp_path, scenario)


def test_a_backed_up_entity_sheds_with_a_retryable_overloaded_reply_that_changes_nothing(tmp_path: Path) -> None:
    """The store stops answering: the entity's oldest message waits past shed_after_ms, so a
    new MSG to it is answered 'overloaded' (retryable) at once and never reaches it; another
    entity on the same (backed-up) node, with nothing old in flight, is not shed; once the
    store answers again the same message ID goes through."""
    async def scenario(edge: Edge) -> None:
        client = await edge.client(retries=0)  # the edge's answer itself (client retries: below)
        other = await edge.client("bob", ref=EntityRef("Room", "elsewhere"))
        assert (await client.request({"type": "set", "value": 1})).ok
        with gated_journal(edge) as gate:
            stuck = asyncio.create_task(client.request({"type": "set", "value": 2}, message_id="stuck"))
            await eventually(lambda: edge.public.load.behind(ROOM), what="the entity behind")
            assert edge.metric("xplatform_edge_oldest_in_flight_seconds") > edge.config.shed_after_ms / 1000
            refused = await client.request({"type": "set", "value": 3}, message_id="while-behind")
            assert not refused.ok and refused.code == "overloaded" and refused.retryable
            assert edge.metric("xplatform_edge_shed_messages_total") == 1
            elsewhere = asyncio.create_task(other.request({"type": "set", "value": 9}))  # not behind: queued
            await eventually(lambda: edge.public.load._open.get(EntityRef("Room", "elsewhere")), what="in flight")
            gate.set()
            assert (await stuck).ok and (await elsewhere).ok
        assert edge.event_types().count("Set") == 2  # the shed message was never applied
        again = await client.request({"type": "set", "value": 3}, message_id="while-behind")
        assert again.ok and edge.entity().value == 3
        assert edge.metric("xplatform_edge_shed_messages_total") == 1
        await client.close()
        await other.close()

    run_edge(tmp_path, scenario, shed_after_ms=100)


def test_shedding_can_be_turned_off(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        client = await edge.client()
        with gated_journal(edge) as gate:
            stuck = asyncio.create_task(client.request({"type": "set", "value": 2}))
            await asyncio.sleep(0.2)  # far past any bound: 0 means never shed
            assert not edge.public.load.behind(ROOM)
            late = asyncio.create_task(client.request({"type": "set", "value": 3}))
            await asyncio.sleep(0.05)
            gate.set()
            assert (await stuck).ok and (await late).ok  # the late one waited, was not refused
        assert edge.metric("xplatform_edge_shed_messages_total") == 0
        await client.close()

    run_edge(tmp_path, scenario, shed_after_ms=0)


def test_the_python_client_retries_overloaded_with_the_same_message_id(tmp_path: Path) -> None:
    """Refused 'overloaded' while the entity is behind, the client resends the same message ID
    after a jittered backoff until it goes through: applied once, answered ok."""
    async def scenario(edge: Edge) -> None:
        client = await edge.client(retries=100, retry_backoff_initial_s=0.01, retry_backoff_max_s=0.05)
        with gated_journal(edge) as gate:
            stuck = asyncio.create_task(client.request({"type": "set", "value": 1}))
            await eventually(lambda: edge.public.load.behind(ROOM), what="the entity behind")
            retried = asyncio.create_task(client.request({"type": "set", "value": 2}, message_id="bid-2"))
            await eventually(lambda: edge.metric("xplatform_edge_shed_messages_total") >= 3, what="retries")
            gate.set()
            assert (await stuck).ok
            reply = await retried
        assert reply.ok and reply.message_id == "bid-2" and edge.entity().value == 2
        assert edge.event_types().count("Set") == 2  # every refused attempt changed nothing, the last applied once
        await client.close()

    run_edge(tmp_path, scenario, shed_after_ms=50)


def test_the_python_client_gives_up_after_its_bounded_retries(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        client = await edge.client(retries=2, retry_backoff_initial_s=0.01, retry_backoff_max_s=0.02)
        with gated_journal(edge):
            stuck = asyncio.create_task(client.request({"type": "set", "value": 1}))
            await eventually(lambda: edge.public.load.behind(ROOM), what="the entity behind")
            reply = await client.request({"type": "set", "value": 2})
            assert not reply.ok and reply.code == "overloaded" and reply.retryable
            assert edge.metric("xplatform_edge_shed_messages_total") == 3  # the first try and 2 retries
        assert (await stuck).ok and edge.entity().value == 1
        await client.close()

    run_edge(tmp_path, scenario, shed_after_ms=50)


class ShardMovingFor:
    """The node's ownership while the entity's shard moves (a failover): the next ``refusals``
    messages find the shard not on this node, so the real node answers ``retry``; then it is."""

    def __init__(self, refusals: int) -> None:
        self.left = refusals

    def owns(self, ref: EntityRef) -> bool:
        if self.left:
            self.left -= 1
            return False
        return True

    def epoch(self, ref: EntityRef) -> int:
        return 0


class RecordingTransport(GatedTransport):
    """The real transport, noting the message ID of every ask (the gate is open)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.gate.set()
        self.ids: list[str] = []

    async def ask(self, to: Any, message: Any, timeout: float | None = None) -> Any:
        self.ids.append(message.message_id)
        return await super().ask(to, message, timeout)


def test_the_python_client_resends_retry_answers_with_the_same_message_id(tmp_path: Path) -> None:
    """During a failover the node answers ``retry`` (nothing applied): the client resends the
    same message ID after a jittered backoff until it goes through, applied once."""
    async def scenario(edge: Edge) -> None:
        client = await edge.client(retries=5, retry_backoff_initial_s=0.01, retry_backoff_max_s=0.05)
        bounded = await edge.client("bob", retries=2, retry_backoff_initial_s=0.01, retry_backoff_max_s=0.02)
        recording = RecordingTransport(edge.public.transport)
        edge.public.transport = recording
        edge.platform.node.ownership = ShardMovingFor(3)
        reply = await client.request({"type": "set", "value": 2}, message_id="bid-2")
        assert reply.ok and reply.message_id == "bid-2" and edge.entity().value == 2
        assert recording.ids == ["bid-2"] * 4  # three refused attempts, then the one applied
        assert edge.event_types().count("Set") == 1
        edge.platform.node.ownership = ShardMovingFor(10)
        refused = await bounded.request({"type": "set", "value": 3})
        assert not refused.ok and refused.code == "retry" and refused.retryable
        assert edge.platform.node.ownership.left == 10 - 3  # the first try and 2 retries, no more
        assert edge.entity().value == 2
        await client.close()
        await bounded.close()

    run_edge(tmp_path, scenario)


def test_an_ask_that_outlives_its_timeout_is_answered_unavailable(tmp_path: Path) -> None:
    """The store hangs past the edge's ask timeout: the client gets a retryable 'unavailable'
    (the asks' shared expiry, not a timer per message), and the write lands once the store
    answers (a resend with the same ID would then be answered from the entity's memory)."""
    async def scenario(edge: Edge) -> None:
        client = await edge.client(retries=0)
        with gated_journal(edge) as gate:
            reply = await client.request({"type": "set", "value": 7}, message_id="late")
            assert not reply.ok and reply.code == "unavailable" and reply.retryable
            gate.set()
        again = await client.request({"type": "set", "value": 7}, message_id="late")
        assert again.ok and edge.entity().value == 7 and edge.event_types().count("Set") == 1
        await client.close()

    run_edge(tmp_path, scenario, connect_timeout_s=0.3, shed_after_ms=0)
