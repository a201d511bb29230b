"""Contract of the downstream event stream ports (infrastructure.persistence.subscriptions).

Catch-up subscriptions (:class:`EventStream`) run against every store: SQLite (file; the
stream opened from the settings, like a projection process of its own, so it sees the
journal's writes through the database), PostgreSQL (the real server the session fixture
starts, a fresh database per test; the stream on a connection pool of its own, live
events by LISTEN/NOTIFY), memory (the stream on the journal's recorder) and EventStoreDB
(the emulator, or the server ``EVENTSTOREDB_URI`` names, in a namespace - stream prefix -
of the test's own).

Persistent subscriptions (server-kept group positions, competing consumers, acks,
parking) are an EventStoreDB server feature: those tests run on EventStoreDB only.

Events go in through the journal port, as the state nodes write them. Where a test
asserts the server's semantics, its docstring cites the EventStoreDB documentation
(https://developers.eventstore.com/, "Clients / gRPC" and "Server / Features").
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

from infrastructure.errors import (
    ConfigurationError,
    SubscriptionError,
    SubscriptionGroupExists,
    SubscriptionGroupNotFound,
)
from infrastructure.persistence import EventJournal, StreamWrite, open_event_stream, open_journal, open_subscriptions
from infrastructure.persistence.event_ids import event_id
from infrastructure.persistence.eventstoredb_subscriptions import EventStoreDBSubscriptions
from infrastructure.persistence.subscriptions import (
    Checkpoint,
    Delivery,
    EventFilter,
    EventStream,
    GroupSettings,
    Source,
    StreamEvent,
)
from infrastructure.settings import Settings
from ops.local.emulator import launch_emulator
from tests.conftest import (
    STORES,
    eventstoredb_settings,
    postgres_settings,
    sqlite_settings,
)
from tests.support.servers import PostgresServer

WAIT = 10.0


@dataclass
class Store:
    name: str
    journal: EventJournal
    stream: EventStream


@pytest.fixture
def fresh_postgres(postgres_server: PostgresServer) -> Iterator[Settings]:
    """Settings for a database of this test's own on the session's server (the tests
    use fixed stream IDs and read the whole store)."""
    dbname = f"sub_{uuid.uuid4().hex[:12]}"
    admin = {"host": "127.0.0.1", "port": postgres_server.port, "user": postgres_server.user,
                 "dbname": postgres_server.dbname, "autocommit": True}
    with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{dbname}"')
    yield replace(postgres_settings(postgres_server), postgres_dbname=dbname)
    with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[Store]:
    """A journal and the catch-up event stream on the same store (and namespace)."""
    name = request.param
    if name == "sqlite":
        settings = sqlite_settings(tmp_path)
    elif name == "postgres":
        settings = request.getfixturevalue("fresh_postgres")
    elif name == "eventstoredb":
        settings = eventstoredb_settings(request.getfixturevalue("eventstoredb_uri"))
    else:
        settings = Settings(store="memory")
    journal = open_journal(settings)
    # memory: the events live in the journal; the others: a stream of its own, like another process
    stream = open_event_stream(settings, journal if name == "memory" else None)
    yield Store(name, journal, stream)
    stream.close()
    journal.close()


@pytest.fixture
def groups(eventstoredb_uri: str) -> Iterator[tuple[EventJournal, EventStoreDBSubscriptions]]:
    """EventStoreDB only: a journal and the persistent subscription port, one namespace."""
    settings = eventstoredb_settings(eventstoredb_uri)
    journal, subscriptions = open_journal(settings), open_subscriptions(settings)
    yield journal, subscriptions
    subscriptions.close()
    journal.close()


def write(journal: EventJournal, stream_id: str, *topics: str, after: int = 0) -> None:
    events = tuple(StoredEvent(stream_id, after + i, topic, f"{stream_id}:{after + i}".encode())
                   for i, topic in enumerate(topics, start=1))
    assert journal.append([StreamWrite(stream_id, after, events)]) == [None]


def take(iterator: Any, count: int, timeout: float = WAIT) -> list[Any]:
    """The first ``count`` items, read on a thread; fails (after stopping) on timeout."""
    got: list[Any] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            for item in iterator:
                got.append(item)
                if len(got) >= count:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        iterator.stop()
        thread.join(5)
        raise AssertionError(f"got {len(got)} of {count} items in {timeout}s: {got}")
    if failure:
        raise failure[0]
    return got


def events_only(items: list[Any]) -> list[StreamEvent]:
    return [i for i in items if isinstance(i, StreamEvent)]


# ---------------------------------------------------------------------------- catch-up
def test_category_subscription_gets_that_category_in_order(store: Store) -> None:
    journal, stream = store.journal, store.stream
    write(journal, "Lot-a", "m:Lot.Opened", "m:Lot.BidPlaced")
    write(journal, "Bidder-x", "m:Bidder.AccountOpened")
    write(journal, "Lot-b", "m:Lot.Opened")
    journal.save_snapshot(StoredEvent("Lot-a", 2, "m:Lot.Snapshot", b"snap"))
    with stream.subscribe_category("Lot") as subscription:
        got = take(subscription, 3)
    assert [(e.stream_id, e.version, e.topic) for e in got] == [
        ("Lot-a", 1, "m:Lot.Opened"), ("Lot-a", 2, "m:Lot.BidPlaced"), ("Lot-b", 1, "m:Lot.Opened")]
    assert got[0].state == b"Lot-a:1" and got[0].category == "Lot"
    assert got[0].stored() == StoredEvent("Lot-a", 1, "m:Lot.Opened", b"Lot-a:1")
    positions = [e.position for e in got]
    assert positions == sorted(set(positions))  # strictly increasing


def test_whole_store_subscription_skips_snapshots_and_filters_topics(store: Store) -> None:
    journal, stream = store.journal, store.stream
    write(journal, "Lot-a", "m:Lot.Opened", "m:Lot.Closed")
    journal.save_snapshot(StoredEvent("Lot-a", 2, "m:Lot.Snapshot", b"snap"))
    write(journal, "Bidder-x", "m:Bidder.AccountOpened")
    with stream.subscribe_all() as everything:
        assert [e.stream_id for e in take(everything, 3)] == ["Lot-a", "Lot-a", "Bidder-x"]
    only_closed = EventFilter(topics=("m:Lot.Closed",), topic_prefixes=("m:Bidder.",))
    assert [e.topic for e in stream.read_all(filter=only_closed)] == ["m:Lot.Closed", "m:Bidder.AccountOpened"]
    by_pattern = EventFilter(stream_pattern=r"Bidder-.*")
    assert [e.stream_id for e in stream.read_all(filter=by_pattern)] == ["Bidder-x"]
    both = EventFilter(categories=("Lot",), topics=("m:Lot.Closed",))  # server filters one kind, we the other
    assert [e.topic for e in stream.read_all(filter=both)] == ["m:Lot.Closed"]


def test_resuming_after_a_position_is_exclusive(store: Store) -> None:
    """EventStoreDB docs, Clients / Catch-up subscriptions, "Subscribing from a specific
    position": the subscription delivers the events *after* the given position."""
    journal, stream = store.journal, store.stream
    write(journal, "Lot-a", "m:E", "m:E", "m:E")
    with stream.subscribe_category("Lot") as first:
        one, two, _ = take(first, 3)
    with stream.subscribe_category("Lot", after=two.position) as resumed:
        [three] = take(resumed, 1)
    assert three.version == 3
    with stream.subscribe_all(after=one.position) as resumed_all:
        assert [e.version for e in take(resumed_all, 2)] == [2, 3]
    assert [e.version for e in stream.read_all(after=one.position)] == [2, 3]
    assert [e.version for e in stream.read_all(limit=2)] == [1, 2]
    assert stream.head_position() == three.position


