"""The projector process (``xplatform projector``) and the read model operations
(``xplatform projection status | rebuild | replay-parked``), on real servers: the EventStoreDB
emulator (persistent subscriptions), SQLite (catch-up), and secantusdb (MongoDB wire).

Every test compares the read model with a from-scratch replay of the store (in memory, by
the same engine): documents and their bookkeeping, every one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from domain import EntityRef
from domain.auction import Bidder, Lot
from infrastructure.errors import SubscriptionGroupNotFound
from infrastructure.persistence import EventJournal, open_event_stream, open_journal, open_subscriptions
from infrastructure.persistence.subscriptions import EventFilter, GroupInfo
from infrastructure.settings import Settings
from infrastructure.testkit import Sandbox
from projections import persistent
from projections.auction import AuctionBoard, BidderSummary
from projections.catchup import CatchUpProjector
from projections.mongo import JOINED, POINTERS, MongoReadModel, live_collection
from projections.persistent import PersistentProjector, ensure_group, group_name, group_settings, group_source
from projections.projection import Projection
from tests.conftest import eventstoredb_settings, sqlite_settings
from tests.projections.poison import POISON_AMOUNT, FlakyBoard, StubbornBoard
from tests.projections.test_catchup import LOTS, replay, run_auctions
from tests.support.servers import MongoWireServer

Db = Database[Any]
WAIT_S = 120.0


# ---------------------------------------------------------------------- helpers
class ProjectorProcess:
    """``xplatform projector`` as a subprocess: its first line names its metrics URL."""

    def __init__(self, env: dict[str, str]) -> None:
        self.log = Path(tempfile.mkstemp(prefix="projector-", suffix=".log")[1])
        with self.log.open("wb") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "ops.cli", "projector"], env=env,
                                            stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        assert "projector ready" in first, first + self.log.read_text()
        self.first_line = first
        found = re.search(r"metrics: (\S+)\)", first)
        assert found is not None, first
        self.metrics_url = found.group(1)

    def count(self, projection: str, outcome: str) -> float:
        page = urllib.request.urlopen(self.metrics_url, timeout=10).read().decode()
        line = re.search(rf'^xplatform_projection_events_total\{{outcome="{outcome}",projection="{projection}"\}} (\S+)$',
                         page, re.MULTILINE)
        return float(line.group(1)) if line else 0.0

    def gauge(self, name: str, projection: str) -> float | None:
        page = urllib.request.urlopen(self.metrics_url, timeout=10).read().decode()
        line = re.search(rf'^{name}\{{projection="{projection}"\}} (\S+)$', page, re.MULTILINE)
        return float(line.group(1)) if line else None

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> str:
        """SIGTERM, then its output; it must exit 0 (a graceful stop)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, f"exit {self.process.returncode}: {out}\n{self.log.read_text()[-3000:]}"
        return out

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(10)


def env_of(settings: Settings, server: MongoWireServer, database: str, projections: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XPLATFORM_")}
    env.update({"XPLATFORM_STORE": settings.store, "XPLATFORM_MONGO_URI": server.uri, "XPLATFORM_MONGO_DATABASE": database,
                "XPLATFORM_PROJECTIONS": projections, "XPLATFORM_METRICS_PORT": "0",
                "XPLATFORM_PROJECTOR_BATCH_SIZE": "25", "XPLATFORM_PROJECTOR_MAX_IN_FLIGHT": "100",
                "XPLATFORM_PROJECTOR_LAG_INTERVAL_S": "0.5"})
    if settings.store == "eventstoredb":
        env.update({"XPLATFORM_EVENTSTOREDB_URI": settings.eventstoredb_uri,
                    "XPLATFORM_EVENTSTOREDB_STREAM_PREFIX": settings.eventstoredb_stream_prefix})
    else:
        env["XPLATFORM_DATA_DIR"] = settings.data_dir
    if os.environ.get("XPLATFORM_TEST_POISON_FIXED"):
        env["XPLATFORM_TEST_POISON_FIXED"] = os.environ["XPLATFORM_TEST_POISON_FIXED"]
    return env


def xplatform(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], env=env, capture_output=True, text=True, timeout=300)


