"""MongoDB read models on a real MongoDB-wire server (secantusdb, started by the fixture):
the same documents as the sandbox, bookkeeping included; redelivery, a batch cut short,
gaps and parked events."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pymongo import MongoClient, monitoring
from pymongo.database import Database

from infrastructure.persistence.subscriptions import StreamEvent
from projections.auction import AuctionBoard, BidderSummary
from projections.changes import Increment, Push, Set, Unset
from projections.engine import DocumentWrite, plan_batch
from projections.errors import VersionGap
from projections.events import EventEnvelope
from projections.mongo import MongoReadModel, combined_update, updates_for
from projections.projection import Document, Projection, handles
from projections.testkit import MemoryModel, ProjectionSandbox
from tests.projections.auction_scenario import run_auction
from tests.projections.test_sdk import Counts
from tests.support.servers import MongoWireServer, ServerStartError

Db = Database[Any]


@pytest.fixture(scope="module")
def stored() -> list[StreamEvent]:
    kit = run_auction()
    return kit.journal.event_stream().read_all(limit=10_000)  # type: ignore[attr-defined]


def batches(events: list[Any], size: int) -> list[list[Any]]:
    return [events[i:i + size] for i in range(0, len(events), size)]


def replay_in_memory(projection: Projection, events: list[Any]) -> MemoryModel:
    model = MemoryModel()
    model.commit(plan_batch(projection, events, model))
    return model


@pytest.mark.parametrize("size", [1, 7, 1000])
@pytest.mark.parametrize("projection", [AuctionBoard(), BidderSummary()], ids=lambda p: p.NAME)
def test_mongodb_holds_exactly_what_the_sandbox_builds(mongo_db: Db, stored: list[StreamEvent], projection: Projection,
                                                       size: int) -> None:
    model = MongoReadModel(projection, mongo_db)
    for batch in batches(stored, size):
        model.apply(batch)
    expected = replay_in_memory(projection, stored)
    assert model.raw_documents() == expected.raw  # documents and their bookkeeping
    assert model.documents() == expected.documents() and len(expected.documents()) >= 3
    assert model.position() == stored[-1].position


def test_changes_and_deletes_mean_the_same_on_the_server(mongo_db: Db) -> None:
    box = ProjectionSandbox(Counts())
    events = [box.envelope("Lot-a", "BidAccepted", amount=5)]
    box.feed(events[-1])
    for stream, event_type, payload in [("Lot-a", "BidAccepted", {"amount": 9}), ("Lot-b", "BidAccepted", {"amount": 2}),
                                        ("Lot-b", "BidAccepted", {"amount": 13}), ("Lot-a", "Withdrawn", {}),
                                        ("Lot-b", "BidAccepted", {"amount": 4}), ("Lot-a", "BidAccepted", {"amount": 3})]:
        events.append(box.envelope(stream, event_type, **payload))
        box.feed(events[-1])
    model = MongoReadModel(Counts(), mongo_db)
    model.apply(events)
    assert model.raw_documents() == box.models["counts"].raw
    assert model.documents() == box.documents() and model.get("a") == box.document("a")
    assert [(p.stream_id, p.version) for p in model.parked()] == [("Lot-b", 2), ("Lot-b", 3)]  # 3: held behind 2


def test_a_redelivered_batch_changes_nothing(mongo_db: Db, stored: list[StreamEvent]) -> None:
    model = MongoReadModel(BidderSummary(), mongo_db)
    model.apply(stored)
    before = model.raw_documents()
    plan = model.apply(stored[10:40])
    assert model.raw_documents() == before and set(plan.outcomes) == {"duplicate"}


def test_a_batch_cut_short_after_some_documents_is_completed_exactly_once(mongo_db: Db, stored: list[StreamEvent]) -> None:
    """As after a crash between the document writes and the tracking write: the batch comes
    again (from the stored position) and each document applies only what it lacks."""
    projection = BidderSummary()
    model = MongoReadModel(projection, mongo_db)
    model.apply(stored[:20])
    plan = plan_batch(projection, stored[20:], model)
    assert len(plan.writes) > 4
    model.write_documents(plan.writes[: len(plan.writes) // 2])  # crash: half the documents, no tracking
    model.apply(stored[20:])  # delivered again
    assert model.raw_documents() == replay_in_memory(projection, stored).raw


def test_a_gap_writes_nothing(mongo_db: Db, stored: list[StreamEvent]) -> None:
    model = MongoReadModel(AuctionBoard(), mongo_db)
    lot_events = [e for e in stored if e.stream_id == "Lot-vase"]
    model.apply(lot_events[:3])
    before, position = model.raw_documents(), model.position()
    with pytest.raises(VersionGap):
        model.apply(lot_events[4:8])
    assert model.raw_documents() == before and model.position() == position
    model.apply(lot_events[3:8])  # the missing event first: fine
    assert model.position() == lot_events[7].position


def test_a_server_that_cannot_start_is_an_error_with_its_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ops.local.servers.sys.executable", "/bin/false")
    with pytest.raises(ServerStartError, match="exited"):
        MongoWireServer.start(timeout=10)


def test_the_server_speaks_mongodb_with_majority_writes(mongo_server: MongoWireServer) -> None:
    from projections.mongo import connect

    client = connect(mongo_server.uri)
    try:
        assert client.write_concern.document == {"w": "majority"}
        client["ping_db"]["c"].insert_one({"_id": 1})
        assert client["ping_db"]["c"].count_documents({}) == 1
    finally:
        client.drop_database("ping_db")
        client.close()


def test_each_document_update_is_conditional_on_the_server(mongo_db: Db, stored: list[StreamEvent]) -> None:
    """Writes planned from a stale view (another consumer wrote meanwhile, or a retry after an
    unknown outcome) apply once: the server checks each document's _applied, not only the plan."""
    projection = BidderSummary()
    model = MongoReadModel(projection, mongo_db)
    plan = plan_batch(projection, stored, model)
    model.write_documents(plan.writes)
    model.write_documents(plan.writes)  # the same updates again: duplicate-key upserts and non-matches
    model.write_documents(plan.writes[3:9])
    assert model.raw_documents() == replay_in_memory(projection, stored).raw


