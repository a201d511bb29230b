"""Persistent subscriptions: competing consumers, acks/nacks, retries, parking, info."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, RecordedEvent, StreamState
from kurrentdbclient.common import AbstractPersistentSubscription
from kurrentdbclient.exceptions import (
    AlreadyExistsError,
    InternalError,
    KurrentDBClientError,
    MaximumSubscriptionsReachedError,
    NotFoundError,
)

DEADLINE = 10.0


def _append(client: KurrentDBClient, stream: str, *types: str) -> list[NewEvent]:
    events = [NewEvent(type=t, data=b"{}") for t in types]
    client.append_to_stream(stream, events=events, current_version=StreamState.ANY)
    return events


@contextlib.contextmanager
def _reading(client: KurrentDBClient, group: str, stream: str | None) -> Iterator[AbstractPersistentSubscription]:
    if stream is None:
        subscription = client.read_subscription_to_all(group, timeout=DEADLINE)
    else:
        subscription = client.read_subscription_to_stream(group, stream, timeout=DEADLINE)
    try:
        yield subscription
    finally:
        with contextlib.suppress(KurrentDBClientError):
            subscription.stop()


def _wait_for(predicate, timeout: float = DEADLINE) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_two_consumers_share_events_round_robin(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Persistent subscriptions / Consumer strategies: consumers
    of one group compete; with RoundRobin each event goes to exactly one consumer
    and the consumers take turns."""
    group = f"g-{uuid.uuid4()}"
    client.create_subscription_to_stream(group, stream_name, consumer_strategy="RoundRobin")
    received: dict[int, list[uuid.UUID]] = {0: [], 1: []}
    lock = threading.Lock()
    subscriptions = [
        client.read_subscription_to_stream(group, stream_name, timeout=DEADLINE) for _ in range(2)
    ]

    def consume(number: int) -> None:
        with contextlib.suppress(KurrentDBClientError):
            for event in subscriptions[number]:
                with lock:
                    received[number].append(event.id)
                subscriptions[number].ack(event)

    threads = [threading.Thread(target=consume, args=(n,), daemon=True) for n in range(2)]
    for thread in threads:
        thread.start()
    appended = _append(client, stream_name, *[f"E{i}" for i in range(10)])
    _wait_for(lambda: len(received[0]) + len(received[1]) >= 10)
    for subscription in subscriptions:
        with contextlib.suppress(KurrentDBClientError):
            subscription.stop()
    for thread in threads:
        thread.join(timeout=DEADLINE)
    assert received[0] and received[1]
    assert not set(received[0]) & set(received[1])
    assert set(received[0]) | set(received[1]) == {e.id for e in appended}