def wait_for(what: str, condition: Callable[[], bool], *processes: ProjectorProcess) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        for process in processes:
            assert process.alive(), f"the projector died while waiting for {what}:\n{process.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def equals_replay(model: MongoReadModel, projection: Projection, settings: Settings) -> Callable[[], bool]:
    expected = replay(projection, settings).raw
    return lambda: model.raw_documents() == expected


def parked_in_replay(projection: Projection, settings: Settings) -> list[tuple[str, int]]:
    return [(p.stream_id, p.version) for p in replay(projection, settings).parked]


def category_events(settings: Settings, projection: Projection) -> int:
    stream = open_event_stream(settings)
    try:
        return len(stream.read_all(limit=1_000_000, filter=EventFilter(categories=projection.CATEGORIES)))
    finally:
        stream.close()


@pytest.fixture
def esdb(eventstoredb_uri: str) -> Settings:
    return eventstoredb_settings(eventstoredb_uri)


@pytest.fixture
def esdb_journal(esdb: Settings) -> Iterator[EventJournal]:
    journal = open_journal(esdb)
    yield journal
    journal.close()


@pytest.fixture
def sqlite(tmp_path: Path) -> Settings:
    return sqlite_settings(tmp_path / "store")


@pytest.fixture
def sqlite_journal(sqlite: Settings) -> Iterator[EventJournal]:
    journal = open_journal(sqlite)
    yield journal
    journal.close()


def group_info(settings: Settings, projection: Projection) -> GroupInfo | None:
    """The projection's consumer group as the server reports it (None before a projector made it)."""
    groups = open_subscriptions(settings)
    try:
        return groups.group_info(group_name(projection, settings.eventstoredb_stream_prefix), group_source(projection))
    except SubscriptionGroupNotFound:
        return None
    finally:
        groups.close()


def server_parked(settings: Settings, projection: Projection) -> int:
    info = group_info(settings, projection)
    return 0 if info is None else info.parked


def group_consumers(settings: Settings, projection: Projection) -> int:
    info = group_info(settings, projection)
    return 0 if info is None else info.consumers


# ---------------------------------------------------------------------- persistent subscriptions
def test_persistent_projector_builds_what_a_replay_builds_and_status_shows_it(
        esdb: Settings, esdb_journal: EventJournal, mongo_db: Db, mongo_server: MongoWireServer) -> None:
    run_auctions(Sandbox(Lot, Bidder, journal=esdb_journal), range(LOTS))
    env = env_of(esdb, mongo_server, mongo_db.name, "projections.auction:PROJECTIONS")
    before = xplatform(env, "projection", "status", "--json")
    assert before.returncode == 0, before.stderr
    rows = {row["projection"]: row for row in json.loads(before.stdout)}
    assert rows["auction_board"]["events"] == category_events(esdb, AuctionBoard()) and rows["auction_board"]["seconds"] > 0
    assert rows["auction_board"]["group"] is None and rows["auction_board"]["position"] is None
    projector = ProjectorProcess(env)
    try:
        for projection in (AuctionBoard(), BidderSummary()):
            model = MongoReadModel(projection, mongo_db)
            wait_for(f"{projection.NAME} to equal a replay", equals_replay(model, projection, esdb), projector)
        after = xplatform(env, "projection", "status", "--json")
        assert after.returncode == 0, after.stderr
        rows = {row["projection"]: row for row in json.loads(after.stdout)}
        for name in ("auction_board", "bidder_summary"):
            assert rows[name]["events"] == 0 and rows[name]["seconds"] == 0 and rows[name]["parked"] == 0, rows[name]
            assert rows[name]["group"]["consumers"] == 1 and rows[name]["group"]["strategy"] == "pinned"
        assert projector.count("auction_board", "applied") > 0
    finally:
        out = projector.stop()
    assert "projector stopped" in out


def test_two_projector_processes_share_a_group_and_the_result_is_still_the_replay(
        esdb: Settings, esdb_journal: EventJournal, mongo_db: Db, mongo_server: MongoWireServer) -> None:
    projection = AuctionBoard()
    env = env_of(esdb, mongo_server, mongo_db.name, "projections.auction:AuctionBoard")
    first, second = ProjectorProcess(env), ProjectorProcess(env)
    try:
        wait_for("both consumers in the group", lambda: group_consumers(esdb, projection) == 2, first, second)
        run_auctions(Sandbox(Lot, Bidder, journal=esdb_journal), range(LOTS))  # written while both consume
        model = MongoReadModel(projection, mongo_db)
        wait_for("the read model to equal a replay", equals_replay(model, projection, esdb), first, second)
        shares = [process.count(projection.NAME, "applied") for process in (first, second)]
        assert all(share > 0 for share in shares), f"one process did all the work: {shares}"
    finally:
        stopped = [first.stop, second.stop]
        failures = []
        for stop in stopped:
            try:
                stop()
            except AssertionError as exc:
                failures.append(str(exc))
        assert not failures, failures


