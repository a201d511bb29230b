"""Soft delete, tombstone (hard delete), and ``$all`` positions."""

from __future__ import annotations

import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import (
    FailedPreconditionError,
    InvalidCommitPositionError,
    NotFoundError,
    StreamIsDeletedError,
    UnknownError,
    WrongCurrentVersionError,
)

# EventNumber.DeletedStream (long.MaxValue): the truncate-before of a soft-deleted stream.
INT64_MAX = 2**63 - 1


def _append(client: KurrentDBClient, stream: str, count: int = 1, version: int | StreamState = StreamState.ANY) -> int:
    events = [NewEvent(type="Happened", data=b'{"x": 1}') for _ in range(count)]
    return client.append_to_stream(stream, events=events, current_version=version)


def test_soft_deleted_stream_reads_as_not_found_and_can_be_recreated(
    client: KurrentDBClient, stream_name: str
) -> None:
    """EventStoreDB docs, Deleting events / Soft delete: a soft-deleted stream reads
    as not found; appending again recreates it, revisions continuing after the
    deleted ones, and only the new events are readable."""
    _append(client, stream_name, 2)
    client.delete_stream(stream_name, current_version=1)
    with pytest.raises(NotFoundError):
        client.get_stream(stream_name)
    assert client.get_current_version(stream_name) is StreamState.NO_STREAM
    _append(client, stream_name, 1, StreamState.NO_STREAM)
    assert [e.stream_position for e in client.get_stream(stream_name)] == [2]