def test_live_events_arrive_after_catching_up(store: Store) -> None:
    journal, stream = store.journal, store.stream
    write(journal, "Lot-a", "m:E")
    subscription = stream.subscribe_category("Lot")
    received: list[StreamEvent] = []
    reader = threading.Thread(target=lambda: received.extend(take(subscription, 3)), daemon=True)
    reader.start()
    time.sleep(0.2)  # the subscription is live now
    write(journal, "Lot-a", "m:E", after=1)
    write(journal, "Lot-b", "m:E")
    reader.join(WAIT)
    subscription.stop()
    assert [(e.stream_id, e.version) for e in received] == [("Lot-a", 1), ("Lot-a", 2), ("Lot-b", 1)]


def test_checkpoints_let_a_rarely_matching_consumer_advance(store: Store) -> None:
    """EventStoreDB docs, Clients / Catch-up subscriptions, "Server-side filtering":
    a filtered subscription receives checkpoints (positions up to which the filter has
    looked) so it can store its progress while no event matches."""
    journal, stream = store.journal, store.stream
    write(journal, "Noise-1", *["m:Noise"] * 400)  # well past the server's checkpoint interval
    write(journal, "Rare-1", "m:Rare")
    with stream.subscribe_category("Rare", include_checkpoints=True) as subscription:
        items = take(subscription, 1)
        while not events_only(items):
            items += take(subscription, 1)
    checkpoints = [i.position for i in items if isinstance(i, Checkpoint)]
    [rare] = events_only(items)
    assert checkpoints and checkpoints == sorted(checkpoints) and checkpoints[-1] < rare.position
    write(journal, "Rare-2", "m:Rare")
    with stream.subscribe_category("Rare", after=checkpoints[-1]) as resumed:  # a checkpoint is a resume point
        assert [e.stream_id for e in events_only(take(resumed, 2))] == ["Rare-1", "Rare-2"]