def test_kill_9_mid_batch_then_restart_equals_a_replay(esdb: Settings, esdb_journal: EventJournal, mongo_db: Db,
                                                       mongo_server: MongoWireServer) -> None:
    projection = AuctionBoard()
    run_auctions(Sandbox(Lot, Bidder, journal=esdb_journal), range(LOTS))
    env = env_of(esdb, mongo_server, mongo_db.name, "projections.auction:AuctionBoard")
    crashed = subprocess.run([sys.executable, "-m", "tests.projections.crashing_projector", "--persistent",
                              "--crash-at", "3", "--projection", "projections.auction:AuctionBoard",
                              "--mongo-uri", mongo_server.uri, "--database", mongo_db.name, "--batch-size", "10"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert crashed.returncode == -9, crashed.stdout + crashed.stderr
    model = MongoReadModel(projection, mongo_db)
    tracked = {d["_id"].removeprefix("stream:"): d["version"] for d in model.tracking.find({"_id": {"$regex": "^stream:"}})}
    ahead = [key for key, doc in model.raw_documents().items()
             if any(v > tracked.get(s.replace("%2E", "."), 0) for s, v in doc["_applied"].items())]
    assert ahead, "the kill left documents ahead of the stored tracking (else it was not mid-batch)"
    assert not equals_replay(model, projection, esdb)()
    projector = ProjectorProcess(env)  # the same group: the killed consumer's unacked events come again
    try:
        wait_for("the read model to equal a replay", equals_replay(model, projection, esdb), projector)
    finally:
        projector.stop()


def test_a_redelivered_history_changes_nothing(esdb: Settings, esdb_journal: EventJournal, mongo_db: Db,
                                               mongo_server: MongoWireServer) -> None:
    projection = BidderSummary()
    run_auctions(Sandbox(Lot, Bidder, journal=esdb_journal), range(LOTS))
    env = env_of(esdb, mongo_server, mongo_db.name, "projections.auction:BidderSummary")
    model = MongoReadModel(projection, mongo_db)
    projector = ProjectorProcess(env)
    try:
        wait_for("the read model to equal a replay", equals_replay(model, projection, esdb), projector)
    finally:
        projector.stop()
    before = model.raw_documents()
    groups = open_subscriptions(esdb)  # the server forgets the group's progress: everything comes again
    try:
        group = group_name(projection, esdb.eventstoredb_stream_prefix)
        groups.delete_group(group, group_source(projection))
        groups.create_group(group, group_source(projection), group_settings())
    finally:
        groups.close()
    total = category_events(esdb, projection)
    again = ProjectorProcess(env)
    try:
        wait_for("every event delivered again", lambda: again.count(projection.NAME, "duplicate") == total, again)
        assert again.count(projection.NAME, "applied") == 0
    finally:
        again.stop()
    assert model.raw_documents() == before


@pytest.mark.parametrize("store", ["eventstoredb", "sqlite"])
def test_a_poison_event_holds_its_stream_back_and_replay_parked_applies_it_after_the_fix(
        store: str, request: pytest.FixtureRequest, mongo_db: Db, mongo_server: MongoWireServer,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On EventStoreDB a persistent subscription, on SQLite a catch-up runner - which
    remembers documents and stream versions between batches (projections/model_cache.py)
    and must forget them when replay-parked, another process, writes the model."""
    esdb: Settings = request.getfixturevalue("esdb" if store == "eventstoredb" else "sqlite")
    esdb_journal: EventJournal = request.getfixturevalue("esdb_journal" if store == "eventstoredb" else "sqlite_journal")
    marker = tmp_path / "fixed"
    monkeypatch.setenv("XPLATFORM_TEST_POISON_FIXED", str(marker))  # the fix: this file exists
    projection = FlakyBoard()
    kit = Sandbox(Lot, Bidder, journal=esdb_journal)
    run_auctions(kit, range(LOTS))
    env = env_of(esdb, mongo_server, mongo_db.name, "tests.projections.poison:PROJECTIONS")
    model = MongoReadModel(projection, mongo_db)
    projector = ProjectorProcess(env)
    try:
        # before the fix: lot-3 stops before its bid of 30, every other lot is complete
        wait_for("the read model to equal a replay that parks", equals_replay(model, projection, esdb), projector)
        parked = model.parked()
        assert [(p.stream_id, p.version) for p in parked] == parked_in_replay(projection, esdb)
        assert parked[0].error.startswith("RuntimeError: poison")
        assert {p.stream_id for p in parked} == {"Lot-lot-3"} and len(parked) >= 2  # the poison, and the rest held
        assert all(p.error.startswith("held behind") for p in parked[1:])
        assert model.get("lot-3")["high_amount"] == POISON_AMOUNT - 10  # type: ignore[index]
        # a new event of the held stream is parked behind it too
        assert kit.client(EntityRef("Lot", "lot-3"), "c-bob", {"type": "bid", "amount": 1000}).ok
        expected = parked_in_replay(projection, esdb)
        assert len(expected) > len(parked)
        wait_for("the new event parked", lambda: [(p.stream_id, p.version) for p in model.parked()] == expected,
                 projector)
        count = len(expected)
        status = json.loads(xplatform(env, "projection", "status", "--json").stdout)
        assert status[0]["parked"] == count
        # still poisoned: replaying changes nothing, exit 1
        still = xplatform(env, "projection", "replay-parked", "flaky_board")
        assert still.returncode == 1 and f"0 parked events applied, {count} still parked" in still.stdout, \
            still.stdout + still.stderr
        marker.write_text("fixed")
        fixed = xplatform(env, "projection", "replay-parked", "flaky_board")
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert f"{count} parked events applied, 0 still parked" in fixed.stdout
        assert model.parked() == [] and model.raw_documents() == replay(projection, esdb).raw
        assert model.get("lot-3")["high_amount"] == 1000  # type: ignore[index]
        # and the stream is free again: live events apply
        assert kit.client(EntityRef("Lot", "lot-3"), "c-cat", {"type": "bid", "amount": 2000}).ok
        wait_for("live events of the freed stream", equals_replay(model, projection, esdb), projector)
    finally:
        projector.stop()


def test_with_policy_stop_a_poison_event_is_nacked_retried_then_parked_by_the_server_and_replayed_after_the_fix(
        esdb: Settings, esdb_journal: EventJournal, mongo_db: Db, mongo_server: MongoWireServer,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "fixed"
    monkeypatch.setenv("XPLATFORM_TEST_POISON_FIXED", str(marker))
    projection = StubbornBoard()
    run_auctions(Sandbox(Lot, Bidder, journal=esdb_journal), range(LOTS))
    held_back = len(parked_in_replay(FlakyBoard(), esdb))  # the poison and the lot's later events
    env = env_of(esdb, mongo_server, mongo_db.name, "tests.projections.poison:StubbornBoard")
    env.update({"XPLATFORM_PROJECTOR_MAX_RETRY_COUNT": "1", "XPLATFORM_PROJECTOR_MESSAGE_TIMEOUT_S": "1"})
    model = MongoReadModel(projection, mongo_db)
    projector = ProjectorProcess(env)
    try:
        wait_for("the server to park the poison event and its lot's later events",
                 lambda: server_parked(esdb, projection) == held_back, projector)
        assert model.parked() == []  # parked by the server, not in the read model
        assert model.raw_documents() == replay(FlakyBoard(), esdb).raw  # lot-3 before the poison, the rest complete
        marker.write_text("fixed")
        done = xplatform(env, "projection", "replay-parked", "stubborn_board")
        assert done.returncode == 0 and "delivers the group's parked events again" in done.stdout, done.stdout + done.stderr
        wait_for("the replayed events applied", equals_replay(model, projection, esdb), projector)
        assert server_parked(esdb, projection) == 0
    finally:
        projector.stop()


# ---------------------------------------------------------------------- catch-up (SQLite), the commands
def test_on_sqlite_the_projector_runs_catch_up_and_stops_gracefully(
        sqlite: Settings, sqlite_journal: EventJournal, mongo_db: Db, mongo_server: MongoWireServer) -> None:
    kit = Sandbox(Lot, Bidder, journal=sqlite_journal)
    run_auctions(kit, range(4))
    env = env_of(sqlite, mongo_server, mongo_db.name, "projections.auction:PROJECTIONS")
    projector = ProjectorProcess(env)
    try:
        run_auctions(kit, range(4, 8))
        for projection in (AuctionBoard(), BidderSummary()):
            model = MongoReadModel(projection, mongo_db)
            wait_for(f"{projection.NAME} to equal a replay", equals_replay(model, projection, sqlite), projector)
            # the lag gauges, sampled by the process: caught up, nothing parked, at the model's position
            wait_for("the lag gauges", lambda: projector.gauge("xplatform_projection_lag_events", projection.NAME) == 0,
                     projector)
            assert projector.gauge("xplatform_projection_position", projection.NAME) == model.position()
            assert projector.gauge("xplatform_projection_lag_seconds", projection.NAME) == 0
            assert projector.gauge("xplatform_projection_parked_events", projection.NAME) == 0
            assert (projector.gauge("xplatform_projection_batch_duration_seconds_count", projection.NAME) or 0) > 0
    finally:
        out = projector.stop()
    assert "catch-up subscriptions" in projector.first_line and "projector stopped" in out


@pytest.mark.parametrize(("topics", "message"), [
    ("projections.nowhere:PROJECTIONS", "no module 'projections.nowhere'"),
    ("projections.auction:NOPE", "has no attribute 'NOPE'"),
    ("projections.auction", "must be module:ATTRIBUTE"),
    ("domain.auction:ENTITIES", "is not a Projection class"),
])
def test_a_wrong_projection_topic_fails_at_start_in_one_line(sqlite: Settings, mongo_server: MongoWireServer,
                                                             topics: str, message: str) -> None:
    done = xplatform(env_of(sqlite, mongo_server, "unused", topics), "projector")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "ProjectionTopicError" in done.stderr and message in done.stderr, done.stderr


def test_rebuild_switches_readers_atomically_and_dry_run_switches_nothing(
        sqlite: Settings, sqlite_journal: EventJournal, mongo_db: Db, mongo_server: MongoWireServer) -> None:
    projection = AuctionBoard()
    run_auctions(Sandbox(Lot, Bidder, journal=sqlite_journal), range(LOTS))
    stream = open_event_stream(sqlite)
    model = MongoReadModel(projection, mongo_db)
    try:
        CatchUpProjector(projection, stream, model, batch_size=50).run(until=stream.head_position())
    finally:
        stream.close()
    env = env_of(sqlite, mongo_server, mongo_db.name, "projections.auction:PROJECTIONS")
    same = xplatform(env, "projection", "rebuild", "auction_board", "--dry-run")
    assert same.returncode == 0 and "identical" in same.stdout, same.stdout + same.stderr
    model.collection.update_one({"_id": "lot-5"}, {"$set": {"high_amount": -1}})  # the live model goes wrong
    model.collection.delete_one({"_id": "lot-7"})
    dry = xplatform(env, "projection", "rebuild", "auction_board", "--dry-run")
    assert dry.returncode == 1 and "different: lot-5" in dry.stdout and "only rebuilt: lot-7" in dry.stdout, dry.stdout
    assert live_collection(mongo_db, projection.NAME) == projection.NAME  # nothing switched
    assert sorted(mongo_db.list_collection_names()) == sorted(["auction_board", "auction_board__tracking"])
    done = xplatform(env, "projection", "rebuild", "auction_board")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"rebuild auction_board: \d+ events applied, position \d+ of \d+", done.stdout), done.stdout
    live = live_collection(mongo_db, projection.NAME)
    assert live.startswith("auction_board__r") and live in done.stdout
    assert model.get("lot-5")["high_amount"] == -1  # type: ignore[index]  # a reader that has not looked again
    assert model.refresh() and model.name == live  # one look at the pointer: the rebuilt model, whole
    assert model.raw_documents() == replay(projection, sqlite).raw
    assert MongoReadModel(projection, mongo_db).name == live  # new readers start there


def test_rebuild_while_a_projector_runs_and_entities_write(
        sqlite: Settings, sqlite_journal: EventJournal, mongo_db: Db, mongo_server: MongoWireServer) -> None:
    projection = AuctionBoard()
    kit = Sandbox(Lot, Bidder, journal=sqlite_journal)
    run_auctions(kit, range(6))
    env = env_of(sqlite, mongo_server, mongo_db.name, "projections.auction:AuctionBoard")
    projector = ProjectorProcess(env)
    try:
        rebuilding = subprocess.Popen([sys.executable, "-m", "ops.cli", "projection", "rebuild", "auction_board"],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        run_auctions(kit, range(6, 12), tag=f"-{uuid.uuid4().hex[:6]}")  # written during the rebuild
        out, err = rebuilding.communicate(timeout=300)
        assert rebuilding.returncode == 0, out + err
        run_auctions(kit, range(12, 14))  # and after it
        model = MongoReadModel(projection, mongo_db)
        assert model.name.startswith("auction_board__r")
        wait_for("the rebuilt read model to equal a replay", equals_replay(model, projection, sqlite), projector)
    finally:
        projector.stop()


class _Consumer:
    """A PersistentProjector of ``projection`` on a thread of this test process."""

    def __init__(self, settings: Settings, projection: Projection, database: Db) -> None:
        self.subscriptions = open_subscriptions(settings)
        namespace = settings.eventstoredb_stream_prefix
        ensure_group(self.subscriptions, projection, group_settings(), namespace)
        self.model = MongoReadModel(projection, database)
        self.runner = PersistentProjector(projection, self.subscriptions, self.model, batch_size=20, namespace=namespace)
        self.failures: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:  # handed to the test
            self.failures.append(exc)

    def stop(self) -> None:
        self.runner.stop()
        self.thread.join(10)
        self.subscriptions.close()
        assert not self.failures, self.failures


def _until(what: str, condition: Callable[[], bool], *consumers: _Consumer) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        for consumer in consumers:
            assert not consumer.failures, consumer.failures
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_lone_consumer_remembers_documents_across_batches_and_forgets_them_while_it_shares(
        esdb: Settings, esdb_journal: EventJournal, mongo_db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    """projections/persistent.py "A lone consumer remembers": alone in its group, a consumer
    reads each document once (then from memory); a second consumer counting itself in makes
    the first forget and read every batch again, until the server says it is alone again."""
    monkeypatch.setattr(persistent, "ALONE_RECHECK_S", 0.2)
    projection = BidderSummary()  # one document per bidder, written from every lot's stream
    kit = Sandbox(Lot, Bidder, journal=esdb_journal)
    first = _Consumer(esdb, projection, mongo_db)
    second: _Consumer | None = None
    try:
        run_auctions(kit, range(4))
        _until("the read model to equal a replay", equals_replay(first.model, projection, esdb), first)
        assert first.runner.remembering and first.runner.asked == 1
        assert first.model.cache is not None and first.model.cache.hits > 0  # documents read in earlier batches
        second = _Consumer(esdb, projection, mongo_db)
        _until("both consumers in the group", lambda: group_consumers(esdb, projection) == 2, first, second)
        # each counted itself in before joining and again once the server confirmed it: a lone
        # consumer that asked the server between the two counts sees the count move once more
        _until("the second counted in twice", lambda: (mongo_db[POINTERS].find_one({"_id": projection.NAME})
                                                        or {}).get(JOINED) == 4, first, second)
        run_auctions(kit, range(4, LOTS))  # written while both consume
        _until("the read model to equal a replay", equals_replay(first.model, projection, esdb), first, second)
        assert not first.runner.remembering and first.runner.asked >= 2
        second.stop()
        second = None
        _until("one consumer in the group", lambda: group_consumers(esdb, projection) == 1, first)
        extra = iter(range(LOTS, LOTS + 100))

        def alone_again() -> bool:
            run_auctions(kit, range(next(extra), 1 + next(extra)), rounds=1)  # a batch: the first asks again
            time.sleep(0.3)
            return first.runner.remembering

        _until("the first consumer to remember again", alone_again, first)
        _until("the read model to equal a replay", equals_replay(first.model, projection, esdb), first)
    finally:
        if second is not None:
            second.stop()
        first.stop()
