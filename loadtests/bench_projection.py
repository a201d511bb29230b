"""Read models into MongoDB (a secantusdb server, started for the run): projecting a backlog
with the exactly-once bookkeeping vs plain bulk writes, rebuilding, and live lag.

    python -m loadtests.bench_projection [--events 100000] [--entities 1000] [--rate 1000] [--lag-seconds 10]
                                         [--lag-stores sqlite,eventstoredb]

- ``project_events_per_s``: a backlog of ``--events`` events (``Tally`` entities through the
  state node, SQLite) projected by the catch-up projector (``projections.catchup``: store
  reads, envelope decoding, handlers, one ``find`` + one conditional bulk write + one
  tracking write per batch of 500).
- ``raw_bulk_events_per_s``: the same document updates (``$inc``/``$set`` per event, 500 per
  ``bulk_write``, upserts) written by plain pymongo into a fresh collection, in the same run:
  the floor a MongoDB client cannot beat. ``project_vs_raw_ratio``: the first over the second.
- ``rebuild_events_per_s``: ``projections.rebuild`` of the same read model (fresh
  collections, then the pointer switch; no settle wait).
- ``lag_p99_ms`` per store: ``--rate`` events/s written by live entities for ``--lag-seconds``
  while a projector runs in a process of its own, as ``xplatform projector`` does (catch-up
  on SQLite, a persistent subscription on the EventStoreDB emulator; ``EVENTSTOREDB_URI``
  for a real server); each event's lag is from its recorded
  time (EventStoreDB: the server's commit time; SQLite: the event's own timestamp, taken
  just before its group commit, so the figure slightly overstates) to the moment the batch
  holding it was acknowledged by MongoDB.

The emulator and secantusdb are Python servers: absolute figures mean little beyond this
machine; the ratio is what carries over.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
from pymongo import UpdateOne

from domain import ClientMessage, Connect, EntityRef, Reply
from infrastructure.persistence import open_event_stream, open_subscriptions
from infrastructure.persistence.subscriptions import EventFilter, StreamEvent
from infrastructure.settings import Settings
from loadtests.bench_persistence import _through_node
from loadtests.common import emit, eventstoredb_for_benchmark, percentile
from loadtests.entities import Tally
from ops.local.servers import MongoWireServer
from ops.wiring.dev import build_platform
from projections.catchup import CatchUpProjector
from projections.changes import Change, Increment, Set
from projections.engine import BatchPlan, Delivered
from projections.events import EventEnvelope, decode_event
from projections.lag import recorded_time
from projections.mongo import MongoReadModel, connect
from projections.persistent import PersistentProjector, ensure_group, group_settings
from projections.projection import Document, Projection, handles
from projections.rebuild import rebuild


class TallyBoard(Projection):
    """One document per Tally: its total, how many events, the last amount."""

    NAME = "bench_tally"
    CATEGORIES = ("Tally",)

    @handles("Tally", "Added")
    def added(self, event: EventEnvelope, doc: Document | None) -> list[Change]:
        n = event.payload["n"]
        return [Increment(event.entity_id, {"total": n, "events": 1}), Set(event.entity_id, {"last": n})]


class TimedModel(MongoReadModel):
    """Records, per event of each batch, the time from its recording to the batch written."""

    lags: list[float]

    def apply(self, events: Sequence[Delivered], *, behind: bool = False) -> BatchPlan:
        plan = super().apply(events, behind=behind)
        now = time.time()
        for event in events:
            if isinstance(event, StreamEvent) and event.topic.endswith("Added"):
                recorded = recorded_time(event)
                if recorded is not None:
                    self.lags.append(now - recorded.timestamp())
        return plan


def _raw_updates(events: Sequence[StreamEvent]) -> list[UpdateOne]:
    """What the projection's handler does, per event, as plain updates (no bookkeeping)."""
    ops = []
    for event in events:
        if not event.topic.endswith("Added"):
            continue
        envelope = decode_event(event)
        assert envelope is not None
        n = envelope.payload["n"]
        ops.append(UpdateOne({"_id": envelope.entity_id}, {"$inc": {"total": n, "events": 1}, "$set": {"last": n}},
                             upsert=True))
    return ops


