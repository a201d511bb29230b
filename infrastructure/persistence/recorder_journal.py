"""Journal adapter over the ``eventsourcing`` library's recorders (SQLite, PostgreSQL, POPO).

Group commit maps onto one ``insert_events`` call, i.e. one database transaction for the
whole batch. The recorders refuse a batch whose (stream, version) already exists with an
IntegrityError for the whole transaction; we then retry stream by stream, each stream in
its own transaction, so the conflicting stream fails alone and the rest are stored.

Expected versions: the recorders enforce them through the unique (stream, version) key.
Because every write is numbered contiguously from its expected version (checked), a write
succeeds only if the stream has no event at ``expected_version + 1``, i.e. only if the
writer's view of the stream is current (a stream reaches version v only by writing 1..v).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    PersistenceError as LibraryPersistenceError,
    StoredEvent,
)

from infrastructure.errors import ConcurrencyConflict, PersistenceError
from infrastructure.persistence.port import EventJournal, StreamWrite
from infrastructure.persistence.recorder_subscriptions import RecorderEventStream

log = logging.getLogger(__name__)


class RecorderJournal(EventJournal):
    """EventJournal on an eventsourcing infrastructure factory (see module docstring)."""

    def __init__(self, env: Mapping[str, str], application_name: str | None = None) -> None:
        """``application_name``: PostgreSQL only, the name this journal's connections show in
        ``pg_stat_activity`` (which process and which part of it holds a connection)."""
        try:
            self._factory = InfrastructureFactory.construct(dict(env))
            pool = getattr(getattr(self._factory, "datastore", None), "pool", None)
            if application_name and isinstance(getattr(pool, "kwargs", None), dict):
                pool.kwargs["application_name"] = application_name  # type: ignore[union-attr] # before it connects
            self._events: ApplicationRecorder = self._factory.application_recorder()
            self._snapshots: AggregateRecorder = self._factory.aggregate_recorder("snapshots")
        except LibraryPersistenceError as exc:
            raise PersistenceError(f"cannot open event store: {exc}") from exc
        except Exception as exc:  # driver errors (psycopg, sqlite3) arrive untranslated here
            raise PersistenceError(f"cannot open event store: {type(exc).__name__}: {exc}") from exc

    def append(self, writes: Sequence[StreamWrite]) -> list[PersistenceError | None]:
        for write in writes:
            write.check()
        try:
            self._events.insert_events([e for w in writes for e in w.events])
            return [None] * len(writes)
        except IntegrityError:
            if len({w.stream_id for w in writes}) == 1:
                conflict = ConcurrencyConflict(f"stream {writes[0].stream_id} is not at version {writes[0].expected_version}")
                return [conflict] * len(writes)
        except LibraryPersistenceError as exc:
            failure = PersistenceError(f"append failed: {type(exc).__name__}: {exc}")
            return [failure] * len(writes)
        return self._append_stream_by_stream(writes)

    def _append_stream_by_stream(self, writes: Sequence[StreamWrite]) -> list[PersistenceError | None]:
        by_stream: dict[str, list[int]] = {}
        for index, write in enumerate(writes):
            by_stream.setdefault(write.stream_id, []).append(index)
        results: list[PersistenceError | None] = [None] * len(writes)
        for stream_id, indexes in by_stream.items():
            try:
                self._events.insert_events([e for i in indexes for e in writes[i].events])
                continue
            except IntegrityError:
                error: PersistenceError = ConcurrencyConflict(
                    f"stream {stream_id} is not at version {writes[indexes[0]].expected_version}"
                )
            except LibraryPersistenceError as exc:
                error = PersistenceError(f"append failed: {type(exc).__name__}: {exc}")
            for i in indexes:
                results[i] = error
        return results

    def read(self, stream_id: str, after_version: int = 0) -> list[StoredEvent]:
        try:
            return list(self._events.select_events(stream_id, gt=after_version or None))
        except LibraryPersistenceError as exc:
            raise PersistenceError(f"read of {stream_id} failed: {exc}") from exc

    def latest_snapshot(self, stream_id: str) -> StoredEvent | None:
        try:
            found = self._snapshots.select_events(stream_id, desc=True, limit=1)
        except LibraryPersistenceError as exc:
            raise PersistenceError(f"snapshot read of {stream_id} failed: {exc}") from exc
        return found[0] if found else None

    def save_snapshot(self, snapshot: StoredEvent) -> None:
        try:
            self._snapshots.insert_events([snapshot])
        except IntegrityError:
            pass  # a snapshot at this version exists: same state, nothing to do
        except LibraryPersistenceError as exc:
            raise PersistenceError(f"snapshot write failed: {exc}") from exc

    def save_snapshots(self, snapshots: Sequence[StoredEvent]) -> None:
        """One transaction for all; if one of them exists already, one by one (the others
        must still be stored)."""
        try:
            self._snapshots.insert_events(list(snapshots))
        except IntegrityError:
            for snapshot in snapshots:
                self.save_snapshot(snapshot)
        except LibraryPersistenceError as exc:
            raise PersistenceError(f"snapshot write failed: {exc}") from exc

    def event_stream(self, *, close_journal: bool = False, **options: object) -> RecorderEventStream:
        """The catch-up event stream port on this journal's events recorder (the only way
        to follow the memory store, whose events live in this object). ``close_journal``:
        closing the stream closes this journal too (a journal opened only for the stream).
        ``options`` go to :class:`RecorderEventStream` (poll interval, checkpoint spacing)."""
        return RecorderEventStream(self._events, on_close=self.close if close_journal else None,
                                   **options)  # type: ignore[arg-type]

    def close(self) -> None:
        self._factory.close()
