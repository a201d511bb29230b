"""The ``eventsourcing-eventstoredb`` recorders work against the emulator."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.utils import Environment
from eventsourcing_eventstoredb.factory import EventStoreDBFactory
from eventsourcing_eventstoredb.recorders import EventStoreDBApplicationRecorder

from ops.local.emulator import EmulatorProcess


class Counter(Aggregate):
    """An aggregate numbered from 0, matching EventStoreDB stream revisions."""

    INITIAL_VERSION = 0

    def __init__(self) -> None:
        self.count = 0

    @event("Incremented")
    def increment(self) -> None:
        self.count += 1


class Counters(Application):
    """Minimal application persisting ``Counter`` aggregates."""


@pytest.fixture
def factory(emulator: EmulatorProcess) -> Iterator[EventStoreDBFactory]:
    made = EventStoreDBFactory(Environment(env={"EVENTSTOREDB_URI": emulator.uri}))
    try:
        yield made
    finally:
        made.client.close()


def test_recorder_inserts_and_selects_events(factory: EventStoreDBFactory) -> None:
    """eventsourcing-eventstoredb docs: the aggregate recorder stores an aggregate's
    events in a stream named by its ID, with optimistic concurrency from the
    originator version (EventStoreDB docs, Appending events: expected revision),
    and selects them back in order, with gt/lte/desc/limit."""
    recorder = factory.aggregate_recorder()
    originator_id = uuid.uuid4()
    stored = [
        StoredEvent(originator_id=originator_id, originator_version=v, topic=f"t{v}", state=b'{"v": %d}' % v)
        for v in range(3)
    ]
    recorder.insert_events(stored)
    selected = recorder.select_events(originator_id)
    assert [(s.originator_version, s.topic, s.state) for s in selected] == [
        (s.originator_version, s.topic, s.state) for s in stored
    ]
    assert [s.originator_version for s in recorder.select_events(originator_id, gt=0, lte=1)] == [1]
    assert [s.originator_version for s in recorder.select_events(originator_id, desc=True, limit=2)] == [2, 1]
    with pytest.raises(IntegrityError):
        recorder.insert_events([StoredEvent(originator_id=originator_id, originator_version=1, topic="x", state=b"{}")])
    assert recorder.select_events(uuid.uuid4()) == []


def test_application_recorder_notifications(factory: EventStoreDBFactory) -> None:
    """eventsourcing-eventstoredb docs: notifications are ``$all`` events, their IDs
    are commit positions (EventStoreDB docs, Reading from $all)."""
    recorder = factory.application_recorder()
    assert isinstance(recorder, EventStoreDBApplicationRecorder)
    originator_id = uuid.uuid4()
    recorder.insert_events(
        [StoredEvent(originator_id=originator_id, originator_version=0, topic="created", state=b"{}")]
    )
    last = recorder.max_notification_id()
    assert last is not None
    notifications = recorder.select_notifications(start=last, limit=1)
    assert [(n.originator_id, n.topic, n.id) for n in notifications] == [(originator_id, "created", last)]


def test_application_with_initial_version_zero_aggregates(emulator: EmulatorProcess) -> None:
    """eventsourcing docs, Aggregates: ``INITIAL_VERSION = 0`` makes aggregate versions
    equal EventStoreDB stream revisions; the application saves and reloads them."""
    app = Counters(env={"PERSISTENCE_MODULE": "eventsourcing_eventstoredb", "EVENTSTOREDB_URI": emulator.uri})
    counter = Counter()
    counter.increment()
    counter.increment()
    app.save(counter)
    loaded = app.repository.get(counter.id)
    assert (loaded.count, loaded.version) == (2, 2)
    loaded.increment()
    app.save(loaded)
    assert app.repository.get(counter.id).count == 3
    app.close()
