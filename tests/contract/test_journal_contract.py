"""Contract of the persistence port (infrastructure.persistence.port.EventJournal).

Runs against every adapter: SQLite (file), PostgreSQL (real server started by the session
fixture) and memory. An adapter is correct when all of these hold.
"""

from __future__ import annotations

import threading

from eventsourcing.persistence import StoredEvent

from infrastructure.errors import ConcurrencyConflict, PersistenceError
from infrastructure.persistence import EventJournal, StreamWrite


def events(stream_id: str, first: int, count: int, tag: str = "") -> tuple[StoredEvent, ...]:
    return tuple(StoredEvent(stream_id, v, "tests:Event", f"{tag}{v}".encode()) for v in range(first, first + count))


def test_append_then_read_in_order(journal: EventJournal, stream_id: str) -> None:
    assert journal.append([StreamWrite(stream_id, 0, events(stream_id, 1, 3))]) == [None]
    assert journal.append([StreamWrite(stream_id, 3, events(stream_id, 4, 2))]) == [None]
    read = journal.read(stream_id)
    assert [e.originator_version for e in read] == [1, 2, 3, 4, 5]
    assert [e.state for e in read] == [b"1", b"2", b"3", b"4", b"5"]
    assert [e.originator_version for e in journal.read(stream_id, after_version=3)] == [4, 5]


def test_unknown_stream_reads_empty(journal: EventJournal, stream_id: str) -> None:
    assert journal.read(stream_id) == []
    assert journal.latest_snapshot(stream_id) is None


def test_stale_expected_version_conflicts_and_stores_nothing(journal: EventJournal, stream_id: str) -> None:
    journal.append([StreamWrite(stream_id, 0, events(stream_id, 1, 2))])
    [error] = journal.append([StreamWrite(stream_id, 1, events(stream_id, 2, 2, tag="zombie"))])
    assert isinstance(error, ConcurrencyConflict)
    assert [e.state for e in journal.read(stream_id)] == [b"1", b"2"]


def test_expected_no_stream_on_existing_stream_conflicts(journal: EventJournal, stream_id: str) -> None:
    journal.append([StreamWrite(stream_id, 0, events(stream_id, 1, 1))])
    [error] = journal.append([StreamWrite(stream_id, 0, events(stream_id, 1, 1, tag="again"))])
    assert isinstance(error, ConcurrencyConflict)
    assert [e.state for e in journal.read(stream_id)] == [b"1"]


def test_batch_with_one_conflict_stores_the_other_streams(journal: EventJournal, stream_id: str) -> None:
    other, third = f"{stream_id}-b", f"{stream_id}-c"
    journal.append([StreamWrite(stream_id, 0, events(stream_id, 1, 1))])
    results = journal.append([
        StreamWrite(other, 0, events(other, 1, 2)),
        StreamWrite(stream_id, 0, events(stream_id, 1, 1, tag="stale")),
        StreamWrite(third, 0, events(third, 1, 1)),
    ])
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ConcurrencyConflict)
    assert len(journal.read(other)) == 2 and len(journal.read(third)) == 1
    assert [e.state for e in journal.read(stream_id)] == [b"1"]


def test_writes_of_one_stream_in_a_batch_stand_or_fall_together(journal: EventJournal, stream_id: str) -> None:
    journal.append([StreamWrite(stream_id, 0, events(stream_id, 1, 1))])
    other = f"{stream_id}-x"
    results = journal.append([
        StreamWrite(other, 0, events(other, 1, 1)),
        StreamWrite(stream_id, 0, events(stream_id, 1, 1, tag="stale")),  # conflicts
        StreamWrite(stream_id, 1, events(stream_id, 2, 1, tag="built-on-stale")),
    ])
    assert results[0] is None
    assert isinstance(results[1], ConcurrencyConflict) and isinstance(results[2], ConcurrencyConflict)
    assert [e.state for e in journal.read(stream_id)] == [b"1"]


def test_out_of_sequence_write_is_refused(journal: EventJournal, stream_id: str) -> None:
    try:
        journal.append([StreamWrite(stream_id, 0, events(stream_id, 2, 1))])
    except PersistenceError as exc:
        assert "out of sequence" in str(exc)
    else:
        raise AssertionError("a write not numbered from expected_version + 1 must be refused")
    assert journal.read(stream_id) == []


def test_concurrent_writers_one_wins(journal: EventJournal, stream_id: str) -> None:
    """Two writers with the same expected version (a zombie and the new owner): exactly one wins."""
    results: list[object] = []

    def write(tag: str) -> None:
        results.extend(journal.append([StreamWrite(stream_id, 0, events(stream_id, 1, 3, tag=tag))]))

    threads = [threading.Thread(target=write, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r is None for r in results) == [False, True]
    states = {e.state[:1] for e in journal.read(stream_id)}
    assert len(states) == 1 and len(journal.read(stream_id)) == 3


def test_snapshots_latest_wins_and_duplicates_are_ignored(journal: EventJournal, stream_id: str) -> None:
    journal.save_snapshot(StoredEvent(stream_id, 5, "tests:Snap", b"five"))
    journal.save_snapshot(StoredEvent(stream_id, 10, "tests:Snap", b"ten"))
    journal.save_snapshot(StoredEvent(stream_id, 10, "tests:Snap", b"ten-again"))
    latest = journal.latest_snapshot(stream_id)
    assert latest is not None and latest.originator_version == 10 and latest.state == b"ten"


def test_several_snapshots_at_once_even_when_one_exists(journal: EventJournal, stream_id: str) -> None:
    """``save_snapshots`` (one round trip where the store allows): every snapshot is stored,
    and one that exists already neither fails the call nor keeps the others out."""
    other = f"{stream_id}-other"
    journal.save_snapshot(StoredEvent(stream_id, 5, "tests:Snap", b"five"))
    journal.save_snapshots([StoredEvent(stream_id, 5, "tests:Snap", b"five-again"),
                            StoredEvent(stream_id, 9, "tests:Snap", b"nine"),
                            StoredEvent(other, 3, "tests:Snap", b"three")])
    mine, theirs = journal.latest_snapshot(stream_id), journal.latest_snapshot(other)
    assert mine is not None and (mine.originator_version, mine.state) == (9, b"nine")
    assert theirs is not None and (theirs.originator_version, theirs.state) == (3, b"three")
