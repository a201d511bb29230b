"""The emulator's transaction log: one ordered list of event records plus stream indexes.

EventStoreDB keeps every event in a single append-only log (the ``$all``
stream); a stream is an index over that log.  The emulator mirrors that shape
because the client-visible semantics fall out of it directly:

* ``commit_position``/``prepare_position`` are byte offsets into the log, so
  they grow strictly and are *not* contiguous (each record advances the head by
  its encoded size, like the real ``TFChunk`` writer does);
* reading ``$all`` from an offset that is not a record boundary is an error;
* soft delete only writes ``{"$tb": <Int64.MaxValue>}`` stream metadata (the
  server's ``EventNumber.DeletedStream``), the old records stay visible in
  ``$all``; the next write to the stream (or to its metadata) makes the server
  write the metadata again with ``$tb`` = the first revision after the deleted
  ones (``SoftUndeleteStream``/``SoftUndeleteMetastream``).  While soft deleted
  the stream reads as not found, may be recreated with "no stream" and counts as
  deleted (not existing) for a "stream exists" expectation;
* a tombstone writes a ``$streamDeleted`` record and forbids any further write
  or read of the stream.

Everything here runs on the asyncio event loop thread, so each public method is
atomic with respect to the others without locks.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .errors import InvalidPosition, StreamDeleted, WrongExpectedVersion
from .journal import Journal

# EventStoreDB's internal encodings of the non-numeric expected revisions.
EXPECTED_ANY = -2
EXPECTED_NO_STREAM = -1
EXPECTED_STREAM_EXISTS = -4

# The revision EventStoreDB gives the tombstone record of a hard-deleted stream
# (EventNumber.DeletedStream = long.MaxValue); soft delete writes it as ``$tb``.
DELETED_STREAM_REVISION = 2**63 - 1

# Bytes notionally taken by the records the server writes before any user event
# (epoch and system records), so the first user event is never at position 0.
INITIAL_LOG_HEAD = 0x100

# Fixed part of an encoded prepare record (length prefix/suffix, flags, log
# position, transaction position/offset, event id, correlation id, timestamp,
# field length words) used to make positions advance like real record sizes.
_RECORD_OVERHEAD = 4 + 2 + 1 + 8 + 8 + 4 + 16 + 16 + 8 + 4 + 4 + 4 + 4

TOMBSTONE_EVENT_TYPE = "$streamDeleted"
METADATA_EVENT_TYPE = "$metadata"
LINK_EVENT_TYPE = "$>"


def metadata_stream_name(stream_name: str) -> str:
    """Name of the stream holding ``stream_name``'s metadata (``$$<name>``)."""
    return f"$${stream_name}"


def now_ticks() -> int:
    """Current time as 100ns ticks since the Unix epoch (the ``created`` metadata unit)."""
    return time.time_ns() // 100


@dataclass(frozen=True)
class ProposedEvent:
    """An event as sent by a client, before it is given a revision and position."""

    event_id: str
    event_type: str
    content_type: str
    data: bytes
    metadata: bytes


@dataclass(frozen=True)
class EventRecord:
    """One record of the log, i.e. one event of ``$all``.

    ``position`` is used as both commit and prepare position: the emulator
    writes each event as its own committed record.
    """

    position: int
    stream_name: str
    revision: int
    event_id: str
    event_type: str
    content_type: str
    data: bytes
    metadata: bytes
    created: int

    @property
    def size(self) -> int:
        """Encoded size in bytes; the next record starts this far after this one."""
        return (
            _RECORD_OVERHEAD
            + len(self.stream_name.encode("utf8"))
            + len(self.event_type.encode("utf8"))
            + len(self.data)
            + len(self.metadata)
        )

    @property
    def is_link(self) -> bool:
        """Whether this record is a link (``$>``) pointing at another event."""
        return self.event_type == LINK_EVENT_TYPE


@dataclass
class StreamIndex:
    """What the log knows about one stream."""

    records: list[EventRecord] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)
    truncate_before: int = 0
    tombstoned: bool = False

    @property
    def last_revision(self) -> int:
        """Revision of the last event, ``-1`` when none was ever written."""
        return len(self.records) - 1

    @property
    def soft_deleted(self) -> bool:
        """``IsSoftDeleted``: the current metadata's ``$tb`` is ``EventNumber.DeletedStream``."""
        return self.truncate_before == DELETED_STREAM_REVISION

    @property
    def is_readable(self) -> bool:
        """False when no event survives truncation (never written or soft-deleted)."""
        return self.last_revision >= self.truncate_before


