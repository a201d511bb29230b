"""Reading streams and ``$all`` (directions, start points, limits, filters)."""

from __future__ import annotations

import uuid

import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import NotFoundError


def _fill(client: KurrentDBClient, stream: str, count: int, prefix: str = "E") -> int:
    events = [NewEvent(type=f"{prefix}{i}", data=b"{}") for i in range(count)]
    return client.append_to_stream(stream, events=events, current_version=StreamState.ANY)


def test_read_forwards_backwards_and_from_revision(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Reading events: a stream is read forwards from the start
    or from a revision (inclusive), backwards from the end or from a revision
    (inclusive), with an optional maximum count."""
    _fill(client, stream_name, 5)
    assert [e.stream_position for e in client.get_stream(stream_name)] == [0, 1, 2, 3, 4]
    assert [e.stream_position for e in client.get_stream(stream_name, stream_position=2)] == [2, 3, 4]
    assert [e.stream_position for e in client.get_stream(stream_name, limit=2)] == [0, 1]
    assert [e.stream_position for e in client.get_stream(stream_name, backwards=True)] == [4, 3, 2, 1, 0]
    assert [
        e.stream_position
        for e in client.get_stream(stream_name, backwards=True, stream_position=3, limit=2)
    ] == [3, 2]
    assert client.get_stream(stream_name, stream_position=9) == ()
    assert client.get_current_version(stream_name) == 4


def test_read_missing_stream_is_not_found(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Reading events / Checking if the stream exists: reading a
    stream that does not exist yields a StreamNotFound response."""
    with pytest.raises(NotFoundError):
        client.get_stream(stream_name)
    assert client.get_current_version(stream_name) is StreamState.NO_STREAM


def test_read_all_forwards_backwards_and_from_position(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Reading from the $all stream: ``$all`` holds every event in
    commit order; reading forwards from a position includes the event at that
    position, reading backwards goes from the end towards the start."""
    _fill(client, stream_name, 3)
    mine = client.get_stream(stream_name)
    start = mine[0].commit_position
    forwards = [e for e in client.read_all(commit_position=start, limit=3)]
    assert [e.id for e in forwards] == [e.id for e in mine]
    backwards = list(client.read_all(backwards=True, limit=50, filter_exclude=()))
    positions = [e.commit_position for e in backwards]
    assert positions == sorted(positions, reverse=True)
    assert mine[-1].id in {e.id for e in backwards}


def test_read_all_with_event_type_regex_filters(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Server-side filtering: an event-type filter with a regular
    expression keeps (include) or drops (exclude) events of ``$all`` by type."""
    tag = uuid.uuid4().hex[:8]
    events = [NewEvent(type=f"Keep{tag}", data=b"{}"), NewEvent(type=f"Drop{tag}", data=b"{}")] * 2
    client.append_to_stream(stream_name, events=events, current_version=StreamState.NO_STREAM)
    start = client.get_stream(stream_name)[0].commit_position
    included = list(client.read_all(commit_position=start, filter_include=(f"Keep{tag}",)))
    assert [e.type for e in included] == [f"Keep{tag}"] * 2
    excluded = list(
        client.read_all(commit_position=start, filter_exclude=(f"Keep{tag}", r"\$.*"), limit=2)
    )
    assert [e.type for e in excluded] == [f"Drop{tag}"] * 2


def test_read_all_with_stream_name_filters(client: KurrentDBClient) -> None:
    """EventStoreDB docs, Server-side filtering: a stream-name filter (regex or
    prefix) selects events of ``$all`` by the name of their stream."""
    tag = uuid.uuid4().hex[:8]
    wanted, other = f"orders-{tag}-1", f"invoices-{tag}-1"
    first = _fill(client, wanted, 2)
    _fill(client, other, 2)
    start = client.get_stream(wanted)[0].commit_position
    by_regex = list(
        client.read_all(commit_position=start, filter_include=(f"orders-{tag}.*",), filter_by_stream_name=True)
    )
    assert {e.stream_name for e in by_regex} == {wanted}
    assert len(by_regex) == 2
    by_prefix = list(
        client.read_all(
            commit_position=start,
            filter_include=(f"invoices-{tag}",),
            filter_by_stream_name=True,
            filter_by_prefix=True,
        )
    )
    assert {e.stream_name for e in by_prefix} == {other}
    assert first < by_prefix[0].commit_position


def test_default_read_all_filter_hides_system_events(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Server-side filtering / system events: events whose type
    starts with ``$`` (e.g. ``$metadata``) are system events; the client's
    default exclude filter hides them, an empty filter shows them."""
    client.set_stream_metadata(stream_name, metadata={"$maxAge": 60})
    metadata_event = client.get_stream(f"$${stream_name}")[0]
    visible = list(client.read_all(commit_position=metadata_event.commit_position, limit=1))
    assert all(e.type != "$metadata" for e in visible)
    raw = list(client.read_all(commit_position=metadata_event.commit_position, limit=1, filter_exclude=()))
    assert raw[0].type == "$metadata"
    assert client.get_stream_metadata(stream_name)[0] == {"$maxAge": 60}