class _Finds(monitoring.CommandListener):
    """Counts the read commands sent, by collection."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.keys: list[tuple[str, str]] = []  # (collection, _id) of every find by _id
        self.commands: list[tuple[str, str]] = []  # (command, collection) of finds, distincts and counts

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in ("find", "distinct", "count"):
            collection = str(event.command[event.command_name])
            self.commands.append((event.command_name, collection))
        if event.command_name in ("find", "distinct"):
            collection = str(event.command[event.command_name])
            self.reads.append(collection)
            wanted = (event.command.get("filter") or {}).get("_id")
            if isinstance(wanted, dict) and "$in" in wanted:
                self.keys += [(collection, key) for key in wanted["$in"]]

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.parametrize("defer", [False, True], ids=["at-the-head", "behind"])
@pytest.mark.parametrize("projection", [AuctionBoard(), BidderSummary()], ids=lambda p: p.NAME)
def test_a_model_that_remembers_reads_each_document_once_and_still_builds_the_replay(
        mongo_server: MongoWireServer, stored: list[StreamEvent], projection: Projection, defer: bool) -> None:
    """With ``remember`` (a catch-up runner), batches read only documents and stream
    versions they have not seen; held-back stream versions (``behind``) are written by
    ``flush`` and a reader sees them meanwhile through the runner. Same documents as the
    sandbox either way, and the checkpoint is where every stream version is written."""
    finds = _Finds()
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server.uri, event_listeners=[finds])
    try:
        database = client[f"remember_{uuid.uuid4().hex[:8]}"]
        model = MongoReadModel(projection, database)
        model.remember(1000)
        for batch in batches(stored, 7):
            model.apply(batch, behind=defer)
        assert finds.reads.count(model.name) >= 1
        assert len(finds.keys) == len(set(finds.keys))  # each document and stream version read at most once
        assert finds.reads.count(model.name) < len(batches(stored, 7))  # not once per batch
        parked = f"{model.name}__parked"
        assert ("distinct", parked) not in finds.commands and ("count", parked) not in finds.commands  # found empty
        assert finds.commands.count(("find", parked)) == len(batches(stored, 7))  # one small find per batch
        expected = replay_in_memory(projection, stored)
        assert model.raw_documents() == expected.raw
        stored_versions = MongoReadModel(projection, database).stream_versions({e.stream_id for e in stored})
        if defer:  # held back since the last of every 10 batches: the checkpoint is behind the position
            resume = model.resume_position()  # None: from the start
            assert resume is None or resume < model.position()  # type: ignore[operator]
            assert stored_versions != expected.streams
            model.flush()
            stored_versions = MongoReadModel(projection, database).stream_versions({e.stream_id for e in stored})
        assert stored_versions == expected.streams
        assert model.resume_position() == model.position() == stored[-1].position
    finally:
        client.close()


class _Updates(monitoring.CommandListener):
    """The update statements sent, by collection: (collection, _id filtered on)."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "update":
            collection = str(event.command["update"])
            self.updates += [(collection, statement["q"].get("_id")) for statement in event.command["updates"]]

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.parametrize("projection", [AuctionBoard(), BidderSummary()], ids=lambda p: p.NAME)
def test_a_batch_writes_each_document_once_and_builds_the_replay(
        mongo_server: MongoWireServer, stored: list[StreamEvent], projection: Projection) -> None:
    """Several events of a batch changing one document are one update of it
    (projections/mongo.py combined_update), and the documents are the replay's. The board's
    changes all combine; a bidder's summary sets and then unsets a hold (a map entry), which
    does not, so its documents are written event by event."""
    listener = _Updates()
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server.uri, event_listeners=[listener])
    try:
        database = client[f"combined_{uuid.uuid4().hex[:8]}"]
        model = MongoReadModel(projection, database)
        plan = model.apply(stored)
        written = [key for collection, key in listener.updates if collection == model.name]
        by_key: dict[str, list[DocumentWrite]] = {}
        for write in plan.writes:
            by_key.setdefault(write.key, []).append(write)
        combined = {key for key, mine in by_key.items() if len(mine) > 1 and combined_update(mine) is not None}
        assert all(written.count(key) == 1 for key in combined)  # each exactly once
        assert all(written.count(key) == len(mine) for key, mine in by_key.items() if key not in combined)
        if isinstance(projection, AuctionBoard):
            assert combined == set(by_key)  # sets, increments and capped pushes all combine
        assert model.raw_documents() == replay_in_memory(projection, stored).raw
    finally:
        client.close()