def test_namespaces_do_not_see_each_other(eventstoredb_uri: str) -> None:
    """EventStoreDB only: namespaces are stream prefixes on one shared server (the other
    stores separate installations by database/file)."""
    mine, other_settings = eventstoredb_settings(eventstoredb_uri), eventstoredb_settings(eventstoredb_uri)
    journal, other, stream = open_journal(mine), open_journal(other_settings), open_event_stream(mine)
    try:
        write(other, "Lot-a", "m:Other")
        write(journal, "Lot-a", "m:Mine")
        assert [e.topic for e in stream.read_all()] == ["m:Mine"]
    finally:
        stream.close()
        other.close()
        journal.close()


def test_a_position_that_is_not_an_event_is_refused(store: Store) -> None:
    """EventStoreDB docs, Clients / Reading events, "Reading from the $all stream": a
    position must be one the server gave out (a commit position of an event)."""
    journal, stream = store.journal, store.stream
    write(journal, "Lot-a", "m:E", "m:E")
    first, last = stream.read_all()
    if store.name == "eventstoredb":
        # ESDB-specific: commit positions are not contiguous, so first + 1 lies inside the
        # log without being an event boundary (on the recorder stores it is the next event).
        bogus = [first.position + 1]
    else:
        bogus = [last.position + 1, 0, -1]
    for position in bogus:
        with pytest.raises(SubscriptionError):
            subscription = stream.subscribe_all(after=position)
            take(subscription, 1, timeout=3)
        if store.name != "eventstoredb":
            with pytest.raises(SubscriptionError):
                stream.read_all(after=position)


def test_eventstoredb_adapters_skip_the_system_events_a_fresh_log_starts_with() -> None:
    """A real server's log starts with its own ``$`` events (``$epoch-information``, the
    scavenger's ``$scavenges`` events and metadata; the emulator writes the same, see
    tests/emulator/test_fresh_log.py). In the default namespace (no stream prefix)
    reading, following and a persistent group on the whole store see only our events.
    A private emulator: only an empty log shows where the store starts."""
    running = launch_emulator()
    settings = eventstoredb_settings(running.uri, eventstoredb_stream_prefix="")
    journal, stream, subs = open_journal(settings), open_event_stream(settings), open_subscriptions(settings)
    try:
        write(journal, "Lot-a", "m:Lot.Opened", "m:Lot.Closed")
        assert [(e.stream_id, e.version) for e in stream.read_all()] == [("Lot-a", 1), ("Lot-a", 2)]
        last = stream.read_all()[-1]
        assert stream.head_position() == last.position
        with stream.subscribe_all() as everything:
            assert [e.version for e in events_only(take(everything, 2))] == [1, 2]
        group = group_name()
        subs.create_group(group, Source.all())
        consumer = subs.consume(group, Source.all())
        try:
            deliveries = take(consumer, 2)
            for delivery in deliveries:
                consumer.ack(delivery)
        finally:
            consumer.stop()
        assert [(d.event.stream_id, d.event.version) for d in deliveries] == [("Lot-a", 1), ("Lot-a", 2)]
    finally:
        subs.close()
        stream.close()
        journal.close()
        running.stop()


def test_stop_ends_a_blocked_iteration(store: Store) -> None:
    stream = store.stream
    subscription = stream.subscribe_category("Empty")
    ended = threading.Event()

    def consume() -> None:
        for _ in subscription:
            pass
        ended.set()

    threading.Thread(target=consume, daemon=True).start()
    time.sleep(0.2)
    subscription.stop()
    assert ended.wait(5)