@dataclass(frozen=True)
class WriteResult:
    """Outcome of a successful append; ``position`` is ``None`` for empty appends."""

    last_revision: int
    position: int | None


class EventLog:
    """The emulator's single source of truth for events.

    ``listeners`` are plain callables invoked after every committed write; the
    subscription machinery registers ``asyncio.Event.set`` style wake-ups there
    so idle subscribers cost no thread and no polling.
    """

    def __init__(self, journal: Journal | None = None) -> None:
        self._records: list[EventRecord] = []
        self._index_by_position: dict[int, int] = {}
        self._streams: dict[str, StreamIndex] = {}
        self._head = INITIAL_LOG_HEAD
        self._listeners: set[Callable[[], None]] = set()
        self._journal = journal
        if journal is not None:
            for record in journal.load():
                self._apply(record)

    # ------------------------------------------------------------------ listeners
    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each write (until removed)."""
        self._listeners.add(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        self._listeners.discard(listener)

    # ---------------------------------------------------------------- inspection
    @property
    def head(self) -> int:
        """Position just after the last record: where the next record will go."""
        return self._head

    def __len__(self) -> int:
        return len(self._records)

    def record_at(self, index: int) -> EventRecord:
        """The ``index``-th record of the log (0-based, in commit order)."""
        return self._records[index]

    def records_slice(self, start: int, stop: int) -> list[EventRecord]:
        """Records ``start <= i < stop`` in commit order (a snapshot copy)."""
        return self._records[start:stop]

    def stream(self, stream_name: str) -> StreamIndex | None:
        """The index of ``stream_name`` or ``None`` if nothing was ever written to it."""
        return self._streams.get(stream_name)

    def get_event(self, stream_name: str, revision: int) -> EventRecord | None:
        """The event at ``revision`` of ``stream_name`` ignoring truncation, if any."""
        index = self._streams.get(stream_name)
        if index is None or not 0 <= revision <= index.last_revision:
            return None
        return index.records[revision]

    def index_of_position(self, position: int, *, exclusive: bool) -> int:
        """Log index where a ``$all`` read starting at ``position`` begins.

        ``position`` must be 0 (start of the log), the position of a record, or
        the head; anything else raises :class:`InvalidPosition`, like the real
        server does for offsets inside a record.  With ``exclusive`` the record
        at ``position`` itself is skipped (catch-up subscriptions).
        """
        if position == 0:
            return 0
        if position == self._head:
            return len(self._records)
        index = self._index_by_position.get(position)
        if index is None:
            raise InvalidPosition(position)
        return index + 1 if exclusive else index

    # ---------------------------------------------------------------- stream reads
    def read_stream(
        self,
        stream_name: str,
        *,
        from_revision: int | None,
        backwards: bool,
        limit: int,
    ) -> list[EventRecord] | None:
        """Events of a stream honouring truncation; ``None`` means "stream not found".

        ``from_revision`` is inclusive; ``None`` means the start (forwards) or the
        end (backwards).  A tombstoned stream raises :class:`StreamDeleted`.
        """
        index = self._streams.get(stream_name)
        if index is None:
            return None
        if index.tombstoned:
            raise StreamDeleted(stream_name)
        if not index.is_readable:
            return None
        first = index.truncate_before
        last = index.last_revision
        if not backwards:
            start = first if from_revision is None else max(first, from_revision)
            if start > last:
                return []
            return index.records[start : min(last + 1, start + limit)]
        start = last if from_revision is None else min(last, from_revision)
        if start < first:
            return []
        stop = max(first, start - limit + 1)
        return list(reversed(index.records[stop : start + 1]))

    # ---------------------------------------------------------------------- writes
    def append(
        self, stream_name: str, expected: int, events: Sequence[ProposedEvent]
    ) -> WriteResult:
        """Append ``events`` atomically after checking ``expected``.

        Re-sending events whose IDs are already at the positions the expected
        revision implies succeeds without writing anything (EventStoreDB's
        idempotent append); a partial match is a wrong expected version.
        """
        index = self._streams.get(stream_name)
        self._refuse_deleted(stream_name, index, expected)
        current = index.last_revision if index is not None else -1

        if index is not None and events:
            replay = self._idempotent_result(index, stream_name, expected, events)
            if replay is not None:
                return replay

        if not self._expected_matches(stream_name, index, expected):
            raise WrongExpectedVersion(stream_name, expected, current)
        if not events:
            return WriteResult(last_revision=current, position=None)

        was_soft_deleted = index is not None and index.soft_deleted
        undelete_original = self._soft_deleted_original(stream_name)
        created = now_ticks()
        records = [
            (stream_name, current + 1 + offset, event, created)
            for offset, event in enumerate(events)
        ]
        written = self._write(records)
        if was_soft_deleted:
            self._soft_undelete(stream_name, recreate_from=current + 1)
        if undelete_original is not None:
            original = self._streams.get(undelete_original)
            last = original.last_revision if original is not None else -1
            self._soft_undelete(undelete_original, recreate_from=last + 1)
        return WriteResult(last_revision=written[-1].revision, position=written[-1].position)

    def soft_delete(self, stream_name: str, expected: int) -> int:
        """Soft delete: write ``{"$tb": Int64.MaxValue}`` to the metadata stream.

        Deleting a stream that has neither events nor metadata is reported as a
        wrong expected version with current ``-1``, which the client surfaces as
        not found. Returns the position of the metadata record.
        """
        index = self._streams.get(stream_name)
        self._refuse_deleted(stream_name, index, expected)
        current = index.last_revision if index is not None else -1
        meta_name = metadata_stream_name(stream_name)
        meta_index = self._streams.get(meta_name)
        no_metadata = meta_index is None or meta_index.last_revision < 0
        if (current < 0 and no_metadata) or not self._expected_matches(stream_name, index, expected):
            raise WrongExpectedVersion(stream_name, expected, current)
        # The whole metadata is replaced, as StorageWriterService writes
        # ``new StreamMetadata(truncateBefore: EventNumber.DeletedStream)``.
        marker = {"$tb": DELETED_STREAM_REVISION}
        written = self._write([(meta_name, self._next_revision(meta_name), _metadata_event(marker), now_ticks())])
        return written[-1].position

    def tombstone(self, stream_name: str, expected: int) -> int:
        """Hard delete: write a ``$streamDeleted`` record; the name is then unusable."""
        index = self._streams.get(stream_name)
        self._refuse_deleted(stream_name, index, expected)
        current = index.last_revision if index is not None else -1
        if not self._expected_matches(stream_name, index, expected):
            raise WrongExpectedVersion(stream_name, expected, current)
        tombstone = ProposedEvent(
            event_id=_new_uuid(),
            event_type=TOMBSTONE_EVENT_TYPE,
            content_type="application/json",
            data=b"",
            metadata=b"",
        )
        written = self._write([(stream_name, DELETED_STREAM_REVISION, tombstone, now_ticks())])
        return written[-1].position

    # -------------------------------------------------------------------- helpers
    @staticmethod
    def _refuse_deleted(stream_name: str, index: StreamIndex | None, expected: int) -> None:
        """``CheckCommit``'s ``Deleted`` decisions: a tombstoned stream, whatever the
        expectation, and a soft-deleted one when the writer expects it to exist."""
        if index is not None and (
            index.tombstoned or (expected == EXPECTED_STREAM_EXISTS and index.soft_deleted)
        ):
            raise StreamDeleted(stream_name)

    def _expected_matches(self, stream_name: str, index: StreamIndex | None, expected: int) -> bool:
        current = index.last_revision if index is not None else -1
        if expected == EXPECTED_ANY:
            return True
        if expected == EXPECTED_NO_STREAM:
            # A soft-deleted stream may be recreated as if it did not exist.
            return current == -1 or (index is not None and index.soft_deleted)
        if expected == EXPECTED_STREAM_EXISTS:
            # The server also accepts a stream that has only metadata.
            return current >= 0 or self._next_revision(metadata_stream_name(stream_name)) > 0
        return expected == current

    def _next_revision(self, stream_name: str) -> int:
        index = self._streams.get(stream_name)
        return index.last_revision + 1 if index is not None else 0

    def _soft_deleted_original(self, stream_name: str) -> str | None:
        """For a write to ``$$X`` while ``X`` is soft deleted: ``X`` (to undelete)."""
        if not stream_name.startswith("$$"):
            return None
        original = self._streams.get(stream_name[2:])
        return stream_name[2:] if original is not None and original.soft_deleted else None

    def _soft_undelete(self, stream_name: str, *, recreate_from: int) -> None:
        """``SoftUndeleteStream``: the last metadata again, ``$tb`` = ``recreate_from``
        (skipped, like the server, when that metadata is not a JSON object)."""
        meta_name = metadata_stream_name(stream_name)
        metadata = self._current_metadata(meta_name)
        if metadata is None:
            return
        metadata["$tb"] = recreate_from
        self._write([(meta_name, self._next_revision(meta_name), _metadata_event(metadata), now_ticks())])

    @staticmethod
    def _idempotent_result(
        index: StreamIndex,
        stream_name: str,
        expected: int,
        events: Sequence[ProposedEvent],
    ) -> WriteResult | None:
        if expected >= 0:
            start: int | None = expected + 1
        elif expected == EXPECTED_NO_STREAM:
            start = 0
        else:
            start = index.ids.get(events[0].event_id)
        if start is None or start > index.last_revision:
            return None
        matched: list[EventRecord] = []
        for offset, event in enumerate(events):
            revision = start + offset
            if revision > index.last_revision:
                break
            record = index.records[revision]
            if record.event_id != event.event_id:
                break
            matched.append(record)
        if not matched:
            return None
        if len(matched) < len(events):
            raise WrongExpectedVersion(stream_name, expected, index.last_revision)
        return WriteResult(last_revision=matched[-1].revision, position=matched[-1].position)

    def _current_metadata(self, meta_stream: str) -> dict[str, object] | None:
        """The last metadata as a JSON object; ``None`` if none or not an object."""
        index = self._streams.get(meta_stream)
        if index is None or index.last_revision < 0:
            return None
        try:
            value = json.loads(index.records[-1].data.decode("utf8"))
        except (UnicodeDecodeError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def _write(
        self, items: Iterable[tuple[str, int, ProposedEvent, int]]
    ) -> list[EventRecord]:
        written: list[EventRecord] = []
        for stream_name, revision, event, created in items:
            record = EventRecord(
                position=self._head,
                stream_name=stream_name,
                revision=revision,
                event_id=event.event_id,
                event_type=event.event_type,
                content_type=event.content_type,
                data=event.data,
                metadata=event.metadata,
                created=created,
            )
            self._apply(record)
            written.append(record)
        if self._journal is not None:
            self._journal.write(written)
        for listener in list(self._listeners):
            listener()
        return written

    def _apply(self, record: EventRecord) -> None:
        """Add ``record`` to the log and indexes (used for writes and journal replay)."""
        self._index_by_position[record.position] = len(self._records)
        self._records.append(record)
        self._head = record.position + record.size
        index = self._streams.setdefault(record.stream_name, StreamIndex())
        if record.revision == DELETED_STREAM_REVISION:
            index.tombstoned = True
            return
        index.records.append(record)
        index.ids[record.event_id] = record.revision
        if record.event_type == METADATA_EVENT_TYPE and record.stream_name.startswith("$$"):
            self._apply_metadata(record)

    def _apply_metadata(self, record: EventRecord) -> None:
        """Honour ``$tb`` in stream metadata, which is how soft delete works."""
        try:
            value = json.loads(record.data.decode("utf8"))
        except (UnicodeDecodeError, ValueError):
            return
        if not isinstance(value, dict):
            return
        target = self._streams.setdefault(record.stream_name[2:], StreamIndex())
        truncate_before = value.get("$tb")
        target.truncate_before = truncate_before if isinstance(truncate_before, int) else 0


def _new_uuid() -> str:
    return str(uuid.uuid4())


def _metadata_event(metadata: dict[str, object]) -> ProposedEvent:
    """A ``$metadata`` event carrying ``metadata`` (written by the server itself)."""
    return ProposedEvent(
        event_id=_new_uuid(),
        event_type=METADATA_EVENT_TYPE,
        content_type="application/json",
        data=json.dumps(metadata).encode("utf8"),
        metadata=b"",
    )
