"""Durable events per second on a store: group commit vs one event per save, same run.

    python -m loadtests.bench_persistence [--store sqlite|postgres|memory|eventstoredb] [--events 40000]

- ``group_commit_events_per_s``: commands to 100 entities through the state node, each
  producing one event; up to ``--window`` commands in flight; time until every reply
  (released only when durable) arrived.
- ``hot_entity_events_per_s``: the same into ONE entity (pipelined processing).
- ``single_save_events_per_s``: one event per append, sequentially, straight into the
  journal: what a store does without group commit.

Runs in a fresh temporary data directory (SQLite) or the configured server (postgres:
``XPLATFORM_POSTGRES_*``; eventstoredb: ``EVENTSTOREDB_URI``, else the gRPC emulator is
started for the run, in a fresh stream namespace either way). Against the emulator the
absolute figures mean little (a Python test server); the group-commit / single-save ratio
is what carries over to a real server.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid

import msgpack
from eventsourcing.persistence import StoredEvent

from domain import ClientMessage, Connect, EntityRef, Reply
from infrastructure.persistence import StreamWrite, open_journal
from infrastructure.settings import Settings
from loadtests.common import emit, eventstoredb_for_benchmark
from loadtests.entities import Tally
from ops.wiring.dev import build_platform


async def _through_node(settings: Settings, entities: int, events: int, window: int) -> tuple[float, int]:
    async with build_platform(settings, entities=[Tally]) as p:
        prefix = uuid.uuid4().hex[:8]
        refs = [EntityRef("Tally", f"{prefix}-{i}") for i in range(entities)]
        for ref in refs:  # activate and connect first: measure steady state
            await p.transport.ask(ref, Connect(uuid.uuid4().hex, time.time(), "bench", {"sub": "bench"}))
        payload = msgpack.packb({"type": "add", "n": 1})
        done = asyncio.get_running_loop().create_future()
        state = {"sent": 0, "acked": 0, "errors": 0}

        def on_reply(reply: Reply) -> None:
            state["acked"] += 1
            if not reply.ok:
                state["errors"] += 1
            if state["sent"] < events:
                send_one()
            elif state["acked"] == events and not done.done():
                done.set_result(None)

        def send_one() -> None:
            i = state["sent"]
            state["sent"] += 1
            p.node.deliver(refs[i % entities], ClientMessage(f"m{i}", time.time(), "bench", payload), on_reply)

        started = time.perf_counter()
        for _ in range(min(window, events)):
            send_one()
        await done
        elapsed = time.perf_counter() - started
        return events / elapsed, state["errors"]


def _single_saves(settings: Settings, events: int) -> float:
    journal = open_journal(settings)
    stream = f"Tally-single-{uuid.uuid4().hex[:8]}"
    try:
        started = time.perf_counter()
        for version in range(1, events + 1):
            stored = StoredEvent(stream, version, "loadtests.entities:Tally.Added", msgpack.packb({"n": 1}))
            [error] = journal.append([StreamWrite(stream, version - 1, (stored,))])
            assert error is None, error
        return events / (time.perf_counter() - started)
    finally:
        journal.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="sqlite", choices=["sqlite", "postgres", "memory", "eventstoredb"])
    parser.add_argument("--events", type=int, default=40_000, help="events per group-commit phase")
    parser.add_argument("--single-events", type=int, default=2_000, help="events in the one-per-save phase")
    parser.add_argument("--entities", type=int, default=100)
    parser.add_argument("--window", type=int, default=2_000, help="commands in flight")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="xplatform-bench-") as data_dir, \
            eventstoredb_for_benchmark(args.store == "eventstoredb") as esdb:
        extra = {} if esdb is None else {"eventstoredb_uri": esdb, "eventstoredb_stream_prefix": f"bench-{uuid.uuid4().hex[:8]}-"}
        settings = Settings.from_env(store=args.store, data_dir=data_dir, snapshot_every=1_000_000, **extra)
        group, group_errors = asyncio.run(_through_node(settings, args.entities, args.events, args.window))
        hot, hot_errors = asyncio.run(_through_node(settings, 1, args.events, args.window))
        single = _single_saves(settings, args.single_events)
    emit({
        "benchmark": "bench_persistence", "store": args.store, "events": args.events, "entities": args.entities,
        "group_commit_events_per_s": round(group), "hot_entity_events_per_s": round(hot),
        "single_save_events_per_s": round(single), "group_vs_single_ratio": round(group / single, 2),
        "errors": group_errors + hot_errors,
    })


if __name__ == "__main__":
    main()