def test_nack_retry_redelivers_with_retry_count(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Persistent subscriptions / Acknowledgements: a nack with
    action Retry makes the server redeliver the event, with its retry count
    incremented."""
    group = f"g-{uuid.uuid4()}"
    _append(client, stream_name, "A")
    client.create_subscription_to_stream(group, stream_name)
    seen: list[tuple[str, int | None]] = []
    with _reading(client, group, stream_name) as subscription:
        for event in subscription:
            seen.append((event.type, event.retry_count))
            if event.retry_count == 0:
                subscription.nack(event, "retry")
            else:
                subscription.ack(event)
                break
    assert seen == [("A", 0), ("A", 1)]


def test_event_nacked_past_max_retries_is_parked_then_replayed(
    client: KurrentDBClient, stream_name: str
) -> None:
    """EventStoreDB docs, Persistent subscriptions / Parking and replaying: once an
    event has been retried ``max_retry_count`` times it is parked (linked into
    ``$persistentsubscription-<stream>::<group>-parked``); replaying parked
    messages delivers it again, after which nothing is parked."""
    group = f"g-{uuid.uuid4()}"
    _append(client, stream_name, "Poison", "Fine")
    client.create_subscription_to_stream(group, stream_name, max_retry_count=2)
    deliveries: list[tuple[str, int | None]] = []
    with _reading(client, group, stream_name) as subscription:
        for event in subscription:
            deliveries.append((event.type, event.retry_count))
            if event.type == "Poison":
                subscription.nack(event, "retry")
            else:
                subscription.ack(event)
            if deliveries.count(("Poison", 2)) and ("Fine", 0) in deliveries:
                break
        _wait_for(lambda: client.get_subscription_info(group, stream_name).parked_message_count == 1)
        assert [d for d in deliveries if d[0] == "Poison"] == [("Poison", 0), ("Poison", 1), ("Poison", 2)]
        parked = client.get_stream(f"$persistentsubscription-{stream_name}::{group}-parked")
        assert parked[0].type == "$>"
        assert parked[0].data == f"0@{stream_name}".encode()

        client.replay_parked_events(group, stream_name)
        replayed: RecordedEvent = next(iter(subscription))
        assert replayed.type == "Poison"
        assert replayed.link is not None and replayed.ack_id == replayed.link.id
        subscription.ack(replayed)
    assert client.get_subscription_info(group, stream_name).parked_message_count == 0


def test_nack_park_and_skip(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Persistent subscriptions / Acknowledgements: nack Park parks
    the event immediately; nack Skip drops it without parking."""
    group = f"g-{uuid.uuid4()}"
    _append(client, stream_name, "ToPark", "ToSkip", "ToAck")
    client.create_subscription_to_stream(group, stream_name)
    with _reading(client, group, stream_name) as subscription:
        for event in subscription:
            if event.type == "ToPark":
                subscription.nack(event, "park")
            elif event.type == "ToSkip":
                subscription.nack(event, "skip")
            else:
                subscription.ack(event)
                break
        _wait_for(lambda: client.get_subscription_info(group, stream_name).parked_message_count == 1)


def test_checkpoint_lets_a_new_consumer_resume(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Persistent subscription settings / Checkpoints: the group
    checkpoints processed events (after ``min_checkpoint_count`` and
    ``checkpoint_after``), so a later consumer continues after them."""
    group = f"g-{uuid.uuid4()}"
    _append(client, stream_name, "A", "B")
    client.create_subscription_to_stream(group, stream_name, min_checkpoint_count=1, checkpoint_after=0.1)
    with _reading(client, group, stream_name) as subscription:
        for event in subscription:
            subscription.ack(event)
            if event.type == "B":
                break
        _wait_for(lambda: client.get_subscription_info(group, stream_name).last_checkpointed_event_position == "1")
    _append(client, stream_name, "C")
    with _reading(client, group, stream_name) as subscription:
        event = next(iter(subscription))
        subscription.ack(event)
    assert event.type == "C"


def test_subscription_to_all_with_filter(client: KurrentDBClient) -> None:
    """EventStoreDB docs, Persistent subscriptions to $all with server-side filter:
    only events matching the filter are delivered, starting at the given position."""
    tag = uuid.uuid4().hex
    group = f"g-{tag}"
    wanted = f"wanted-{tag}"
    start = client.append_to_stream(wanted, events=[NewEvent(type="W0", data=b"{}")], current_version=StreamState.ANY)
    _append(client, f"unwanted-{tag}", "U")
    _append(client, wanted, "W1")
    client.create_subscription_to_all(
        group, commit_position=start, filter_include=(f"wanted-{tag}",), filter_by_stream_name=True
    )
    types = []
    with _reading(client, group, None) as subscription:
        assert subscription.subscription_id == f"$all::{group}"
        for event in subscription:
            types.append(event.type)
            subscription.ack(event)
            if event.type == "W1":
                break
    assert types == ["W0", "W1"]
    info = client.get_subscription_info(group)
    assert info.event_source == "$all"
    assert info.start_from == f"C:{start}/P:{start}"


def test_get_info_list_update_delete(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Persistent subscriptions / Management: groups can be
    listed (all or per stream), inspected, updated and deleted; creating an
    existing group fails, and operations on a missing group are not found."""
    group1, group2 = f"g1-{uuid.uuid4()}", f"g2-{uuid.uuid4()}"
    client.create_subscription_to_stream(group1, stream_name, max_retry_count=3, consumer_strategy="DispatchToSingle")
    client.create_subscription_to_stream(group2, stream_name, from_end=True)
    with pytest.raises(AlreadyExistsError):
        client.create_subscription_to_stream(group1, stream_name)

    info = client.get_subscription_info(group1, stream_name)
    assert (info.group_name, info.event_source, info.start_from) == (group1, stream_name, "0")
    assert (info.max_retry_count, info.consumer_strategy) == (3, "DispatchToSingle")
    assert client.get_subscription_info(group2, stream_name).start_from == "-1"
    assert {i.group_name for i in client.list_subscriptions_to_stream(stream_name)} == {group1, group2}
    assert {group1, group2} <= {i.group_name for i in client.list_subscriptions()}
    assert client.list_subscriptions_to_stream(f"{stream_name}-none") == []

    client.update_subscription_to_stream(group1, stream_name, max_retry_count=7, message_timeout=5)
    updated = client.get_subscription_info(group1, stream_name)
    assert (updated.max_retry_count, updated.message_timeout, updated.consumer_strategy) == (7, 5.0, "DispatchToSingle")

    client.delete_subscription(group1, stream_name)
    with pytest.raises(NotFoundError):
        client.get_subscription_info(group1, stream_name)
    with pytest.raises(NotFoundError):
        client.read_subscription_to_stream(group1, stream_name, timeout=DEADLINE)
    with pytest.raises(NotFoundError):
        client.delete_subscription(group1, stream_name)


def test_max_subscriber_count(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Persistent subscription settings / Max subscriber count:
    a group refuses consumers beyond its maximum."""
    group = f"g-{uuid.uuid4()}"
    client.create_subscription_to_stream(group, stream_name, max_subscriber_count=1)
    with _reading(client, group, stream_name):
        with pytest.raises(MaximumSubscriptionsReachedError):
            client.read_subscription_to_stream(group, stream_name, timeout=DEADLINE)


def test_message_timeouts_are_checked_on_the_servers_one_second_tick(
    client: KurrentDBClient, stream_name: str
) -> None:
    """EventStoreDB docs, Persistent subscription settings / Message timeout: an event
    not acknowledged within the timeout is retried, its retry count incremented.
    KurrentDB ``PersistentSubscriptionService``: message timeouts are not timers of
    their own; a 1-second ``PersistentSubscriptionTimerTick`` calls ``NotifyClockTick``,
    which retries the messages whose deadline has passed. So an unacked message with a
    10 ms timeout is redelivered once per tick, not every 10 ms: the first retry comes
    on the next tick (whenever that falls), each later one a full tick after the one
    before, so three retries take at least two seconds (a lower bound, which a slow
    machine can only lengthen; checked to the millisecond they took ~30 ms)."""
    group = f"g-{uuid.uuid4()}"
    _append(client, stream_name, "A")
    started = time.monotonic()
    client.create_subscription_to_stream(group, stream_name, message_timeout=0.01)
    counts = []
    with _reading(client, group, stream_name) as subscription:
        for event in subscription:
            counts.append(event.retry_count)
            if len(counts) == 4:
                elapsed = time.monotonic() - started
                subscription.ack(event)
                break
    assert counts == [0, 1, 2, 3]
    assert elapsed >= 1.9  # two tick intervals (asyncio may wake a clock resolution early)


def test_unknown_consumer_strategy_is_refused_on_create(client: KurrentDBClient, stream_name: str) -> None:
    """KurrentDB ``PersistentSubscriptionService.CreatePersistentSubscription``: a
    strategy the registry does not know fails with "Consumer strategy X does not
    exist." (gRPC: ``PersistentSubscriptionFailed``, status INTERNAL, which the client
    raises as InternalError); no group is created. PinnedByCorrelation is known."""
    group = f"g-{uuid.uuid4()}"
    with pytest.raises(InternalError, match="Consumer strategy Fastest does not exist"):
        client.create_subscription_to_stream(group, stream_name, consumer_strategy="Fastest")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        client.get_subscription_info(group, stream_name)
    client.create_subscription_to_stream(group, stream_name, consumer_strategy="PinnedByCorrelation")
    assert client.get_subscription_info(group, stream_name).consumer_strategy == "PinnedByCorrelation"


def test_history_buffer_must_be_larger_than_the_read_batch(client: KurrentDBClient, stream_name: str) -> None:
    """KurrentDB ``PersistentSubscription`` constructor: ``ReadBatchSize`` may not be
    greater than or equal to ``BufferSize`` (the history buffer); the service turns the
    ArgumentOutOfRangeException into a failed create/update (InternalError) and
    nothing changes."""
    group = f"g-{uuid.uuid4()}"
    with pytest.raises(InternalError, match="ReadBatchSize may not be greater than or equal to BufferSize"):
        client.create_subscription_to_stream(group, stream_name, read_batch_size=50, history_buffer_size=50)
    with pytest.raises(NotFoundError):
        client.get_subscription_info(group, stream_name)
    client.create_subscription_to_stream(group, stream_name, read_batch_size=49, history_buffer_size=50)
    with pytest.raises(InternalError, match="ReadBatchSize may not be greater than or equal to BufferSize"):
        client.update_subscription_to_stream(group, stream_name, read_batch_size=60, history_buffer_size=50)
    info = client.get_subscription_info(group, stream_name)
    assert (info.read_batch_size, info.history_buffer_size) == (49, 50)