def test_soft_delete_checks_expected_revision(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Deleting events: delete takes an expected revision; a
    mismatch fails with WrongExpectedVersion, and deleting a stream that does not
    exist is reported as not found."""
    with pytest.raises(NotFoundError):
        client.delete_stream(stream_name, current_version=StreamState.ANY)
    _append(client, stream_name, 2)
    with pytest.raises(WrongCurrentVersionError) as caught:
        client.delete_stream(stream_name, current_version=0)
    assert caught.value.actual_version == 1
    client.delete_stream(stream_name, current_version=StreamState.EXISTS)


def test_soft_deleted_events_remain_in_all(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Deleting events: soft delete only hides the stream's
    events (``$tb`` metadata); they stay in ``$all`` until a scavenge."""
    position = _append(client, stream_name, 1)
    client.delete_stream(stream_name, current_version=0)
    events = list(client.read_all(commit_position=position, limit=1))
    assert events[0].stream_name == stream_name
    assert client.get_stream_metadata(stream_name)[0] == {"$tb": INT64_MAX}


def test_tombstoned_stream_cannot_be_read_or_written(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Deleting events / Hard delete (tombstone): reads and appends
    of a tombstoned stream fail with StreamDeleted, forever. (The client maps the
    batch-append error detail to StreamIsDeletedError and the single-event Append
    status ``FAILED_PRECONDITION "… is deleted."`` to FailedPreconditionError.)"""
    _append(client, stream_name, 1)
    client.tombstone_stream(stream_name, current_version=0)
    with pytest.raises(StreamIsDeletedError):
        client.get_stream(stream_name)
    with pytest.raises(StreamIsDeletedError):
        _append(client, stream_name, 2)
    with pytest.raises(FailedPreconditionError, match="is deleted"):
        client.append_event(stream_name, event=NewEvent(type="X", data=b"{}"), current_version=StreamState.ANY)
    with pytest.raises(StreamIsDeletedError):
        client.delete_stream(stream_name, current_version=StreamState.ANY)
    with pytest.raises(StreamIsDeletedError):
        client.tombstone_stream(stream_name, current_version=StreamState.ANY)


def test_tombstone_checks_expected_revision(client: KurrentDBClient, stream_name: str) -> None:
    """EventStoreDB docs, Deleting events: tombstone honours the expected revision."""
    _append(client, stream_name, 1)
    with pytest.raises(WrongCurrentVersionError):
        client.tombstone_stream(stream_name, current_version=3)
    client.tombstone_stream(stream_name, current_version=StreamState.ANY)


def test_commit_positions_strictly_increase_and_are_not_contiguous(
    client: KurrentDBClient, stream_name: str
) -> None:
    """EventStoreDB docs, $all positions: commit/prepare positions are byte offsets
    of records in the transaction log, so they grow strictly but by more than one
    per event."""
    for _ in range(3):
        _append(client, stream_name, 2)
    positions = [e.commit_position for e in client.get_stream(stream_name)]
    assert positions == sorted(set(positions))
    gaps = [b - a for a, b in zip(positions, positions[1:])]
    assert all(gap > 1 for gap in gaps)
    assert all(e.prepare_position == e.commit_position for e in client.get_stream(stream_name))
    assert client.get_commit_position() >= positions[-1]


def test_read_all_from_a_non_boundary_position_is_rejected(
    client: KurrentDBClient, stream_name: str
) -> None:
    """kurrentdbclient docs, Reading from $all: an InvalidCommitPositionError is
    raised if the commit position does not exist (server: Unexpected
    FilteredReadAllResult: InvalidPosition; unfiltered: ReadAllResult)."""
    position = _append(client, stream_name, 1)
    with pytest.raises(InvalidCommitPositionError):
        list(client.read_all(commit_position=position + 1))
    with pytest.raises(UnknownError, match="InvalidPosition"):
        list(client.read_all(commit_position=position + 1, filter_exclude=()))
    assert len(list(client.read_all(commit_position=position, limit=1))) == 1


def test_soft_delete_writes_truncate_before_max_and_a_new_write_rewrites_it(
    client: KurrentDBClient, stream_name: str
) -> None:
    """KurrentDB docs, Deleting streams / Soft delete and TruncateBefore: soft delete sets
    ``$tb`` to the max Int64 (9223372036854775807) - the whole metadata, as
    ``StorageWriterService`` writes ``new StreamMetadata(truncateBefore: DeletedStream)``.
    Appending again recreates the stream and the server rewrites ``$tb`` to the first new
    revision (``SoftUndeleteStream``), keeping the rest of the metadata (client test
    SoftDeleteTests.recreated_with_any_expected_version: metastream revision 1)."""
    _append(client, stream_name, 2)
    client.set_stream_metadata(stream_name, metadata={"owner": "x"})
    client.delete_stream(stream_name, current_version=1)
    assert client.get_stream_metadata(stream_name) == ({"$tb": INT64_MAX}, 1)
    _append(client, stream_name, 3, StreamState.ANY)
    assert [e.stream_position for e in client.get_stream(stream_name)] == [2, 3, 4]
    assert client.get_stream_metadata(stream_name) == ({"$tb": 2}, 2)


def test_metadata_written_to_a_soft_deleted_stream_undeletes_it_at_its_end(
    client: KurrentDBClient, stream_name: str
) -> None:
    """KurrentDB client test SoftDeleteTests.recreated_on_non_empty_when_metadata_set:
    setting metadata on a soft-deleted stream makes the server write it again with
    ``$tb`` = last revision + 1 (``SoftUndeleteMetastream``): the old events stay
    hidden and the stream is no longer soft deleted."""
    _append(client, stream_name, 2)
    client.delete_stream(stream_name, current_version=1)
    client.set_stream_metadata(stream_name, metadata={"owner": "x"})
    assert client.get_stream_metadata(stream_name)[0] == {"owner": "x", "$tb": 2}
    client.append_to_stream(stream_name, events=[NewEvent(type="Again", data=b"{}")], current_version=1)
    assert [e.stream_position for e in client.get_stream(stream_name)] == [2]


def test_a_soft_deleted_stream_counts_as_deleted_for_stream_exists(
    client: KurrentDBClient, stream_name: str
) -> None:
    """EventStoreDB ``IndexWriter.CheckCommit``: with expected version StreamExists a
    soft-deleted stream is ``CommitDecision.Deleted`` (StreamDeleted to the client),
    not an existing stream; nothing is written. NoStream/Any recreate it, after which
    it exists again."""
    _append(client, stream_name, 2)
    client.delete_stream(stream_name, current_version=1)
    with pytest.raises(StreamIsDeletedError):
        _append(client, stream_name, 1, StreamState.EXISTS)
    with pytest.raises(StreamIsDeletedError):
        client.delete_stream(stream_name, current_version=StreamState.EXISTS)
    assert client.get_stream_metadata(stream_name)[0] == {"$tb": INT64_MAX}
    _append(client, stream_name, 1, StreamState.NO_STREAM)
    _append(client, stream_name, 1, StreamState.EXISTS)
    assert [e.stream_position for e in client.get_stream(stream_name)] == [2, 3]
