"""State proxies against a real HTTP primary (tests/support/primary.py: an aiohttp server on
a free port), on the one-process platform with its SQLite store: the HTTP connector, the
runtime running calls beside the entities, and the proxy's rules end to end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import pytest

from domain import ClientMessage, Connect, EntityRef, Reply
from domain.effects import Send, ToConnection
from domain.stock import StockLevel
from infrastructure.errors import ConfigurationError, PrimaryRefusedCall, PrimaryUnreachable
from infrastructure.proxies.breaker import CircuitBreaker
from infrastructure.proxies.http import HttpConnector, HttpSessions
from infrastructure.settings import Settings
from ops.wiring.dev import Platform, build_platform
from ops.wiring.proxies import parse_primaries
from tests.support.entities import Counter
from tests.support.primary import Warehouse
from tests.support.proxies import PatientStock, QuickStock

GATEWAY = {"sub": "device:warehouse:gw1", "role": "warehouse", "device_class": "warehouse", "auth": "network"}
CLERK = {"sub": "carl", "role": "clerk"}
VIEWER = {"sub": "vic", "role": "viewer"}
SKU = EntityRef("StockLevel", "sku-1")
ENTITIES = (StockLevel, QuickStock, PatientStock, Counter)


class Results:
    """Outbound sink: the ``proxy_result`` messages pushed to each connection."""

    def __init__(self) -> None:
        self.by_connection: dict[str, list[dict[str, Any]]] = {}

    def publish(self, source: EntityRef, effect: Any) -> None:
        if isinstance(effect, Send) and isinstance(effect.target, ToConnection) and \
                isinstance(effect.payload, dict) and effect.payload.get("type") == "proxy_result":
            self.by_connection.setdefault(effect.target.connection_id, []).append(effect.payload)

    async def next(self, connection_id: str, count: int = 1) -> list[dict[str, Any]]:
        await until(lambda: len(self.by_connection.get(connection_id, [])) >= count)
        return self.by_connection[connection_id]


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def settings_for(tmp_path: Any, url: str, **overrides: Any) -> Settings:
    primaries = f"StockLevel={url},QuickStock={url},PatientStock={url}"
    values: dict[str, Any] = {"proxy_retries": 2, "proxy_retry_backoff_s": 0.01, "proxy_breaker_failures": 3,
                              "proxy_breaker_open_s": 600.0, **overrides}
    return Settings(store="sqlite", data_dir=str(tmp_path), proxy_primaries=primaries, **values)


def run(tmp_path: Any, scenario: Callable[[Platform, Warehouse, Results], Awaitable[None]],
        warehouse: Warehouse | None = None, **overrides: Any) -> None:
    async def main() -> None:
        async with warehouse or Warehouse() as primary:
            async with build_platform(settings_for(tmp_path, primary.url, **overrides), entities=ENTITIES) as p:
                results = Results()
                p.transport.subscribe(results)
                await scenario(p, primary, results)

    asyncio.run(main())


async def connect(p: Platform, ref: EntityRef, cid: str, claims: dict[str, Any]) -> Reply:
    reply = await p.transport.ask(ref, Connect(f"connect-{cid}-{time.time_ns()}", time.time(), cid, claims))
    assert reply.ok, reply
    return reply


async def send(p: Platform, ref: EntityRef, cid: str, payload: dict[str, Any], mid: str | None = None) -> Reply:
    return await p.transport.ask(ref, ClientMessage(mid or f"m-{time.time_ns()}", time.time(), cid,
                                                    msgpack.packb(payload)))


def count(p: Platform, ref: EntityRef, event: str) -> int:
    return sum(1 for e in p.journal.read(ref.stream_id) if e.topic.endswith(f".{event}"))


# ---------------------------------------------------------------------------- pull and push
def test_pull_reads_the_primary_and_out_of_order_or_duplicate_pushes_change_nothing(tmp_path: Any) -> None:
    async def scenario(p: Platform, primary: Warehouse, results: Results) -> None:
        primary.level("sku-1", 10)
        await connect(p, SKU, "c-vic", VIEWER)
        await connect(p, SKU, "c-gw", GATEWAY)
        pending = await send(p, SKU, "c-vic", {"type": "pull"})
        assert pending.payload["status"] == "pending"
        [answer] = await results.next("c-vic")
        assert answer["ok"] and answer["last_known"]["state"] == {"on_hand": 10, "reserved": 0}
        assert answer["last_known"]["version"] == 1 and answer["last_known"]["etag"] == '"sku-1-1"'
        applied = []
        for version, on_hand in ((5, 50), (3, 30), (5, 50), (4, 40)):
            reply = await send(p, SKU, "c-gw", {"type": "push", "state": {"on_hand": on_hand, "reserved": 0},
                                                "version": version})
            applied.append(reply.payload["applied"])
        assert applied == [True, False, False, False]
        assert count(p, SKU, "RemoteStateReceived") == 2  # the pull and push 5: nothing else stored
        read = await send(p, SKU, "c-vic", {"type": "read"})
        assert read.payload["last_known"]["state"]["on_hand"] == 50 and read.payload["last_known"]["version"] == 5

    run(tmp_path, scenario)


def test_primary_down_pull_fails_typed_with_last_known_state_retries_then_the_breaker_opens(tmp_path: Any) -> None:
    async def scenario(p: Platform, primary: Warehouse, results: Results) -> None:
        primary.level("sku-1", 7)
        await connect(p, SKU, "c-vic", VIEWER)
        await send(p, SKU, "c-vic", {"type": "pull"})
        await results.next("c-vic")
        primary.down = True
        primary.log.clear()
        for n in range(1, 4):  # breaker_failures = 3 failed calls, each a GET and 2 retries
            await send(p, SKU, "c-vic", {"type": "pull"})
            answer = (await results.next("c-vic", 1 + n))[-1]
            assert not answer["ok"] and answer["error"]["code"] == "primary_unavailable"
            assert answer["last_known"]["state"] == {"on_hand": 7, "reserved": 0}
            assert answer["last_known"]["age"] >= 0
        assert len(primary.log) == 9  # idempotent GETs retried twice each
        await send(p, SKU, "c-vic", {"type": "pull"})
        answer = (await results.next("c-vic", 5))[-1]
        assert answer["error"]["code"] == "circuit_open" and len(primary.log) == 9  # not called at all
        text = p.node.metrics.exposition().decode()
        assert 'xplatform_proxy_circuit_state{category="StockLevel"} 1.0' in text
        assert 'xplatform_proxy_circuit_opened_total{category="StockLevel"} 1.0' in text
        assert 'xplatform_proxy_calls_total{category="StockLevel",kind="pull",outcome="circuit_open"} 1.0' in text

    run(tmp_path, scenario)


def test_slow_primary_blocks_no_other_entity_and_the_proxy_answers_reads_meanwhile(tmp_path: Any) -> None:
    async def scenario(p: Platform, primary: Warehouse, results: Results) -> None:
        proxy = EntityRef("PatientStock", "sku-1")  # waits for its primary as long as the test holds it
        primary.level("sku-1", 3)
        await connect(p, proxy, "c-vic", VIEWER)
        primary.gate = asyncio.Event()  # the primary answers nothing until released
        await send(p, proxy, "c-vic", {"type": "pull"})
        await until(lambda: len(primary.log) == 1)
        counters = [EntityRef("Counter", f"c{i}") for i in range(20)]
        for ref in counters:
            await connect(p, ref, "c1", {"sub": "u1"})
        replies = await asyncio.gather(*(send(p, ref, "c1", {"type": "add", "n": 1}) for ref in counters))
        assert [r.payload for r in replies] == [1] * 20  # every other entity answered while the primary hangs
        read = await send(p, proxy, "c-vic", {"type": "read"})
        assert read.ok and read.payload["status"] == "ok"  # and the proxy itself answers reads
        assert "c-vic" not in results.by_connection  # the pull is still in flight
        primary.gate.set()
        [answer] = await results.next("c-vic")
        assert answer["ok"] and answer["last_known"]["state"]["on_hand"] == 3

    run(tmp_path, scenario, proxy_request_timeout_s=120.0)


def test_a_primary_slower_than_the_timeout_gives_primary_timeout(tmp_path: Any) -> None:
    async def scenario(p: Platform, primary: Warehouse, results: Results) -> None:
        ref = EntityRef("QuickStock", "sku-1")
        await connect(p, ref, "c-vic", VIEWER)
        primary.gate = asyncio.Event()
        await send(p, ref, "c-vic", {"type": "pull"})
        [answer] = await results.next("c-vic")
        assert not answer["ok"] and answer["error"]["code"] == "primary_timeout"
        assert answer["last_known"]["state"] is None and p.node.resident(ref).calls == {}  # type: ignore[union-attr]
        text = p.node.metrics.exposition().decode()
        assert 'xplatform_proxy_calls_total{category="QuickStock",kind="pull",outcome="primary_timeout"} 1.0' in text

    run(tmp_path, scenario)


# ---------------------------------------------------------------------------- command + pull
def test_command_and_pull_is_atomic_under_concurrent_messages_to_the_proxy(tmp_path: Any) -> None:
    async def scenario(p: Platform, primary: Warehouse, results: Results) -> None:
        primary.level("sku-1", 100)
        for cid, claims in (("c-carl", CLERK), ("c-vic", VIEWER), ("c-gw", GATEWAY)):
            await connect(p, SKU, cid, claims)
        primary.gate = asyncio.Event()
        first = await send(p, SKU, "c-carl", {"type": "command", "command": {"op": "reserve", "qty": 2}}, mid="a")
        assert first.payload["status"] == "pending"
        await until(lambda: len(primary.log) == 1)
        # everything else that arrives while the command is at the primary
        others = await asyncio.gather(
            send(p, SKU, "c-carl", {"type": "command", "command": {"op": "reserve", "qty": 5}}, mid="b"),
            send(p, SKU, "c-vic", {"type": "pull"}),
            send(p, SKU, "c-vic", {"type": "read"}),
            send(p, SKU, "c-gw", {"type": "push", "state": {"on_hand": 100, "reserved": 0}, "version": 1}),
            send(p, SKU, "c-vic", {"type": "pull"}))
        assert others[0].code == "proxy_busy" and others[0].retryable
        assert [r.ok for r in others[1:]] == [True] * 4
        primary.gate.set()
        [carl] = await results.next("c-carl")
        assert carl["ok"] and carl["last_known"]["state"] == {"on_hand": 100, "reserved": 2}
        vic = await results.next("c-vic", 1)
        assert vic[0]["last_known"]["state"]["reserved"] == 2  # the joined pulls got the state after the command
        # (a refusal is remembered for its message ID: the command is sent again as a new message)
        again = await send(p, SKU, "c-carl", {"type": "command", "command": {"op": "reserve", "qty": 5}}, mid="c")
        assert again.ok
        await results.next("c-carl", 2)
        methods = [(method, key is not None) for method, _sku, key in primary.log]
        assert methods == [("POST", True), ("GET", False), ("POST", True), ("GET", False)]  # nothing in between
        assert primary.log[0][2] != primary.log[2][2] and len(set(primary.applied)) == 2

    run(tmp_path, scenario)


def test_a_command_whose_answer_was_lost_is_resent_with_its_key_and_applied_once(tmp_path: Any) -> None:
    """The node stops mid-call (the answer never reaches it); the next one finds the call in
    the proxy's stored state, its deadline timer re-sends it with the same key, and the
    primary, honouring keys, applies it once."""
    ref = EntityRef("QuickStock", "sku-9")

    async def main() -> None:
        async with Warehouse(honour_keys=True) as primary:
            primary.level("sku-9", 10)
            primary.hold_after_apply = asyncio.Event()
            settings = settings_for(tmp_path, primary.url)
            async with build_platform(settings, entities=ENTITIES) as first:
                await connect(first, ref, "c-carl", CLERK)
                await send(first, ref, "c-carl", {"type": "command", "command": {"op": "reserve", "qty": 4}}, mid="x")
                await until(lambda: len(primary.applied) == 1)  # applied; its answer is held back
            primary.hold_after_apply.set()
            primary.hold_after_apply = None
            async with build_platform(settings, entities=ENTITIES) as second:
                results = Results()
                second.transport.subscribe(results)
                read = await send(second, ref, "c-carl", {"type": "read"})  # activates it: its timers re-arm
                assert read.payload["status"] == "ok"
                [answer] = await results.next("c-carl")
                assert answer["ok"] and answer["last_known"]["state"] == {"on_hand": 10, "reserved": 4}
            posts = [key for method, _sku, key in primary.log if method == "POST"]
            assert len(posts) == 2 and posts[0] == posts[1]  # sent twice, same key
            assert primary.applied == [posts[0]] and primary.levels["sku-9"]["reserved"] == 4  # applied once

    asyncio.run(main())


# ---------------------------------------------------------------------------- the HTTP connector alone
def test_http_connector_never_retries_commands_and_a_refusal_does_not_trip_the_breaker() -> None:
    async def main() -> None:
        async with Warehouse() as primary:
            sessions = HttpSessions()
            states: list[str] = []
            breaker = CircuitBreaker(2, 600.0, on_change=states.append)
            connector = HttpConnector(primary.url, sessions, request_timeout_s=10, retries=3, backoff_s=0.0,
                                      breaker=breaker)
            ref = EntityRef("StockLevel", "sku-1")
            try:
                for _ in range(3):  # refusals are answers: the breaker stays closed
                    try:
                        await connector.command(ref, {"op": "steal"}, "k-1")
                    except PrimaryRefusedCall:
                        pass
                    else:
                        raise AssertionError("a 400 must be refused")
                assert breaker.state == "closed" and states == []
                primary.down = True
                primary.log.clear()
                try:
                    await connector.command(ref, {"op": "reserve", "qty": 1}, "k-2")
                except PrimaryUnreachable:
                    pass
                assert [m for m, _s, _k in primary.log] == ["POST"]  # a command is never retried here
                try:
                    await connector.pull(ref)
                except PrimaryUnreachable:
                    pass
                assert [m for m, _s, _k in primary.log] == ["POST"] + ["GET"] * 4  # a pull is: 1 + 3 retries
                assert states == ["open"]  # two failed calls in a row
            finally:
                await sessions.close()

    asyncio.run(main())


def test_bad_primaries_setting_is_refused_naming_it() -> None:
    assert parse_primaries(" A=http://h:1/x , B=https://h/y") == {"A": "http://h:1/x", "B": "https://h/y"}
    for bad in ("A", "A=ftp://h/x", "=http://h/x", "A=http://h/x,A=http://h/y", "A=http:///x"):
        with pytest.raises(ConfigurationError, match="XPLATFORM_PROXY_PRIMARIES"):
            parse_primaries(bad)
