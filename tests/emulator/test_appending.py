"""Appending events: expected revisions, wrong-version errors, idempotence.

Both client paths are covered: ``append_event`` uses the ``Streams.Append``
RPC, ``append_to_stream`` with a list uses ``Streams.BatchAppend``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import WrongCurrentVersionError

Appender = Callable[[KurrentDBClient, str, list[NewEvent], "int | StreamState"], int]


def _append_single(client: KurrentDBClient, stream: str, events: list[NewEvent], version: int | StreamState) -> int:
    assert len(events) == 1
    return client.append_event(stream, event=events[0], current_version=version)


def _append_batch(client: KurrentDBClient, stream: str, events: list[NewEvent], version: int | StreamState) -> int:
    return client.append_to_stream(stream, events=events, current_version=version)


APPENDERS = pytest.mark.parametrize(
    "append", [_append_single, _append_batch], ids=["Append", "BatchAppend"]
)


def _event(event_type: str = "Happened") -> NewEvent:
    return NewEvent(type=event_type, data=b'{"n": 1}', metadata=b'{"m": 2}')


@APPENDERS
def test_no_stream_succeeds_once_then_is_a_wrong_version(
    client: KurrentDBClient, stream_name: str, append: Appender
) -> None:
    """EventStoreDB docs, Appending events / Handling concurrency: expected revision
    ``NoStream`` succeeds only if the stream does not exist; otherwise the server
    answers WrongExpectedVersion (client: WrongCurrentVersionError) with the
    stream's actual revision."""
    append(client, stream_name, [_event()], StreamState.NO_STREAM)
    with pytest.raises(WrongCurrentVersionError) as caught:
        append(client, stream_name, [_event()], StreamState.NO_STREAM)
    assert caught.value.actual_version == 0
    assert len(client.get_stream(stream_name)) == 1


@APPENDERS
def test_any_always_succeeds(client: KurrentDBClient, stream_name: str, append: Appender) -> None:
    """EventStoreDB docs, Appending events: expected revision ``Any`` disables the
    optimistic concurrency check, for new and existing streams."""
    append(client, stream_name, [_event()], StreamState.ANY)
    append(client, stream_name, [_event()], StreamState.ANY)
    assert [e.stream_position for e in client.get_stream(stream_name)] == [0, 1]


@APPENDERS
def test_stream_exists_requires_an_existing_stream(
    client: KurrentDBClient, stream_name: str, append: Appender
) -> None:
    """EventStoreDB docs, Appending events: expected revision ``StreamExists``
    fails on a stream that does not exist (actual: no stream) and succeeds once
    the stream has events."""
    with pytest.raises(WrongCurrentVersionError) as caught:
        append(client, stream_name, [_event()], StreamState.EXISTS)
    assert caught.value.actual_version is StreamState.NO_STREAM
    append(client, stream_name, [_event()], StreamState.NO_STREAM)
    append(client, stream_name, [_event()], StreamState.EXISTS)
    assert len(client.get_stream(stream_name)) == 2


@APPENDERS
def test_exact_revision(client: KurrentDBClient, stream_name: str, append: Appender) -> None:
    """EventStoreDB docs, Handling concurrency: an exact expected revision must equal
    the revision of the stream's last event; a mismatch is WrongExpectedVersion
    reporting the actual revision, and nothing is written."""
    append(client, stream_name, [_event()], StreamState.NO_STREAM)
    append(client, stream_name, [_event()], 0)
    with pytest.raises(WrongCurrentVersionError) as caught:
        append(client, stream_name, [_event()], 0)
    assert caught.value.actual_version == 1
    with pytest.raises(WrongCurrentVersionError):
        append(client, stream_name, [_event()], 5)
    assert [e.stream_position for e in client.get_stream(stream_name)] == [0, 1]


def test_exact_revision_on_missing_stream_reports_no_stream(
    client: KurrentDBClient, stream_name: str
) -> None:
    """EventStoreDB docs, Handling concurrency: appending with a revision to a
    stream that does not exist fails, the current state being "no stream"."""
    with pytest.raises(WrongCurrentVersionError) as caught:
        client.append_to_stream(stream_name, events=[_event()], current_version=3)
    assert caught.value.actual_version is StreamState.NO_STREAM


def test_batch_append_is_atomic_and_keeps_event_fields(
    client: KurrentDBClient, stream_name: str
) -> None:
    """EventStoreDB docs, Appending events: several events are appended atomically,
    the event ID (uuid), type, data, metadata and content type are stored as given."""
    events = [
        NewEvent(type="A", data=b"\x00\x01", metadata=b"meta-a", content_type="application/octet-stream"),
        NewEvent(type="B", data=b'{"b": true}', metadata=b"{}", id=uuid.uuid4()),
    ]
    client.append_to_stream(stream_name, events=events, current_version=StreamState.NO_STREAM)
    recorded = client.get_stream(stream_name)
    assert [e.id for e in recorded] == [e.id for e in events]
    assert [e.type for e in recorded] == ["A", "B"]
    assert [e.data for e in recorded] == [b"\x00\x01", b'{"b": true}']
    assert [e.metadata for e in recorded] == [b"meta-a", b"{}"]
    assert [e.content_type for e in recorded] == ["application/octet-stream", "application/json"]
    assert all(e.recorded_at is not None for e in recorded)


@APPENDERS
def test_idempotent_reappend_of_same_event_ids(
    client: KurrentDBClient, stream_name: str, append: Appender
) -> None:
    """EventStoreDB docs, Appending events / Idempotence: appending events with IDs
    already written at the same position returns success without writing the
    events again (same commit position, no duplicates)."""
    event = _event()
    first = append(client, stream_name, [event], StreamState.NO_STREAM)
    again = append(client, stream_name, [event], StreamState.NO_STREAM)
    assert again == first
    again_any = append(client, stream_name, [event], StreamState.ANY)
    assert again_any == first
    assert len(client.get_stream(stream_name)) == 1


def test_returned_commit_position_is_that_of_the_last_event(
    client: KurrentDBClient, stream_name: str
) -> None:
    """kurrentdbclient docs, append_to_stream: returns the commit position of the
    last appended event, which is how the event appears in ``$all``."""
    position = client.append_to_stream(
        stream_name, events=[_event(), _event()], current_version=StreamState.NO_STREAM
    )
    recorded = client.get_stream(stream_name)
    assert recorded[-1].commit_position == position