def _backlog(settings: Settings, client: Any, events: int, entities: int) -> dict[str, Any]:
    asyncio.run(_through_node(settings, entities, events, 2_000))
    projection = TallyBoard()
    database = client["bench"]
    stream = open_event_stream(settings)
    try:
        stored = stream.read_all(limit=10_000_000, filter=EventFilter(categories=("Tally",)))
        model = MongoReadModel(projection, database)
        started = time.perf_counter()
        CatchUpProjector(projection, stream, model, batch_size=settings.projector_batch_size).run(
            until=stream.head_position())
        project = len(stored) / (time.perf_counter() - started)
        ops = _raw_updates(stored)
        raw = database["bench_raw"]
        started = time.perf_counter()
        for i in range(0, len(ops), settings.projector_batch_size):
            raw.bulk_write(ops[i:i + settings.projector_batch_size], ordered=True)
        raw_rate = len(ops) / (time.perf_counter() - started)
        assert raw.count_documents({}) == len(model.documents()), "the raw writes and the projection disagree"
        started = time.perf_counter()
        rebuilt = rebuild(projection, stream, database, batch_size=settings.projector_batch_size, settle_s=0.0)
        rebuild_rate = rebuilt.events / (time.perf_counter() - started)
    finally:
        stream.close()
    return {"backlog_events": len(stored), "raw_updates": len(ops), "project_events_per_s": round(project),
            "raw_bulk_events_per_s": round(raw_rate), "project_vs_raw_ratio": round(project / raw_rate, 2),
            "rebuild_events_per_s": round(rebuild_rate)}


async def _write_live(settings: Settings, rate: int, seconds: float, entities: int) -> int:
    """``rate`` one-event commands per second to ``entities`` Tallies for ``seconds``."""
    async with build_platform(settings, entities=[Tally]) as platform:
        prefix = uuid.uuid4().hex[:8]
        refs = [EntityRef("Tally", f"live-{prefix}-{i}") for i in range(entities)]
        for ref in refs:
            await platform.transport.ask(ref, Connect(uuid.uuid4().hex, time.time(), "bench", {"sub": "bench"}))
        payload = msgpack.packb({"type": "add", "n": 1})
        replies = {"ok": 0, "failed": 0}

        def on_reply(reply: Reply) -> None:
            replies["ok" if reply.ok else "failed"] += 1

        tick, sent = 0.01, 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            due = int((time.perf_counter() - started) * rate)
            while sent < due:
                platform.node.deliver(refs[sent % entities], ClientMessage(f"m{sent}", time.time(), "bench", payload),
                                      on_reply)
                sent += 1
            await asyncio.sleep(tick)
        while replies["ok"] + replies["failed"] < sent:
            await asyncio.sleep(0.01)
        return sent


