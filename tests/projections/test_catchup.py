"""The catch-up projector on SQLite into MongoDB (secantusdb): catching up, following live
writes, and kill -9 mid-batch then restart: every document equals a from-scratch replay."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from domain import EntityRef
from domain.auction import Bidder, Lot
from infrastructure.persistence import EventJournal, open_event_stream, open_journal
from infrastructure.settings import Settings
from infrastructure.testkit import Sandbox
from projections.auction import AuctionBoard, BidderSummary
from projections.catchup import CatchUpProjector
from projections.engine import plan_batch
from projections.errors import ModelWriteError
from projections.metrics import ProjectionMetrics
from projections.mongo import MongoReadModel
from projections.projection import Projection
from projections.testkit import MemoryModel
from tests.conftest import eventstoredb_settings, postgres_settings, sqlite_settings
from tests.projections.poison import FlakyHouse
from tests.support.servers import MongoWireServer

Db = Database[Any]
LOTS, BIDDERS = 12, ("bob", "cat", "dan", "eve")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """SQLite, for the tests that run projector processes."""
    return sqlite_settings(tmp_path / "store")


@pytest.fixture(params=["sqlite", "postgres", "eventstoredb"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Each store the catch-up projector follows (the PostgreSQL database is shared by the
    session, the EventStoreDB one namespaced per test: run_auctions names its entities afresh)."""
    if request.param == "postgres":
        return postgres_settings(request.getfixturevalue("postgres_server"))
    if request.param == "eventstoredb":
        return eventstoredb_settings(request.getfixturevalue("eventstoredb_uri"))
    return sqlite_settings(tmp_path / "store")


@pytest.fixture
def journal(settings: Settings) -> Iterator[EventJournal]:
    journal = open_journal(settings)
    yield journal
    journal.close()


def run_auctions(kit: Sandbox, lots: range, rounds: int = 6, tag: str = "") -> None:
    """Lots opened, bid on by every bidder in turn, every other one closed (entity IDs
    suffixed with ``tag`` where stores are shared)."""
    for n in lots:
        lot = EntityRef("Lot", f"lot-{n}{tag}")
        kit.connect(lot, "c-ann", {"sub": "ann", "role": "auctioneer"})
        assert kit.client(lot, "c-ann", {"type": "open", "title": f"Lot {n}", "increment": 1}).ok
        for name in BIDDERS:
            kit.connect(lot, f"c-{name}", {"sub": f"{name}{tag}", "role": "bidder"})
        amount = 0
        for i in range(rounds):
            name = BIDDERS[(n + i) % len(BIDDERS)]
            amount += 10
            assert kit.client(lot, f"c-{name}", {"type": "bid", "amount": amount}).ok
        if n % 2 == 0:
            assert kit.client(lot, "c-ann", {"type": "close"}).ok


def replay(projection: Projection, settings: Settings) -> MemoryModel:
    """The read model built from scratch, in memory, from every stored event."""
    stream = open_event_stream(settings)
    try:
        events = stream.read_all(limit=1_000_000)
    finally:
        stream.close()
    model = MemoryModel()
    model.commit(plan_batch(projection, events, model))
    return model


def head(settings: Settings) -> int:
    stream = open_event_stream(settings)
    try:
        position = stream.head_position()
        assert position is not None
        return position
    finally:
        stream.close()


@pytest.mark.parametrize("projection", [AuctionBoard(), BidderSummary()], ids=lambda p: p.NAME)
def test_catching_up_builds_what_a_replay_builds(any_store: Settings, mongo_db: Db, projection: Projection) -> None:
    settings = any_store
    journal = open_journal(settings)
    try:
        run_auctions(Sandbox(Lot, Bidder, journal=journal), range(LOTS), tag=f"-{uuid.uuid4().hex[:8]}")
    finally:
        journal.close()
    stream = open_event_stream(settings)
    metrics = ProjectionMetrics()
    model = MongoReadModel(projection, mongo_db, metrics)
    try:
        projector = CatchUpProjector(projection, stream, model, batch_size=50)
        projector.run(until=stream.head_position())
        everything = stream.read_all(limit=1_000_000)
    finally:
        stream.close()
    assert model.position() == head(settings) and projector.batches > 2
    assert model.raw_documents() == replay(projection, settings).raw and len(model.documents()) >= 4
    expected = plan_batch(projection, everything, MemoryModel()).outcomes  # other categories: filtered by the store
    for outcome in ("applied", "parked", "skipped", "duplicate"):
        assert metrics.count(projection.NAME, outcome) == expected.get(outcome, 0), outcome
    labels = {"projection": projection.NAME}
    assert metrics.registry.get_sample_value("xplatform_projection_position", labels) == head(settings)
    assert (metrics.registry.get_sample_value("xplatform_projection_batch_duration_seconds_count", labels) or 0) >= 3