def test_a_combined_update_of_a_document_that_has_some_of_its_events_applies_the_rest_once(
        mongo_db: Db, stored: list[StreamEvent]) -> None:
    """A batch planned from a stale view (another consumer applied part of it meanwhile):
    the combined update of a document that has some of its events fails on the server, and
    the events' own updates apply the rest exactly once; redelivered whole, nothing changes."""
    projection = AuctionBoard()
    model = MongoReadModel(projection, mongo_db)
    plan = plan_batch(projection, stored, model)  # nothing written yet: every document fresh
    assert all(combined is not None or not separately for combined, separately in updates_for(plan.writes))
    assert any(separately for _, separately in updates_for(plan.writes))  # combined updates
    other = MongoReadModel(projection, mongo_db)  # another writer, faster: the first third
    other.apply(stored[: len(stored) // 3])
    model.write_documents(plan.writes)
    expected = replay_in_memory(projection, stored).raw
    assert model.raw_documents() == expected
    model.write_documents(plan.writes)  # redelivered: every combined update and every event's own is a duplicate
    assert model.raw_documents() == expected


def test_changes_that_do_not_combine_are_written_event_by_event(mongo_db: Db) -> None:
    """A field set then unset, pushes under different caps, a field and a map around it
    (and Delete, in test_changes_and_deletes_mean_the_same_on_the_server): each event's own
    update, in order; the same documents as the sandbox."""
    box = ProjectionSandbox(Mixed())
    events = []
    for stream, amount in [("Lot-a", 1), ("Lot-a", 2), ("Lot-b", 3), ("Lot-a", 4), ("Lot-b", 5), ("Lot-a", 6),
                           ("Lot-a", 7), ("Lot-b", 8), ("Lot-a", 9)]:
        events.append(box.envelope(stream, "BidAccepted", amount=amount))
        box.feed(events[-1])
    model = MongoReadModel(Mixed(), mongo_db)
    plan = model.apply(events)
    assert {combined_update([w for w in plan.writes if w.key == key]) is None for key in ("a", "b", "all")} == {True}
    assert combined_update([w for w in plan.writes if w.key == "a-unset"]) is not None  # unsets alone combine
    assert model.raw_documents() == box.models["mixed"].raw


class Mixed(Projection):
    """Per lot, changes that cannot be one update across events (chosen by the amount)."""

    NAME = "mixed"
    CATEGORIES = ("Lot",)

    @handles("Lot", "BidAccepted")
    def bid(self, event: EventEnvelope, doc: Document | None) -> list[Any]:
        n, key = event.payload["amount"], event.entity_id
        by_amount: dict[int, list[Any]] = {
            0: [Set(key, {"m": {"x": n}}), Push("all", "seen", (n,), cap=3)],
            1: [Increment(key, {"m.x": n}), Push("all", "seen", (n,), cap=2)],
            2: [Unset(key, ("m",)), Set(key, {"u": n}), Unset(key + "-unset", ("m",)), Set("all", {"last": n})],
        }
        return by_amount[n % 3]