@pytest.mark.parametrize("store", ["sqlite", "postgres", "memory"], indirect=True)
def test_recorder_stores_deliver_live_by_notification_or_polling(store: Store) -> None:
    """Recorder stores only (EventStoreDB pushes from the server): PostgreSQL and memory
    use the recorder's subscribe() (LISTEN/NOTIFY, in-process listeners); SQLite has none
    and polls. Closing the stream ends its running subscriptions."""
    journal, stream = store.journal, store.stream
    write(journal, "Lot-a", "m:E")
    subscription = stream.subscribe_all()
    [event] = take(subscription, 1)
    assert event.event_id == str(event_id("Lot-a", 0, "m:E", b"Lot-a:1"))  # the same ID EventStoreDB stores
    assert stream.live_mode == ("poll" if store.name == "sqlite" else "notify")  # type: ignore[attr-defined]
    ended = threading.Event()
    threading.Thread(target=lambda: (list(subscription), ended.set()), daemon=True).start()
    time.sleep(0.1)
    stream.close()
    assert ended.wait(5)


def test_the_memory_store_is_followed_through_its_journal() -> None:
    with pytest.raises(ConfigurationError, match="journal"):
        open_event_stream(Settings(store="memory"))
    journal = open_journal(Settings(store="memory"))
    with pytest.raises(ConfigurationError):
        open_event_stream(Settings(store="memory"), journal=object())  # type: ignore[arg-type]
    try:
        write(journal, "Lot-a", "m:E")
        assert [e.stream_id for e in open_event_stream(Settings(store="memory"), journal).read_all()] == ["Lot-a"]
    finally:
        journal.close()


# ---------------------------------------------------------------------------- persistent
def group_name() -> str:
    return f"g-{uuid.uuid4().hex[:10]}"


def test_group_lifecycle_create_info_list_update_delete(groups: tuple[EventJournal, EventStoreDBSubscriptions]) -> None:
    _, subs = groups
    group, source = group_name(), Source.category("Lot")
    subs.create_group(group, source, GroupSettings(max_retry_count=3))
    with pytest.raises(SubscriptionGroupExists):
        subs.create_group(group, source)
    info = subs.group_info(group, source)
    assert (info.group, info.source, info.max_retry_count, info.strategy) == (group, "$all", 3, "round_robin")
    assert group in [g.group for g in subs.list_groups()]
    subs.update_group(group, source, GroupSettings(max_retry_count=7, message_timeout_s=5))
    updated = subs.group_info(group, source)
    assert (updated.max_retry_count, updated.message_timeout_s) == (7, 5)
    subs.delete_group(group, source)
    with pytest.raises(SubscriptionGroupNotFound):
        subs.group_info(group, source)
    with pytest.raises(SubscriptionGroupNotFound):
        subs.delete_group(group, source)


def test_settings_the_server_refuses_are_a_subscription_error_and_create_nothing(
        groups: tuple[EventJournal, EventStoreDBSubscriptions]) -> None:
    """KurrentDB ``PersistentSubscription``: the read batch must be smaller than the
    history buffer; the server refuses the create/update ("... failed: '<reason>'") and
    the adapter reports it as a SubscriptionError carrying that reason, not retried."""
    _, subs = groups
    group, source = group_name(), Source.category("Lot")
    with pytest.raises(SubscriptionError, match="ReadBatchSize may not be greater than or equal to BufferSize"):
        subs.create_group(group, source, GroupSettings(read_batch_size=50, history_buffer_size=50))
    with pytest.raises(SubscriptionGroupNotFound):
        subs.group_info(group, source)
    subs.create_group(group, source)
    with pytest.raises(SubscriptionError, match="refused the group's settings"):
        subs.update_group(group, source, GroupSettings(read_batch_size=600))
    assert subs.group_info(group, source).max_retry_count == GroupSettings().max_retry_count


