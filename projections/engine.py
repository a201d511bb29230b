"""Running a projection over a batch of events, the same way for every read model store.

:func:`plan_batch` decides, for a batch of delivered events, what each does to the read
model, and builds the documents as they will be after it, without writing anything. The
store (the sandbox's dict, MongoDB) then writes that plan. So the sandbox and MongoDB share
every rule below; only the writing differs.

**Exactly once, order-safe.** Two records make a redelivery change nothing:

- per source stream, the last version applied (*stream tracking*, kept by the store beside
  the documents). Every event of the categories read is tracked, handled or not, so a
  stream's versions arrive contiguous: an event at or below the tracked version is a
  duplicate (skipped whole); one beyond the next version is a gap
  (:class:`~projections.errors.VersionGap`, raised before anything is written — never skipped);
- per document, ``_applied``: the last version of each source stream applied to it. The
  store writes a document's change only if that document has not applied the event yet,
  so a batch cut short by a crash (documents written, tracking not) is delivered again
  and completes exactly once.

**A parked event holds its stream back.** When an event is parked (``ON_ERROR = "park"``),
the later events of its stream are parked behind it (error ``held behind <stream>@<version>``)
instead of applied, and the stream's tracking stays just before it; other streams go on.
So the read model stays the replay of each stream up to its tracked version (guarantee 5),
and once the projection is fixed, replaying the parked events (in stream order,
:meth:`projections.mongo.MongoReadModel.replay_parked`) applies them exactly as a replay
would have: had the later events been applied, every document they touched would record
them in ``_applied`` and the parked event, older, would be skipped there as a duplicate.
A stream is held while the store lists any parked event of it
(:meth:`DocumentSource.parked_streams`). A parked event keeps the delivered event itself
(``Parked.event``), so replaying needs nothing from the event store.

Within a batch, handlers see the documents as the earlier events of the batch left them.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from infrastructure.persistence.subscriptions import StreamEvent
from projections.changes import Change, apply_changes, check_changes, escape_segment
from projections.errors import EventDecodeError, HandlerFailed, UnhandledEvent, VersionGap
from projections.events import EventEnvelope, decode_event, event_type as event_type_of
from projections.projection import Document, Projection

log = logging.getLogger(__name__)

Delivered = StreamEvent | EventEnvelope

APPLIED = "_applied"  # per document: escaped stream ID -> last version applied to it
DELETED = "_deleted"  # a deleted document's tombstone keeps its _applied, so a redelivery cannot revive it
BOOKKEEPING = frozenset({APPLIED, DELETED})

# outcomes of an event (the `outcome` label of xplatform_projection_events_total)
OUTCOME_APPLIED = "applied"  # its handler ran (its changes may be none)
OUTCOME_IGNORED = "ignored"  # no handler for its type, or a platform event not asked for
OUTCOME_DUPLICATE = "duplicate"  # already applied (redelivery)
OUTCOME_PARKED = "parked"  # failed; kept in the parked list (ON_ERROR park)
OUTCOME_SKIPPED = "skipped"  # failed; dropped with a log line (ON_ERROR skip)
OUTCOMES = (OUTCOME_APPLIED, OUTCOME_IGNORED, OUTCOME_DUPLICATE, OUTCOME_PARKED, OUTCOME_SKIPPED)


def public(raw: Mapping[str, Any] | None) -> Document | None:
    """What readers see of a stored document: None for a tombstone, no bookkeeping."""
    if raw is None or raw.get(DELETED):
        return None
    return {name: value for name, value in raw.items() if name not in BOOKKEEPING}


def applied_version(raw: Mapping[str, Any] | None, stream_id: str) -> int:
    if raw is None:
        return 0
    return int((raw.get(APPLIED) or {}).get(escape_segment(stream_id), 0))


HELD_BEHIND = "held behind "  # the error of an event parked behind an earlier parked one of its stream


@dataclass(frozen=True, slots=True)
class Parked:
    """An event a projection could not apply, kept with the reason (ON_ERROR "park"), or
    held behind such an event of its stream (error ``held behind <stream>@<version>``).
    ``event``: what was delivered, for replaying it (not compared)."""

    stream_id: str
    version: int
    position: int
    event_type: str
    error: str
    event: Delivered | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class DocumentWrite:
    """The changes of one event to one document: written only where the document has not
    applied (stream_id, version) yet. ``before``/``after``: the stored document (bookkeeping
    included) around it, as the batch sees it."""

    key: str
    stream_id: str
    version: int
    changes: list[Change]
    before: Document | None
    after: Document


@dataclass
class BatchPlan:
    """What a batch does: documents to write (in order), events parked, the tracked version
    of each stream after it, the position it reaches, and the outcome of each event."""

    writes: list[DocumentWrite] = field(default_factory=list)
    parked: list[Parked] = field(default_factory=list)
    streams: dict[str, int] = field(default_factory=dict)
    position: int | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    documents: dict[str, Document | None] = field(default_factory=dict)  # stored form after the batch

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class DocumentSource(Protocol):
    """What :func:`plan_batch` reads from a read model store."""

    def load(self, keys: Collection[str]) -> dict[str, Document]:
        """The stored documents (bookkeeping and tombstones included) of ``keys`` that exist."""

    def stream_versions(self, streams: Collection[str]) -> dict[str, int]:
        """The tracked version of each of ``streams`` that has one."""

    def parked_streams(self, streams: Collection[str]) -> set[str]:
        """Those of ``streams`` with a parked event (held back: see the module docstring)."""


def _identity(item: Delivered) -> tuple[str, int, int]:
    if isinstance(item, EventEnvelope):
        return item.stream, item.version, item.position
    return item.stream_id, item.version, item.position


def plan_batch(projection: Projection, events: Sequence[Delivered], source: DocumentSource, *,
               release: Collection[str] = ()) -> BatchPlan:
    """The plan of ``events`` (delivered in order) for ``projection``; see the module
    docstring. ``release``: streams whose parked events are being replayed (not held back by
    what the source has parked). Raises VersionGap, HandlerFailed or UnhandledEvent (policy
    "stop"): then nothing of the batch may be written."""
    plan = BatchPlan()
    categories = projection.CATEGORIES
    ours = [item for item in events if _identity(item)[0].partition("-")[0] in categories]
    if len(ours) < len(events):
        plan.outcomes[OUTCOME_IGNORED] = len(events) - len(ours)
    streams = {_identity(item)[0] for item in ours}
    tracked = dict(source.stream_versions(streams))
    parked = source.parked_streams(streams) - set(release) if streams else set()
    held = {s: f"an earlier parked event of {s}" for s in parked}
    fresh: list[tuple[Delivered, str, int, int]] = []
    for item in ours:
        stream_id, version, position = _identity(item)
        if plan.position is None or position > plan.position:
            plan.position = position
        last = tracked.get(stream_id, 0)
        if version <= last:
            plan.count(OUTCOME_DUPLICATE)
        elif stream_id in held:
            fresh.append((item, stream_id, version, position))  # parked behind: no gap to check
        elif version == last + 1:
            tracked[stream_id] = version
            fresh.append((item, stream_id, version, position))
        else:
            raise VersionGap(stream_id, last, version)

    decoded: list[tuple[EventEnvelope | None, Exception | None, Delivered, str, int, int]] = []
    for item, stream_id, version, position in fresh:
        try:
            envelope = item if isinstance(item, EventEnvelope) else decode_event(item, platform_events=projection.PLATFORM_EVENTS)
            decoded.append((envelope, None, item, stream_id, version, position))
        except EventDecodeError as exc:
            decoded.append((None, exc, item, stream_id, version, position))

    cache = _Cache(source)
    cache.prefetch(_keys(projection, (d[0] for d in decoded if d[0] is not None and d[3] not in held)))
    for envelope, error, item, stream_id, version, position in decoded:
        event_type = (envelope.type if envelope is not None
                      else event_type_of(item.topic) if isinstance(item, StreamEvent) else "?")
        if stream_id in held:
            plan.parked.append(Parked(stream_id, version, position, event_type, HELD_BEHIND + held[stream_id], item))
            plan.count(OUTCOME_PARKED)
            continue
        if error is None and envelope is None:
            plan.count(OUTCOME_IGNORED)  # a platform event the projection did not ask for
            plan.streams[stream_id] = version
            continue
        if envelope is not None and envelope.platform and not projection.PLATFORM_EVENTS:
            plan.count(OUTCOME_IGNORED)  # an envelope fed by hand: the same rule
            plan.streams[stream_id] = version
            continue
        handler = projection.handler(envelope) if envelope is not None else None
        if error is None and handler is None:
            if projection.ON_UNHANDLED == "stop":
                raise UnhandledEvent(f"{projection.NAME}: no handler for {stream_id}@{version} ({event_type})",
                                     stream_id, version)
            plan.count(OUTCOME_IGNORED)
            plan.streams[stream_id] = version
            continue
        try:
            if error is not None:
                raise error
            assert envelope is not None and handler is not None
            doc = public(cache.get(handler.key(envelope)))
            changes = check_changes(handler.func(projection, envelope, doc))
            writes = _writes(changes, stream_id, version, cache)
        except Exception as exc:  # noqa: BLE001 - a handler's bug is the projection's to report, by its policy
            reason = f"{type(exc).__name__}: {exc}"
            if projection.ON_ERROR == "stop":
                raise HandlerFailed(f"{projection.NAME}: {stream_id}@{version} ({event_type}) failed: {reason}",
                                    stream_id, version) from exc
            if projection.ON_ERROR == "park":
                plan.parked.append(Parked(stream_id, version, position, event_type, reason, item))
                held[stream_id] = f"{stream_id}@{version}"
                plan.count(OUTCOME_PARKED)
            else:
                plan.count(OUTCOME_SKIPPED)
                plan.streams[stream_id] = version
            log.warning("projection %s: %s@%s (%s) %s: %s", projection.NAME, stream_id, version, event_type,
                        "parked" if projection.ON_ERROR == "park" else "skipped", reason)
            continue
        for write in writes:
            cache.put(write.key, write.after)
        plan.writes.extend(writes)
        plan.streams[stream_id] = version
        plan.count(OUTCOME_APPLIED)
    plan.documents = cache.changed()
    return plan


def _keys(projection: Projection, envelopes: Iterable[EventEnvelope]) -> Iterator[str]:
    """The documents the handlers of ``envelopes`` are given (loaded in one round trip);
    a key function that fails here fails again, by the policy, when its event is handled."""
    for envelope in envelopes:
        handler = projection.handler(envelope)
        if handler is not None:
            try:
                yield handler.key(envelope)
            except Exception:  # noqa: BLE001 - reported when the event is handled
                continue


def _writes(changes: list[Change], stream_id: str, version: int, cache: _Cache) -> list[DocumentWrite]:
    """The stored documents after ``changes`` (one event's), without touching the cache
    (an event that fails halfway changes nothing)."""
    grouped: dict[str, list[Change]] = {}
    for change in changes:
        grouped.setdefault(change.key, []).append(change)
    writes = []
    for key, mine in grouped.items():
        before = cache.get(key)
        if applied_version(before, stream_id) >= version:
            continue  # this document has it already (a redelivery after a partial batch)
        after_public = apply_changes(public(before), key, mine)
        applied = dict((before or {}).get(APPLIED) or {})
        applied[escape_segment(stream_id)] = version
        after: Document = {"_id": key, DELETED: True} if after_public is None else after_public
        after[APPLIED] = applied
        writes.append(DocumentWrite(key, stream_id, version, mine, before, after))
    return writes


class _Cache:
    """The batch's view of documents: loaded once, then as the batch changed them."""

    def __init__(self, source: DocumentSource) -> None:
        self._source = source
        self._docs: dict[str, Document | None] = {}
        self._changed: set[str] = set()

    def prefetch(self, keys: Iterable[str]) -> None:
        wanted = {k for k in keys if k not in self._docs}
        if wanted:
            found = self._source.load(wanted)
            for key in wanted:
                self._docs[key] = found.get(key)

    def get(self, key: str) -> Document | None:
        if key not in self._docs:
            self.prefetch([key])
        return self._docs[key]

    def put(self, key: str, raw: Document) -> None:
        self._docs[key] = raw
        self._changed.add(key)

    def changed(self) -> dict[str, Document | None]:
        return {key: copy.deepcopy(self._docs[key]) for key in self._changed}


__all__ = ["APPLIED", "DELETED", "HELD_BEHIND", "OUTCOMES", "BatchPlan", "DocumentSource", "DocumentWrite", "Parked", "plan_batch",
           "public"]
