"""State-node runtime figures on the embedded default (SQLite file, in-process transport).

    python -m loadtests.bench_runtime [--rate 2000] [--seconds 10] [--entities 1000000]

- ``reply_p50_ms`` / ``reply_p99_ms``: open-loop commands at ``--rate`` per second to 1,000
  entities (one event each); time from send to the reply, which leaves only when the
  event is durable.
- ``activation_ms``: median time to answer a message for an entity that is not in memory
  and has a snapshot plus a 100-event tail (load + replay + process + reply).
- ``bytes_per_entity``: RSS growth divided by ``--entities`` small entities of the presence
  sample (``domain.presence.UserState``, one per user) made resident through the runtime, each
  by its user's ``connect`` (the user comes online: its event is stored, the entity stays in
  memory with its accepted connection and the user's ``sub``).
- ``presence_changes_per_s``: then every one of those users sets a status (``set_status``
  away, one ``StatusSet`` event each, 2,000 in flight): messages per second over
  ``--entities`` different entities, each durable before its reply (group commit).
- ``bytes_per_entity_after_change``: RSS growth per entity after that round, when each
  ``UserState`` holds its own status and text (before it, both were class-level defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgpack
import psutil

from domain import ClientMessage, Connect, EntityRef, Inbound, Reply, handle
from domain.presence import UserState
from infrastructure.persistence import StreamWrite, new_mapper
from infrastructure.settings import Settings
from loadtests.common import emit, median, percentile
from loadtests.entities import Tally
from ops.wiring.dev import build_platform


async def reply_latency(settings: Settings, rate: float, seconds: float) -> tuple[float, float, float, int]:
    async with build_platform(settings, entities=[Tally]) as p:
        refs = [EntityRef("Tally", f"lat-{i}") for i in range(1000)]
        for ref in refs:
            await p.transport.ask(ref, Connect(uuid.uuid4().hex, time.time(), "bench", {"sub": "bench"}))
        payload = msgpack.packb({"type": "add", "n": 1})
        latencies: list[float] = []
        errors = 0
        total = int(rate * seconds)
        all_done = asyncio.get_running_loop().create_future()

        def sender(i: int) -> None:
            sent = time.perf_counter()

            def on_reply(reply: Reply) -> None:
                nonlocal errors
                latencies.append(time.perf_counter() - sent)
                errors += 0 if reply.ok else 1
                if len(latencies) == total and not all_done.done():
                    all_done.set_result(None)

            p.node.deliver(refs[i % len(refs)], ClientMessage(f"lat-{i}", time.time(), "bench", payload), on_reply)

        started = time.perf_counter()
        sent = 0
        while sent < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            while sent < due:
                sender(sent)
                sent += 1
            await asyncio.sleep(0.0005)
        achieved = total / (time.perf_counter() - started)
        await asyncio.wait_for(all_done, 30)
        return percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000, achieved, errors


async def activation(settings: Settings, count: int = 50, tail: int = 100) -> float:
    mapper = new_mapper()
    async with build_platform(settings, entities=[Tally]) as p:
        refs = [EntityRef("Tally", f"act-{uuid.uuid4().hex[:8]}-{i}") for i in range(count)]
        payload = msgpack.packb({"type": "add", "n": 1})
        for ref in refs:  # history written straight to the store: snapshot at 100, then a 100-event tail
            entity = Tally.blank(ref.entity_id)
            events = list(handle(entity, Connect("connect", 0.0, "x", {"sub": "x"})).events)
            while entity.version < 100 + tail:
                events.extend(handle(entity, ClientMessage(f"h{entity.version}", 0.0, "x", payload)).events)
                if entity.version == 100:
                    p.journal.save_snapshot(mapper.to_stored_event(Tally.Snapshot.take(entity)))
            stored = tuple(map(mapper.to_stored_event, events))
            assert p.journal.append([StreamWrite(ref.stream_id, 0, stored)]) == [None]
        timings = []
        read = msgpack.packb({"type": "read"})
        for ref in refs:
            started = time.perf_counter()
            reply = await p.transport.ask(ref, ClientMessage(uuid.uuid4().hex, time.time(), "x", read))
            timings.append(time.perf_counter() - started)
            assert reply.ok, reply
        return median(timings) * 1000


async def presence_at_scale(settings: Settings, entities: int) -> tuple[float, float, float]:
    """(bytes per online UserState, status changes per second, bytes per UserState after its change)."""
    async with build_platform(settings.with_(passivate_after_s=3600.0), entities=[UserState]) as p:
        process = psutil.Process()
        away = msgpack.packb({"type": "set_status", "status": "away", "text": "back soon"})

        def online(i: int) -> tuple[EntityRef, Connect]:
            user = f"u{i:07d}"
            return EntityRef("UserState", user), Connect(f"c{i}", time.time(), f"conn-{i}", {"sub": user})

        def change(i: int) -> tuple[EntityRef, ClientMessage]:
            return EntityRef("UserState", f"u{i:07d}"), ClientMessage(f"s{i}", time.time(), f"conn-{i}", away)

        gc.collect()
        before = process.memory_info().rss
        await _windowed(p.node, entities, online)
        await p.node.drain()
        gc.collect()
        resident = process.memory_info().rss
        assert len(p.node.cells) == entities, len(p.node.cells)
        started = time.perf_counter()
        await _windowed(p.node, entities, change)
        await p.node.drain()
        rate = entities / (time.perf_counter() - started)
        gc.collect()
        changed = process.memory_info().rss
        assert all(cell.entity.status == "away" for cell in p.node.cells.values())
        return (resident - before) / entities, rate, (changed - before) / entities


async def _windowed(node: Any, total: int, message: Callable[[int], tuple[EntityRef, Inbound]],
                    window: int = 2000) -> None:
    """Deliver ``message(i)`` for i in range(total), ``window`` in flight; every reply must be ok."""
    done = asyncio.get_running_loop().create_future()
    state = {"sent": 0, "acked": 0}

    def on_reply(reply: Reply) -> None:
        assert reply.ok, reply
        state["acked"] += 1
        if state["sent"] < total:
            send_one()
        elif state["acked"] == total and not done.done():
            done.set_result(None)

    def send_one() -> None:
        i = state["sent"]
        state["sent"] += 1
        node.deliver(*message(i), on_reply)

    for _ in range(min(window, total)):
        send_one()
    await done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--entities", type=int, default=1_000_000,
                        help="UserStates (presence sample) for the memory and status-change figures")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="xplatform-bench-") as data_dir:
        settings = Settings.from_env(store="sqlite", data_dir=data_dir)
        p50, p99, achieved, errors = asyncio.run(reply_latency(settings, args.rate, args.seconds))
        activation_ms = asyncio.run(activation(settings))
        per_entity, changes_per_s, per_entity_changed = asyncio.run(presence_at_scale(settings, args.entities))
    emit({
        "benchmark": "bench_runtime", "store": "sqlite", "rate": args.rate, "achieved_rate": round(achieved),
        "reply_p50_ms": round(p50, 3), "reply_p99_ms": round(p99, 3), "errors": errors,
        "activation_ms": round(activation_ms, 3), "entities": args.entities, "entity": "UserState",
        "bytes_per_entity": round(per_entity), "presence_changes_per_s": round(changes_per_s),
        "bytes_per_entity_after_change": round(per_entity_changed),
    })


if __name__ == "__main__":
    main()
