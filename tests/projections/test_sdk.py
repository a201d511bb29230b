"""The projection SDK with no server: declarations, changes, failure policies, and the
exactly-once bookkeeping (duplicates, gaps, partial batches), in the projection sandbox."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from infrastructure.persistence.subscriptions import StreamEvent
from projections.changes import Delete, Increment, Push, Set, Unset, apply_changes, check_changes, path
from projections.errors import (
    ChangeError,
    HandlerFailed,
    ProjectionDefinitionError,
    ProjectionError,
    UnhandledEvent,
    VersionGap,
)
from projections.events import EventEnvelope
from projections.projection import Document, Projection, handles
from projections.testkit import ProjectionSandbox


class Counts(Projection):
    """Counts per lot; fails on a bid of 13 (a handler bug), deletes on Withdrawn."""

    NAME = "counts"
    CATEGORIES = ("Lot",)

    @handles("Lot", "BidAccepted")
    def bid(self, event: EventEnvelope, doc: Document | None) -> list[Any]:
        if event.payload["amount"] == 13:
            raise RuntimeError("unlucky")
        seen = (doc or {}).get("max", 0)
        return [Increment(event.entity_id, {"bids": 1, "total": event.payload["amount"]}),
                Set(event.entity_id, {"max": max(seen, event.payload["amount"])}),
                Push(event.entity_id, "last", (event.payload["amount"],), cap=2),
                Increment("all", {"bids": 1})]

    @handles("Lot", "Withdrawn")
    def withdrawn(self, event: EventEnvelope, doc: Document | None) -> list[Any]:
        return [Delete(event.entity_id)]

    @handles("Lot", "Broken")
    def broken(self, event: EventEnvelope, doc: Document | None) -> Any:
        return {"not": "a list of changes"}


# ---------------------------------------------------------------------- declarations
def test_a_projection_is_checked_when_declared() -> None:
    with pytest.raises(ProjectionDefinitionError, match="NAME"):
        class NoName(Projection):
            CATEGORIES = ("Lot",)
    with pytest.raises(ProjectionDefinitionError, match="not in CATEGORIES"):
        class Elsewhere(Projection):
            NAME = "elsewhere"
            CATEGORIES = ("Lot",)

            @handles("Bidder", "AccountOpened")
            def h(self, event: EventEnvelope, doc: Document | None) -> list[Any]:
                return []
    with pytest.raises(ProjectionDefinitionError, match="two handlers"):
        class Twice(Projection):
            NAME = "twice"
            CATEGORIES = ("Lot",)

            @handles("Lot", "Opened")
            def a(self, event: EventEnvelope, doc: Document | None) -> list[Any]:
                return []

            @handles("Lot", "Opened")
            def b(self, event: EventEnvelope, doc: Document | None) -> list[Any]:
                return []
    with pytest.raises(ProjectionDefinitionError, match="ON_ERROR"):
        class Policy(Projection):
            NAME = "policy"
            CATEGORIES = ("Lot",)
            ON_ERROR = "retry"
    assert issubclass(ProjectionDefinitionError, ProjectionError)


# ---------------------------------------------------------------------- changes
def test_changes_mean_what_they_say() -> None:
    doc = apply_changes(None, "k", check_changes([Set("k", {"a.b": 1, "t": "x"}), Increment("k", {"n": 2}),
                                                 Push("k", "l", (1, 2, 3), cap=2)]))
    assert doc == {"_id": "k", "a": {"b": 1}, "t": "x", "n": 2, "l": [2, 3]}
    doc = apply_changes(doc, "k", check_changes([Unset("k", ("a.b", "missing")), Increment("k", {"n": -1.5}),
                                                 Push("k", "l", (4,), cap=2)]))
    assert doc == {"_id": "k", "a": {}, "t": "x", "n": 0.5, "l": [3, 4]}
    assert apply_changes(doc, "k", [Delete("k")]) is None
    assert apply_changes(None, "k", [Unset("k", ("a",))]) is None  # nothing to unset: no document
    assert path("lots", "a.b$c%") == "lots.a%2Eb%24c%25"


@pytest.mark.parametrize(("changes", "match"), [
    ([Set("k", {"_applied": 1})], "reserved"),
    ([Set("k", {"_id": "other"})], "reserved"),
    ([Set("k", {"a.$where": 1})], r"'\$'"),
    ([Set("k", {"a..b": 1})], "empty segment"),
    ([Set("k", {"a": 1}), Increment("k", {"a": 1})], "twice"),
    ([Set("k", {"a": {"b": 1}}), Set("k", {"a.b": 2})], "twice"),
    ([Set("k", {"a": 1}), Delete("k")], "Delete"),
    ([Set("", {"a": 1})], "key"),
    ([Increment("k", {"a": "1"})], "not a number"),
    ([Increment("k", {"a": True})], "not a number"),
    ([Set("k", {"a": 2**64})], "64 bits"),
    ([Set("k", {"a": object()})], "cannot hold"),
    ([Set("k", {"a": {"x.y": 1}})], "map key"),
    ([Push("k", "l", (1,), cap=0)], "cap"),
    ("Set", "list of changes"),
    ([{"set": 1}], "not a change"),
])
def test_invalid_changes_are_refused(changes: Any, match: str) -> None:
    with pytest.raises(ChangeError, match=match):
        check_changes(changes)


def test_one_event_changes_different_documents_and_maps_independently() -> None:
    assert len(check_changes([Set("a", {"x": 1}), Set("b", {"x": 1}), Set("a", {"y.z": 1, "y.w": 2})])) == 3


# ---------------------------------------------------------------------- the sandbox
def test_handlers_build_documents_and_see_the_current_one() -> None:
    box = ProjectionSandbox(Counts())
    for amount in (5, 9, 7):
        box.given("Lot-a", "BidAccepted", amount=amount)
    box.given("Lot-b", "BidAccepted", amount=1)
    assert box.document("a") == {"_id": "a", "bids": 3, "total": 21, "max": 9, "last": [9, 7]}
    assert box.document("all") == {"_id": "all", "bids": 4}
    assert box.outcome_count("applied") == 4


def test_a_failing_handler_is_parked_with_a_metric_holding_its_stream_back_while_others_go_on() -> None:
    box = ProjectionSandbox(Counts())
    box.given("Lot-a", "BidAccepted", amount=5)
    box.feed(box.envelope("Lot-a", "BidAccepted", amount=13))  # the handler raises
    box.given("Lot-b", "Broken")  # the handler returns no list of changes
    box.feed(box.envelope("Lot-a", "BidAccepted", amount=6), box.envelope("Lot-c", "BidAccepted", amount=7))
    assert box.document("a")["bids"] == 1 and box.document("c")["bids"] == 1  # Lot-a waits behind its parked event
    parked = box.parked()
    assert [(p.stream_id, p.version, p.event_type) for p in parked] == [
        ("Lot-a", 2, "BidAccepted"), ("Lot-b", 1, "Broken"), ("Lot-a", 3, "BidAccepted")]
    assert "RuntimeError: unlucky" in parked[0].error and "ChangeError" in parked[1].error
    assert parked[2].error.startswith("held behind")
    assert box.outcome_count("parked") == 3 and box.outcome_count("applied") == 2
    assert box.models["counts"].streams == {"Lot-a": 1, "Lot-c": 1}  # tracked up to just before the parked events


def test_within_one_batch_the_events_after_a_parked_one_are_held_behind_it() -> None:
    box = ProjectionSandbox(Counts())
    first = box.envelope("Lot-a", "BidAccepted", amount=5)
    box.feed(first, *(replace(first, version=n, position=n, payload={"amount": amount})
                      for n, amount in ((2, 13), (3, 6))))
    assert box.document("a")["bids"] == 1
    assert [(p.version, p.error) for p in box.parked()][1:] == [(3, "held behind Lot-a@2")]


def test_skip_policy_counts_and_drops() -> None:
    class Skipping(Counts):
        NAME = "skipping"
        ON_ERROR = "skip"

    box = ProjectionSandbox(Skipping())
    box.given("Lot-a", "BidAccepted", amount=13)
    box.given("Lot-a", "BidAccepted", amount=1)
    assert box.parked() == [] and box.outcome_count("skipped") == 1 and box.document("a")["bids"] == 1


def test_stop_policy_raises_and_writes_nothing_of_the_batch() -> None:
    class Stopping(Counts):
        NAME = "stopping"
        ON_ERROR = "stop"

    box = ProjectionSandbox(Stopping())
    box.given("Lot-a", "BidAccepted", amount=1)
    good = box.envelope("Lot-a", "BidAccepted", amount=2)
    bad = EventEnvelope(**_fields(good, version=3, amount=13))
    with pytest.raises(HandlerFailed) as failed:
        box.feed(good, bad)
    assert (failed.value.stream_id, failed.value.version) == ("Lot-a", 3)
    assert box.document("a")["bids"] == 1  # the good event of the refused batch is not written either
    assert box.models["stopping"].streams == {"Lot-a": 1}
    box.feed(good)  # the runner may deliver again up to the poison event
    assert box.document("a")["bids"] == 2


def _fields(envelope: EventEnvelope, version: int, **payload: Any) -> dict[str, Any]:
    return {"stream": envelope.stream, "category": envelope.category, "entity_id": envelope.entity_id,
            "version": version, "type": envelope.type, "payload": payload, "recorded_at": envelope.recorded_at,
            "position": envelope.position + 1, "event_id": f"{envelope.event_id}-x"}


def test_unhandled_types_are_ignored_with_a_metric_or_stop_when_told() -> None:
    box = ProjectionSandbox(Counts())
    box.given("Lot-a", "Chatted", text="hi")
    box.given("Bidder-bob", "AccountOpened", credit=1)  # a category it does not read
    assert box.documents() == {} and box.outcome_count("ignored") == 2

    class Strict(Counts):
        NAME = "strict"
        ON_UNHANDLED = "stop"

    strict = ProjectionSandbox(Strict())
    with pytest.raises(UnhandledEvent, match="Chatted"):
        strict.given("Lot-a", "Chatted", text="hi")


def test_an_undecodable_stored_event_is_parked() -> None:
    box = ProjectionSandbox(Counts())
    box.feed(StreamEvent("Lot-a", 1, 10, "e1", "domain.auction.lot:Lot.BidAccepted", b"\xc1"))
    assert [(p.version, p.event_type) for p in box.parked()] == [(1, "BidAccepted")] and "EventDecodeError" in box.parked()[0].error


# ---------------------------------------------------------------------- exactly once
def test_a_redelivered_batch_changes_nothing() -> None:
    box = ProjectionSandbox(Counts())
    batch = [box.envelope("Lot-a", "BidAccepted", amount=5)]
    box.feed(*batch)
    batch.append(box.envelope("Lot-a", "BidAccepted", amount=6))
    box.feed(batch[1])
    before = box.documents()
    plans = box.feed(*batch)
    assert box.documents() == before and plans["counts"].outcomes == {"duplicate": 2}


def test_a_gap_is_refused_never_skipped() -> None:
    box = ProjectionSandbox(Counts())
    first = box.given("Lot-a", "BidAccepted", amount=5)
    assert first["counts"].streams == {"Lot-a": 1}
    third = EventEnvelope("Lot-a", "Lot", "a", 3, "BidAccepted", {"amount": 7}, datetime.now(UTC), 99, "e3")
    before = box.documents()
    with pytest.raises(VersionGap) as gap:
        box.feed(third)
    assert (gap.value.applied, gap.value.got) == (1, 3)
    assert box.documents() == before and box.models["counts"].streams == {"Lot-a": 1}
    first_of_other = EventEnvelope("Lot-b", "Lot", "b", 2, "BidAccepted", {"amount": 7}, datetime.now(UTC), 100, "e4")
    with pytest.raises(VersionGap):
        box.feed(first_of_other)  # a stream starts at version 1


def test_documents_remember_what_they_applied_when_tracking_is_lost() -> None:
    """A batch cut short after some documents were written: delivered again, each document
    applies only what it lacks (increments are not doubled)."""
    box = ProjectionSandbox(Counts())
    events = [box.envelope("Lot-a", "BidAccepted", amount=5)]
    box.feed(events[0])
    events += [box.envelope("Lot-b", "BidAccepted", amount=3)]
    box.feed(events[1])
    expected = box.documents()
    box.models["counts"].streams.clear()  # as if the stream tracking write was lost in a crash
    del box.models["counts"].raw["b"]  # ... and document b's write too
    box.feed(*events)
    assert box.documents() == expected


def test_a_deleted_document_stays_deleted_on_redelivery() -> None:
    box = ProjectionSandbox(Counts())
    events = [box.envelope("Lot-a", "BidAccepted", amount=5)]
    box.feed(events[0])
    events.append(box.envelope("Lot-a", "Withdrawn"))
    box.feed(events[1])
    assert box.document("a") is None and box.document("all") == {"_id": "all", "bids": 1}
    box.models["counts"].streams.clear()
    box.feed(*events)
    assert box.document("a") is None and box.document("all") == {"_id": "all", "bids": 1}
    box.given("Lot-a", "BidAccepted", amount=8)  # a later event creates it afresh
    assert box.document("a") == {"_id": "a", "bids": 1, "total": 8, "max": 8, "last": [8]}