def test_two_consumers_in_one_group_each_event_goes_to_one(groups: tuple[EventJournal, EventStoreDBSubscriptions]) -> None:
    """EventStoreDB docs, Server / Persistent subscriptions, "Consumer strategies":
    consumers of one group compete for its events; RoundRobin hands each event to one
    consumer, taking turns."""
    journal, subs = groups
    group, source = group_name(), Source.category("Lot")
    subs.create_group(group, source, GroupSettings(strategy="round_robin"))
    consumers = [subs.consume(group, source, buffer_size=5) for _ in range(2)]
    seen: dict[int, list[tuple[str, int]]] = {0: [], 1: []}
    lock = threading.Lock()

    def run(n: int) -> None:
        for delivery in consumers[n]:
            with lock:
                seen[n].append((delivery.event.stream_id, delivery.event.version))
            consumers[n].ack(delivery)

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(2)]
    for thread in threads:
        thread.start()
    for i in range(10):
        write(journal, f"Lot-{i}", "m:E")
    write(journal, "Bidder-x", "m:E")  # not in the group's source
    deadline = time.monotonic() + WAIT
    while len(seen[0]) + len(seen[1]) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # nothing more (no duplicates, no Bidder) arrives
    for consumer in consumers:
        consumer.stop()
    all_seen = seen[0] + seen[1]
    assert seen[0] and seen[1], seen
    assert sorted(all_seen) == sorted((f"Lot-{i}", 1) for i in range(10))  # each exactly once
    assert not set(seen[0]) & set(seen[1])


def test_nacked_events_are_retried_then_parked_then_replayed(groups: tuple[EventJournal, EventStoreDBSubscriptions]) -> None:
    """EventStoreDB docs, Server / Persistent subscriptions: "Acknowledgements" (a nack with
    Retry redelivers the event with its retry count incremented), "Parking" (an event whose
    retry count reached maxRetryCount is parked in the group's parked-message stream) and
    "Replaying parked messages" (ReplayParked delivers the parked events again)."""
    journal, subs = groups
    group, source = group_name(), Source.stream("Lot-poison")
    write(journal, "Lot-poison", "m:Bad", "m:Good")
    subs.create_group(group, source, GroupSettings(max_retry_count=2, strategy="dispatch_to_single"))
    consumer = subs.consume(group, source)
    deliveries: list[Delivery] = []
    try:
        while len([d for d in deliveries if d.event.topic == "m:Bad"]) < 3:  # first try + 2 retries
            [delivery] = take(consumer, 1)
            deliveries.append(delivery)
            if delivery.event.topic == "m:Bad":
                consumer.nack(delivery, "retry")
            else:
                consumer.ack(delivery)
        bad = [d.retry_count for d in deliveries if d.event.topic == "m:Bad"]
        assert bad == [0, 1, 2]
        assert any(d.event.topic == "m:Good" for d in deliveries) or take(consumer, 1)[0].event.topic == "m:Good"
        deadline = time.monotonic() + WAIT
        while subs.group_info(group, source).parked != 1:  # parked after max retries, not redelivered
            assert time.monotonic() < deadline, subs.group_info(group, source)
            time.sleep(0.05)

        subs.replay_parked(group, source)
        [replayed] = take(consumer, 1)
        assert (replayed.event.topic, replayed.event.version) == ("m:Bad", 1)
        consumer.ack(replayed)
        deadline = time.monotonic() + WAIT
        while (info := subs.group_info(group, source)).parked or info.in_flight:
            assert time.monotonic() < deadline, info
            time.sleep(0.05)
    finally:
        consumer.stop()


def test_nack_park_parks_at_once_and_skip_drops(groups: tuple[EventJournal, EventStoreDBSubscriptions]) -> None:
    """EventStoreDB docs, Server / Persistent subscriptions, "Acknowledgements": nack
    actions Park (park now), Skip (drop the event) besides Retry and Stop."""
    journal, subs = groups
    group, source = group_name(), Source.category("Lot")
    subs.create_group(group, source)
    write(journal, "Lot-a", "m:Park", "m:Skip", "m:Ok")
    with subs.consume(group, source) as consumer:
        first, second, third = take(consumer, 3)
        consumer.nack(first, "park")
        consumer.nack(second, "skip")
        consumer.ack(third)
        deadline = time.monotonic() + WAIT
        while subs.group_info(group, source).parked != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        subs.replay_parked(group, source)
        [again] = take(consumer, 1)
        assert again.event.topic == "m:Park"
        consumer.ack(again)


def test_joining_an_unknown_group_is_a_typed_error(groups: tuple[EventJournal, EventStoreDBSubscriptions]) -> None:
    _, subs = groups
    with pytest.raises(SubscriptionGroupNotFound):
        take(subs.consume(group_name(), Source.category("Lot")), 1, timeout=3)