def _lag(settings: Settings, mongo_uri: str, rate: int, seconds: float, entities: int) -> dict[str, Any]:
    """Live lag: the projector in a process of its own (as ``xplatform projector`` runs,
    see :func:`_projector_child`), ``rate`` events/s written by live entities in this one."""
    database = f"lag_{settings.store}_{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "XPLATFORM_STORE": settings.store, "XPLATFORM_DATA_DIR": settings.data_dir,
           "XPLATFORM_EVENTSTOREDB_URI": settings.eventstoredb_uri,
           "XPLATFORM_EVENTSTOREDB_STREAM_PREFIX": settings.eventstoredb_stream_prefix}
    out = Path(tempfile.mkstemp(prefix="bench-lag-", suffix=".json")[1])
    child = subprocess.Popen([sys.executable, "-m", "loadtests.bench_projection", "--projector-child", mongo_uri, database,
                              str(out)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        ready = child.stdout.readline()
        assert ready.startswith("following"), ready
        sent = asyncio.run(_write_live(settings, rate, seconds, entities))
        child.send_signal(signal.SIGUSR1)  # "this many were sent": it stops once it has them all (or 60 s)
        out.write_text(json.dumps({"sent": sent}))
        child.wait(120)
        lags = json.loads(out.read_text())["lags"]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        out.unlink(missing_ok=True)
    return {"sent": sent, "projected": len(lags), "lag_p50_ms": round(percentile(lags, 50) * 1000, 1),
            "lag_p99_ms": round(percentile(lags, 99) * 1000, 1), "projector": "own process"}


def _projector_child(mongo_uri: str, database: str, out: Path) -> None:
    """The lag phase's projector process: the runner ``xplatform projector`` uses for the
    store (catch-up on SQLite, a persistent subscription on EventStoreDB) with
    :class:`TimedModel`; starts at the store's head (the backlog is not what is measured),
    prints "following", and on SIGUSR1 reads how many events were sent from ``out``, waits
    until it has projected them (at most 60 s) and writes their lags there."""
    settings = Settings.from_env()
    client = connect(mongo_uri, write_concern=1)
    projection = TallyBoard()
    model = TimedModel(projection, client[database])
    model.lags = []
    runner: CatchUpProjector | PersistentProjector
    if settings.store == "eventstoredb":
        source: Any = open_subscriptions(settings)
        namespace = settings.eventstoredb_stream_prefix
        ensure_group(source, projection, group_settings(), namespace)
        runner = PersistentProjector(projection, source, model, namespace=namespace)
    else:
        source = open_event_stream(settings)
        model.write(BatchPlan(position=source.head_position()))  # start live
        runner = CatchUpProjector(projection, source, model, batch_size=settings.projector_batch_size,
                                  cache_documents=settings.projector_cache_documents)
    told = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: told.set())
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    print("following", flush=True)
    told.wait(600)
    time.sleep(0.2)  # the parent writes the count right after the signal
    sent = int(json.loads(out.read_text())["sent"])
    deadline = time.monotonic() + 60
    while len(model.lags) < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.stop()
    thread.join(10)
    source.close()
    client.close()
    out.write_text(json.dumps({"lags": model.lags}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="backlog events (the issue asks for >= 100k)")
    parser.add_argument("--entities", type=int, default=1_000)
    parser.add_argument("--rate", type=int, default=1_000, help="live events per second for the lag phase")
    parser.add_argument("--lag-seconds", type=float, default=10.0)
    parser.add_argument("--lag-stores", default="sqlite,eventstoredb")
    parser.add_argument("--projector-child", nargs=3, metavar=("MONGO_URI", "DATABASE", "FILE"),
                        help=argparse.SUPPRESS)  # the lag phase's projector process
    args = parser.parse_args(argv)
    if args.projector_child:
        _projector_child(args.projector_child[0], args.projector_child[1], Path(args.projector_child[2]))
        return
    stores = [s for s in args.lag_stores.split(",") if s]
    result: dict[str, Any] = {"benchmark": "bench_projection", "events": args.events, "rate": args.rate,
                              "lag_seconds": args.lag_seconds}
    server = MongoWireServer.start()
    client = connect(server.uri, write_concern=1)
    try:
        with tempfile.TemporaryDirectory(prefix="xplatform-bench-") as data_dir:
            settings = Settings.from_env(store="sqlite", data_dir=data_dir, snapshot_every=1_000_000)
            result.update(_backlog(settings, client, args.events, args.entities))
            if "sqlite" in stores:
                result["sqlite"] = _lag(settings, server.uri, args.rate, args.lag_seconds, 100)
        if "eventstoredb" in stores:
            with eventstoredb_for_benchmark(True) as uri:
                settings = Settings.from_env(store="eventstoredb", eventstoredb_uri=uri,
                                             eventstoredb_stream_prefix=f"bench-{uuid.uuid4().hex[:8]}-",
                                             snapshot_every=1_000_000)
                result["eventstoredb"] = _lag(settings, server.uri, args.rate, args.lag_seconds, 100)
    finally:
        client.close()
        server.stop()
    result["mongo_write_concern"] = 1  # one secantusdb server: "majority" is the same single acknowledgement
    emit(result)


if __name__ == "__main__":
    main()
