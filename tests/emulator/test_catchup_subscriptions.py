"""Catch-up subscriptions to a stream and to ``$all``."""

from __future__ import annotations

import threading
import uuid

import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import GrpcError, StreamIsDeletedError

SUBSCRIPTION_DEADLINE = 10.0


def _append(client: KurrentDBClient, stream: str, *types: str) -> int:
    events = [NewEvent(type=t, data=b"{}") for t in types]
    return client.append_to_stream(stream, events=events, current_version=StreamState.ANY)


def test_stream_subscription_gets_history_then_live_events(
    client: KurrentDBClient, stream_name: str
) -> None:
    """EventStoreDB docs, Catch-up subscriptions: a subscription first delivers the
    existing events, then reports it caught up, then delivers new events live."""
    _append(client, stream_name, "A", "B")
    subscription = client.subscribe_to_stream(
        stream_name, include_caught_up=True, timeout=SUBSCRIPTION_DEADLINE
    )
    received: list[str] = []
    for event in subscription:
        if event.is_caught_up:
            received.append("caught-up")
            _append(client, stream_name, "C")
            continue
        received.append(event.type)
        if event.type == "C":
            break
    subscription.stop()
    assert received == ["A", "B", "caught-up", "C"]


def test_stream_subscription_from_revision_is_exclusive(
    client: KurrentDBClient, stream_name: str
) -> None:
    """EventStoreDB docs, Catch-up subscriptions / Subscribing from a specific
    position: the events delivered are those *after* the given revision."""
    _append(client, stream_name, "A", "B", "C")
    subscription = client.subscribe_to_stream(
        stream_name, stream_position=0, timeout=SUBSCRIPTION_DEADLINE
    )
    received = []
    for event in subscription:
        received.append(event.stream_position)
        if event.stream_position == 2:
            break
    subscription.stop()
    assert received == [1, 2]


def test_stream_subscription_from_end_gets_only_new_events(
    client: KurrentDBClient, stream_name: str
) -> None:
    """EventStoreDB docs, Catch-up subscriptions / Subscribing from the end: only
    events appended after the subscription started are delivered."""
    _append(client, stream_name, "Old")
    subscription = client.subscribe_to_stream(stream_name, from_end=True, timeout=SUBSCRIPTION_DEADLINE)
    _append(client, stream_name, "New")
    event = next(iter(subscription))
    subscription.stop()
    assert event.type == "New"


def test_subscription_to_missing_stream_waits_for_it(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Catch-up subscriptions: subscribing to a stream that does
    not exist yet is allowed; its first events arrive when written."""
    subscription = client.subscribe_to_stream(stream_name, timeout=SUBSCRIPTION_DEADLINE)
    timer = threading.Timer(0.2, _append, args=(client, stream_name, "First"))
    timer.start()
    event = next(iter(subscription))
    subscription.stop()
    timer.join()
    assert (event.type, event.stream_position) == ("First", 0)


def test_all_subscription_resumes_after_position_exclusive(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Subscribing to $all from a position: the subscription
    resumes *after* the given commit position (the event at it is not redelivered)."""
    _append(client, stream_name, "A", "B", "C")
    mine = client.get_stream(stream_name)
    subscription = client.subscribe_to_all(
        commit_position=mine[0].commit_position, timeout=SUBSCRIPTION_DEADLINE
    )
    received = []
    for event in subscription:
        if event.stream_name == stream_name:
            received.append(event.type)
        if event.id == mine[-1].id:
            break
    subscription.stop()
    assert received == ["B", "C"]


def test_all_subscription_history_then_live(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Catch-up subscriptions to $all: historical events, a
    caught-up notification, then live events, in commit order."""
    first = _append(client, stream_name, "H1")
    _append(client, stream_name, "H2")
    subscription = client.subscribe_to_all(
        commit_position=first,
        include_caught_up=True,
        filter_include=(stream_name,),
        filter_by_stream_name=True,
        timeout=SUBSCRIPTION_DEADLINE,
    )
    received = []
    for event in subscription:
        if event.is_caught_up:
            received.append("caught-up")
            _append(client, stream_name, "Live")
        else:
            received.append(event.type)
        if event.type == "Live":
            break
    subscription.stop()
    assert received == ["H2", "caught-up", "Live"]


def test_filtered_all_subscription_sends_checkpoints(client: KurrentDBClient) -> None:
    """EventStoreDB docs, Server-side filtering / Checkpointing: a filtered ``$all``
    subscription sends checkpoints every ``window * multiplier`` considered events
    (matching or not), so a client can resume without rescanning."""
    tag = uuid.uuid4().hex
    start = _append(client, f"noise-{tag}", "Noise")
    for _ in range(3):
        _append(client, f"noise-{tag}", *["Noise"] * 4)
    _append(client, f"match-{tag}", f"Match{tag}")
    subscription = client.subscribe_to_all(
        commit_position=start,
        filter_include=(f"Match{tag}",),
        include_checkpoints=True,
        window_size=2,
        checkpoint_interval_multiplier=2,
        timeout=SUBSCRIPTION_DEADLINE,
    )
    checkpoints: list[int] = []
    matched = None
    for event in subscription:
        if event.is_checkpoint:
            checkpoints.append(event.commit_position)
        elif event.type == f"Match{tag}":
            matched = event
            break
    subscription.stop()
    assert matched is not None
    assert len(checkpoints) >= 3  # 12 noise events considered, interval 4
    assert checkpoints == sorted(checkpoints)
    assert all(start < c < matched.commit_position for c in checkpoints)


def test_subscription_from_invalid_position_fails(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs / server behaviour: subscribing to ``$all`` from a position
    that is not an event boundary fails ("Trying to read from an invalid position")."""
    position = _append(client, stream_name, "A")
    subscription = client.subscribe_to_all(commit_position=position + 1, timeout=SUBSCRIPTION_DEADLINE)
    with pytest.raises(GrpcError, match="invalid position"):
        next(iter(subscription))


def test_subscription_to_tombstoned_stream_fails(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Deleting events / Hard delete: a tombstoned stream can no
    longer be read or subscribed to (StreamDeleted)."""
    _append(client, stream_name, "A")
    client.tombstone_stream(stream_name, current_version=0)
    subscription = client.subscribe_to_stream(stream_name, timeout=SUBSCRIPTION_DEADLINE)
    with pytest.raises(StreamIsDeletedError):
        next(iter(subscription))
