"""The SQLite application recorder with one INSERT statement per batch of rows.

Why: the library's ``SQLiteApplicationRecorder`` inserts a group commit's events one
``execute`` at a time (to collect each row's notification ID). Each ``execute`` releases the
GIL around SQLite's work and must win it back from the event loop thread, which keeps it up
to the interpreter's switch interval (5 ms) while it is busy - so under load the writer
thread waited for the GIL once per event: measured on a hot lot at ~10k events/s, appends of
~200 events took 25 ms on average (up to 250 ms), and replies waited on them. One statement
per ``ROWS_PER_STATEMENT`` rows waits once per statement instead.

Same table, same rows, same transaction (the library's ``insert_events`` around it), same
notification IDs: within one statement of the only writer, SQLite assigns consecutive rowids
(largest in use + 1, + 2, ...), so the IDs are the ``lastrowid`` and the ones before it.
Selected with ``APPLICATION_RECORDER_TOPIC`` (:meth:`infrastructure.settings.Settings.journal_env`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor

ROWS_PER_STATEMENT = 200
"""Rows per INSERT: 4 parameters each, under SQLite's historical limit of 999 parameters."""


class BatchedSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    """See the module docstring."""

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **_: Any) -> Sequence[int] | None:
        returning: list[int] = []
        for start in range(0, len(stored_events), ROWS_PER_STATEMENT):
            chunk = stored_events[start:start + ROWS_PER_STATEMENT]
            params: list[Any] = []
            for s in chunk:
                params += (s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
                           s.originator_version, s.topic, s.state)
            values = ",".join(["(?,?,?,?)"] * len(chunk))
            c.execute(f"INSERT INTO {self.events_table_name} VALUES {values}", params)
            last = c.lastrowid
            assert last is not None
            returning.extend(range(last - len(chunk) + 1, last + 1))
        return returning