def test_it_follows_live_writes_in_batches(any_store: Settings, mongo_db: Db) -> None:
    settings, tag = any_store, f"-{uuid.uuid4().hex[:8]}"
    journal = open_journal(settings)
    kit = Sandbox(Lot, Bidder, journal=journal)
    run_auctions(kit, range(3), tag=tag)
    stream = open_event_stream(settings)
    projection = BidderSummary()
    model = MongoReadModel(projection, mongo_db)
    projector = CatchUpProjector(projection, stream, model, batch_size=25)
    thread, failures = running(projector)
    try:
        run_auctions(kit, range(3, 6), tag=tag)  # written while it runs
        target = head(settings)
        until_head(model, settings, failures)
    finally:
        projector.stop()
        thread.join(10)
        stream.close()
        journal.close()
    assert not failures and not thread.is_alive()
    assert model.position() == target
    assert model.raw_documents() == replay(projection, settings).raw


def projector_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "XPLATFORM_STORE": "sqlite", "XPLATFORM_DATA_DIR": settings.data_dir}


def restart(settings: Settings, server: MongoWireServer, projection: Projection, database: str) -> None:
    done = subprocess.run([sys.executable, "-m", "projections.catchup", "--projection",
                           f"{type(projection).__module__}:{type(projection).__name__}", "--mongo-uri", server.uri,
                           "--database", database, "--batch-size", "30", "--until-head"],
                          env=projector_env(settings), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("projection", [AuctionBoard(), BidderSummary()], ids=lambda p: p.NAME)
def test_kill_9_mid_batch_then_restart_equals_a_replay(settings: Settings, journal: EventJournal, mongo_db: Db,
                                                       mongo_server: MongoWireServer, projection: Projection) -> None:
    run_auctions(Sandbox(Lot, Bidder, journal=journal), range(LOTS))
    crashed = subprocess.run([sys.executable, "-m", "tests.projections.crashing_projector", "--crash-at", "4",
                              "--projection", f"{type(projection).__module__}:{type(projection).__name__}",
                              "--mongo-uri", mongo_server.uri, "--database", mongo_db.name, "--batch-size", "20"],
                             env=projector_env(settings), capture_output=True, text=True, timeout=300)
    assert crashed.returncode == -9, crashed.stdout + crashed.stderr
    model = MongoReadModel(projection, mongo_db)
    stopped_at = model.position()
    assert stopped_at is not None and stopped_at < head(settings)
    tracked = {d["_id"].removeprefix("stream:"): d["version"] for d in model.tracking.find({"_id": {"$regex": "^stream:"}})}
    ahead = [key for key, doc in model.raw_documents().items()
             if any(v > tracked.get(s.replace("%2E", "."), 0) for s, v in doc["_applied"].items())]
    assert ahead, "the kill left documents ahead of the stored tracking (else it was not mid-batch)"
    restart(settings, mongo_server, projection, mongo_db.name)
    assert model.position() == head(settings)
    assert model.raw_documents() == replay(projection, settings).raw


def test_kill_9_at_any_moment_then_restart_equals_a_replay(settings: Settings, journal: EventJournal, mongo_db: Db,
                                                           mongo_server: MongoWireServer) -> None:
    run_auctions(Sandbox(Lot, Bidder, journal=journal), range(LOTS))
    projection = BidderSummary()
    model = MongoReadModel(projection, mongo_db)
    running = subprocess.Popen([sys.executable, "-m", "projections.catchup", "--projection",
                                "projections.auction:BidderSummary", "--mongo-uri", mongo_server.uri,
                                "--database", mongo_db.name, "--batch-size", "5", "--until-head"],
                               env=projector_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while model.position() is None and running.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        running.kill()  # SIGKILL, wherever it is
        running.wait(10)
    restart(settings, mongo_server, projection, mongo_db.name)
    assert model.raw_documents() == replay(projection, settings).raw


def test_a_runner_that_remembers_documents_forgets_them_when_replay_parked_writes_the_model(
        settings: Settings, journal: EventJournal, mongo_db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A catch-up runner remembers documents between batches (projections/model_cache.py).
    ``replay-parked`` (another process: here another model object) writes a document the
    runner remembers; the runner's next batch must read it again, not compute from its
    memory: the read model still equals a replay."""
    marker = tmp_path / "fixed"
    monkeypatch.setenv("XPLATFORM_TEST_POISON_FIXED", str(marker))
    projection = FlakyHouse()
    kit = Sandbox(Lot, Bidder, journal=journal)
    run_auctions(kit, range(5))  # lot-3's bid of 30 is parked, its later bids held behind it
    model = MongoReadModel(projection, mongo_db)
    stream = open_event_stream(settings)
    runner = CatchUpProjector(projection, stream, model, batch_size=10)
    thread, failures = running(runner)

    def caught_up() -> None:
        until_head(model, settings, failures)
        assert not failures and model.position() == head(settings)

    try:
        caught_up()
        assert model.parked_count() >= 2
        bid(kit, "lot-1", "bob", 100)  # a batch after the last parking: the runner remembers "house"
        caught_up()
        marker.write_text("fixed")
        applied, still = MongoReadModel(projection, mongo_db).replay_parked()  # as `xplatform projection replay-parked`
        assert applied >= 2 and still == []
        bid(kit, "lot-1", "cat", 200)  # computed from "house" as the replay left it
        caught_up()
    finally:
        runner.stop()
        thread.join(10)
        stream.close()
    assert model.raw_documents() == replay(projection, settings).raw
    assert model.get("house") == {"_id": "house", "bids": 32, "top": 200}  # 5 lots x 6 bids, and the two after


def running(projector: CatchUpProjector) -> tuple[threading.Thread, list[BaseException]]:
    """``projector.run()`` on a thread; what it raises lands in the returned list."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            projector.run()
        except BaseException as exc:  # handed to the test
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, failures


def until_head(model: MongoReadModel, settings: Settings, failures: list[BaseException]) -> None:
    """Wait (at most a minute) until ``model`` reached the store's head, or a runner failed."""
    target = head(settings)
    deadline = time.monotonic() + 60
    while (model.position() or 0) < target and time.monotonic() < deadline and not failures:
        time.sleep(0.05)


def bid(kit: Sandbox, lot: str, bidder: str, amount: int) -> None:
    ref = EntityRef("Lot", lot)
    kit.connect(ref, f"c-{bidder}-late", {"sub": bidder, "role": "bidder"})
    assert kit.client(ref, f"c-{bidder}-late", {"type": "bid", "amount": amount}).ok


class _OverlapProbe(MongoReadModel):
    """Holds the first batch's document write until the runner has started planning the
    next batch (or 20 s passed), and records whether it had."""

    def __init__(self, projection: Projection, database: Db) -> None:
        super().__init__(projection, database)
        self.plans = 0
        self.next_planned = threading.Event()
        self.overlapped: list[bool] = []

    def stream_versions(self, streams: Any) -> dict[str, int]:
        self.plans += 1  # plan_batch asks once per batch
        if self.plans >= 2:
            self.next_planned.set()
        return super().stream_versions(streams)

    def write_documents(self, writes: Any) -> None:
        if not self.overlapped:
            self.overlapped.append(self.next_planned.wait(20))
        super().write_documents(writes)


def test_catching_up_plans_the_next_batch_while_the_previous_is_written(
        settings: Settings, journal: EventJournal, mongo_db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Write-behind (projections/catchup.py _WriteBehind): batch N+1 is read and planned
    while batch N is written. FlakyHouse computes its one document from itself, so a plan
    made from the document as stored before batch N was written would be wrong; and it
    parks (lot-3's bid of 30) in the middle: the result is still the replay's."""
    monkeypatch.setenv("XPLATFORM_TEST_POISON_FIXED", str(tmp_path / "never"))
    projection = FlakyHouse()
    run_auctions(Sandbox(Lot, Bidder, journal=journal), range(6))
    stream = open_event_stream(settings)
    model = _OverlapProbe(projection, mongo_db)
    try:
        runner = CatchUpProjector(projection, stream, model, batch_size=7)
        runner.run(until=stream.head_position())
    finally:
        stream.close()
    assert model.overlapped == [True]
    assert runner.batches > 5 and model.parked_count() >= 2
    assert model.position() == head(settings)
    assert model.raw_documents() == replay(projection, settings).raw


class _FailingWrite(MongoReadModel):
    """Refuses the ``fail_at``-th document write (the database went away for a moment)."""

    def __init__(self, projection: Projection, database: Db, fail_at: int) -> None:
        super().__init__(projection, database)
        self.writes = 0
        self.fail_at = fail_at

    def write_documents(self, writes: Any) -> None:
        self.writes += 1
        if self.writes == self.fail_at:
            raise ModelWriteError("refused (test)")
        super().write_documents(writes)


@pytest.mark.parametrize("cache_documents", [0, 10_000])
def test_a_write_behind_that_fails_ends_the_run_and_a_restart_equals_a_replay(
        settings: Settings, journal: EventJournal, mongo_db: Db, cache_documents: int) -> None:
    """The batch after a refused write was planned already: it must not be written, and
    the runner must stop with the error; a runner started again completes the model."""
    projection = BidderSummary()
    run_auctions(Sandbox(Lot, Bidder, journal=journal), range(LOTS))
    stream = open_event_stream(settings)
    try:
        failing = _FailingWrite(projection, mongo_db, fail_at=3)
        with pytest.raises(ModelWriteError):
            CatchUpProjector(projection, stream, failing, batch_size=5, cache_documents=cache_documents).run(
                until=stream.head_position())
        assert failing.writes == 3  # nothing after the refused one
        model = MongoReadModel(projection, mongo_db)
        CatchUpProjector(projection, stream, model, batch_size=5, cache_documents=cache_documents).run(
            until=stream.head_position())
    finally:
        stream.close()
    assert model.position() == head(settings)
    assert model.raw_documents() == replay(projection, settings).raw
