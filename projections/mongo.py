"""MongoDB read models (pymongo): a projection's documents in a collection named after it,
written in bulk with exactly-once effect.

Collections of a projection ``NAME``:

- ``NAME``: the documents, ``_id`` = the key handlers name. Each carries ``_applied`` (per
  source stream, escaped, the last version applied to it) and, once deleted, is a tombstone
  (``_deleted: true``, fields removed, ``_applied`` kept) so a redelivered older event cannot
  bring it back. Readers use :meth:`MongoReadModel.get` / :meth:`MongoReadModel.documents`, or
  filter ``{"_deleted": {"$ne": true}}`` and drop ``_applied`` themselves.
- ``NAME__tracking``: per source stream the last version considered (``stream:<id>``), and
  the position reached (``position``).
- ``NAME__parked``: events the projection parked (``ON_ERROR = "park"``) or held behind a
  parked event of their stream, with the error and the event itself (``engine``: a parked
  event holds its stream back); :meth:`MongoReadModel.replay_parked` applies them again.

**Which collections are live: the pointer.** ``xplatform_read_models`` holds one document per
projection, ``{_id: NAME, collection: <live>}``; without one, ``NAME`` is live. The three
collections above are named after the live one (``<live>``, ``<live>__tracking``,
``<live>__parked``). A rebuild (:mod:`projections.rebuild`) fills fresh collections
``NAME__r<stamp>`` and then switches readers over by rewriting that one pointer document:
a single-document write, atomic in MongoDB, so a reader that resolves the pointer sees
either the old read model whole or the new one whole. Readers and runners resolve it when
the model is built and again on :meth:`MongoReadModel.refresh` (runners call it once per
batch, a query API once per request: one small read).

**One batch, three round trips**: one ``find`` of the documents the batch's handlers are
given (``engine.plan_batch``), one ordered ``bulk_write`` of every document change, one of
the tracking (stream versions and position, ``$max`` so they never go back) after the
documents are acknowledged (plus one for parked events, when there are). Every document
update is conditional on the document not having applied that event
(``_applied.<stream>`` below its version): a redelivered batch, or one cut short by a crash
after some documents were written, is applied exactly once per document. Such a
conditional upsert of a document that already has the event fails with a duplicate key
(the filter did not match, so MongoDB tried to insert): the writer tries that one update
again alone (another writer may have created the document meanwhile) and takes a second
duplicate key as "already applied", then goes on with the rest of the batch in order.

**One update per document** where a batch has several events changing it and their
changes combine (:func:`combined_update`: sets, unsets, increments, capped pushes): the
document's update is conditional on it having *none* of them, and one that has some fails
it with a duplicate key, upon which the writer sends each event's own conditional update,
in order (:func:`updates_for`). A hot document costs one write per batch, not one per event.

**Write concern** ``majority`` by default (:func:`connect`): a catch-up runner moves its
position, and a persistent subscription acks, only after the batch is acknowledged; a write
acknowledged by the primary alone can be rolled back by a failover, and the read model
would then miss events its position (or the ack) says it has, with nothing left to deliver
them again. ``w=1`` is faster and safe only with a single server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bson.codec_options import CodecOptions
from pymongo import MongoClient, UpdateOne
from pymongo.collection import Collection as MongoCollection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from infrastructure.persistence.subscriptions import StreamEvent
from projections.changes import Change, Delete, Increment, Push, Set, Unset, escape_segment
from projections.engine import (
    APPLIED,
    DELETED,
    BatchPlan,
    Delivered,
    DocumentWrite,
    Parked,
    plan_batch,
    public,
)
from projections.errors import ModelWriteError
from projections.metrics import ProjectionMetrics
from projections.model_cache import ModelCache
from projections.projection import Document, Projection

DUPLICATE_KEY = 11000
POSITION_ID = "position"
CHECKPOINT_ID = "checkpoint"  # the position up to which every stream version is written (resume_position)
DEFER_BATCHES = 40
"""A catching-up runner writes its stream versions every 40th full batch (MongoReadModel.write):
up to 20,000 events redelivered after a crash (read again and skipped by every document in
the plan, without a write: seconds), for one stream upsert per stream per 20,000 events
instead of per 500 (the tracking writes were 40 % of a catching-up batch's database time,
and still a sixth of it written every 10th batch, with a thousand streams)."""
STREAM_PREFIX = "stream:"
POINTERS = "xplatform_read_models"
"""The collection of pointer documents naming each projection's live collection."""
JOINED = "consumers_joined"
"""The pointer document's count of persistent-subscription consumers that ever joined the
projection's group (:meth:`MongoReadModel.announce_consumer`)."""
log = logging.getLogger(__name__)
CODEC_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, tzinfo=UTC)


def connect(uri: str, *, write_concern: str | int = "majority", timeout_ms: int = 10_000) -> MongoClient[dict[str, Any]]:
    """A client for read models: write concern ``majority`` by default (module docstring),
    datetimes read back aware in UTC."""
    return MongoClient(uri, w=write_concern, tz_aware=True, tzinfo=UTC, serverSelectionTimeoutMS=timeout_ms)


class MongoReadModel:
    """One projection's read model in a MongoDB database. ``apply(events)`` handles a batch
    (see the module docstring); the rest reads it."""

    def __init__(self, projection: Projection, database: Database[Any], metrics: ProjectionMetrics | None = None, *,
                 collection: str | None = None) -> None:
        """``collection``: the collections to use (a rebuild's fresh ones); None: the live
        ones, as the pointer names them (module docstring)."""
        self.projection = projection
        self.database = database.with_options(codec_options=CODEC_OPTIONS)
        self.metrics = metrics
        self.pinned = collection is not None
        self.cache: ModelCache | None = None
        self.consumers_joined: int | None = None
        """The pointer's count of consumers that joined (:meth:`announce_consumer`), as the
        last :meth:`refresh` read it; None before one (or on pinned collections)."""
        self.in_flight: BatchPlan | None = None
        """A batch being written by another thread while the next is prepared (the catch-up
        runner's write-behind): what it does is read before anything remembered or stored."""
        self._pending_streams: dict[str, int] = {}
        self._pending_batches = 0
        self._bind(collection or live_collection(self.database, projection.NAME))

    def remember(self, limit: int) -> None:
        """Keep what this runner reads and writes (up to ``limit`` documents) for its next
        batches: for a catch-up runner only (see :mod:`projections.model_cache`)."""
        self.cache = ModelCache(limit)

    def _bind(self, name: str) -> None:
        if self._pending_streams:
            self.flush()  # to the collections they belong to
        if self.cache is not None:
            self.cache.clear()
        self.name = name
        self.collection: MongoCollection[dict[str, Any]] = self.database[name]
        self.tracking: MongoCollection[dict[str, Any]] = self.database[f"{name}__tracking"]
        self.parked_collection: MongoCollection[dict[str, Any]] = self.database[f"{name}__parked"]

    def refresh(self) -> bool:
        """Follow the pointer to the live collections (after a rebuild switched them); True
        if they changed. A model built on given collections stays on them."""
        if self.pinned:
            return False
        try:
            pointer = self.database[POINTERS].find_one({"_id": self.projection.NAME})
        except PyMongoError as exc:
            raise ModelWriteError(f"{self.projection.NAME}: reading the live collection's pointer failed: {exc}") from exc
        self.consumers_joined = 0 if pointer is None else int(pointer.get(JOINED, 0))
        name = _live(pointer, self.projection.NAME)
        if name == self.name:
            return False
        self._bind(name)
        return True

    def announce_consumer(self) -> None:
        """Count one more consumer joining the projection's persistent-subscription group,
        before it joins (:mod:`projections.persistent`: a consumer that remembers documents
        across batches forgets them when the count moves). Kept in the pointer document,
        which every runner reads once per batch anyway (:meth:`refresh`), and which outlives
        a rebuild's switch."""
        try:
            self.database[POINTERS].update_one({"_id": self.projection.NAME}, {"$inc": {JOINED: 1}}, upsert=True)
        except PyMongoError as exc:
            raise ModelWriteError(f"{self.projection.NAME}: counting a consumer in failed: {exc}") from exc

    # ------------------------------------------------------------------ DocumentSource
    def load(self, keys: Collection[str]) -> dict[str, Document]:
        remembered: dict[str, Document] = {}
        if self.in_flight is not None:
            writing = self.in_flight.documents
            remembered = {key: doc for key in keys if (doc := writing.get(key)) is not None}
            keys = [key for key in keys if key not in writing]
            if not keys:
                return remembered
        if self.cache is not None:
            cached, keys = self.cache.documents(keys)
            remembered.update(cached)
            if not keys:
                return remembered
        try:
            found = {doc["_id"]: doc for doc in self.collection.find({"_id": {"$in": list(keys)}})}
        except PyMongoError as exc:
            raise ModelWriteError(f"{self.projection.NAME}: reading documents failed: {exc}") from exc
        if self.cache is not None:
            self.cache.read(keys, found)
        return {**remembered, **found}

    def stream_versions(self, streams: Collection[str]) -> dict[str, int]:
        remembered: dict[str, int] = {}
        if self.in_flight is not None:
            writing = self.in_flight.streams
            remembered = {stream: writing[stream] for stream in streams if stream in writing}
            streams = [stream for stream in streams if stream not in writing]
            if not streams:
                return remembered
        if self.cache is not None:
            cached, streams = self.cache.streams(streams)
            remembered.update(cached)
            if not streams:
                return remembered
        held_back = self._pending_streams  # one reference: a write-behind thread may replace it
        if held_back:  # written by this runner, not flushed yet: newer than the database's
            pending = {s: held_back[s] for s in streams if s in held_back}
            remembered.update(pending)
            streams = [s for s in streams if s not in pending]
            if not streams:
                return remembered
        ids = [STREAM_PREFIX + s for s in streams]
        try:
            found = {doc["_id"][len(STREAM_PREFIX):]: int(doc["version"]) for doc in self.tracking.find({"_id": {"$in": ids}})}
        except PyMongoError as exc:
            raise ModelWriteError(f"{self.projection.NAME}: reading stream tracking failed: {exc}") from exc
        if self.cache is not None:
            self.cache.read_streams(streams, found)
        return {**remembered, **found}

    def parked_streams(self, streams: Collection[str]) -> set[str]:
        if self.cache is not None and self.cache.parked_count == 0:
            return set()  # counted at the start of this batch: nothing is parked
        try:
            return set(self.parked_collection.distinct("stream_id", {"stream_id": {"$in": list(streams)}}))
        except PyMongoError as exc:
            raise ModelWriteError(f"{self.projection.NAME}: reading parked events failed: {exc}") from exc

    # ------------------------------------------------------------------ writing
    def apply(self, events: Sequence[Delivered], *, behind: bool = False) -> BatchPlan:
        """Apply a batch of delivered events (in order): plan, write, record metrics.
        Raises VersionGap / HandlerFailed / UnhandledEvent (nothing written) or
        ModelWriteError (what was written is idempotent: deliver the batch again).
        ``behind``: the runner has more events waiting (a full batch): with :meth:`remember`
        on, the stream versions may wait for a later batch (see :meth:`write`)."""
        started = time.perf_counter()
        plan = self.prepare(events)
        self.commit(plan, defer_streams=behind and self.cache is not None, started=started)
        return plan

    def prepare(self, events: Sequence[Delivered]) -> BatchPlan:
        """The plan of a batch (:func:`~projections.engine.plan_batch`), nothing written:
        the first half of :meth:`apply`. It reads the documents and stream versions as
        :attr:`in_flight` (a batch being written meanwhile) leaves them, else as remembered,
        else as stored."""
        if self.cache is not None:
            self._forget_if_parked_changed(self.cache)
        try:
            return plan_batch(self.projection, events, self)
        except BaseException:
            if self.cache is not None:
                self.cache.clear()
            raise

    def commit(self, plan: BatchPlan, *, defer_streams: bool = False, started: float | None = None) -> None:
        """Write a prepared plan (:meth:`write`), then :meth:`acknowledged`: the second half of
        :meth:`apply`. A failed write makes the model forget what it remembers."""
        try:
            self.write(plan, defer_streams=defer_streams)
        except BaseException:
            self.forget()
            raise
        self.acknowledged(plan, started)

    def acknowledged(self, plan: BatchPlan, started: float | None = None) -> None:
        """``plan`` is written: remember its documents and stream versions (with
        :meth:`remember` on) and record its metrics (``started``: when it began, for the
        batch duration)."""
        if self.cache is not None:
            if plan.parked:
                self.cache.clear()  # rare: start afresh rather than reason about whose parked events the count shows
            else:
                self.cache.written(plan.documents, plan.streams)
        if self.metrics is not None:
            self.metrics.record(self.projection.NAME, plan,
                                None if started is None else time.perf_counter() - started)

    def forget(self) -> None:
        """Drop what :meth:`remember` kept (after a failed write: it may hold what was not written)."""
        if self.cache is not None:
            self.cache.clear()

    def _forget_if_parked_changed(self, cache: ModelCache) -> None:
        """Clear ``cache`` when the parked events changed since the last batch (a
        ``replay-parked`` wrote documents and versions this runner did not). Nothing parked
        (the usual case) is seen with one small ``find``; only then is the collection
        counted (a ``count`` costs ten times a ``find`` on secantusdb: 3.6 ms, once per
        batch, was a tenth of a live projector's database time)."""
        try:
            empty = self.parked_collection.find_one({}, {"_id": 1}) is None
            count = 0 if empty else self.parked_collection.estimated_document_count()
        except PyMongoError as exc:
            raise ModelWriteError(f"{self.projection.NAME}: counting parked events failed: {exc}") from exc
        if cache.parked_count is not None and count != cache.parked_count:
            cache.clear()
        cache.parked_count = count

    def write(self, plan: BatchPlan, *, defer_streams: bool = False) -> None:
        """Write a plan: documents, then parked events, then tracking and position.

        ``defer_streams`` (a catch-up runner working through a backlog): the stream versions
        are kept in memory and written with a later batch's (one upsert per stream for up to
        :data:`DEFER_BATCHES` batches instead of one per batch: the tracking writes were
        40 % of a catching-up batch's database time), while the position moves with every
        batch. The *checkpoint* (where a restarting runner resumes,
        :meth:`resume_position`) moves only when the stream versions are written: events
        after it are delivered again and skip every document that has them. A batch that
        is not full (the runner is at the head: read-your-writes readers wait on the stream
        versions), that parks, or any other write, writes them at once."""
        self.write_documents(plan.writes)
        if plan.parked:
            self._bulk(self.parked_collection, [
                UpdateOne({"_id": f"{p.stream_id}@{p.version}"},
                          {"$set": {"error": p.error},
                           "$setOnInsert": {"stream_id": p.stream_id, "version": p.version, "position": p.position,
                                            "event_type": p.event_type, "event": _stored_event(p)}}, upsert=True)
                for p in plan.parked])
        if defer_streams and not plan.parked and self._pending_batches + 1 < DEFER_BATCHES:
            ops = []
            if self._pending_batches == 0:  # a model written before checkpoints: its position is one
                ops.append(UpdateOne({"_id": CHECKPOINT_ID}, {"$setOnInsert": {"position": self.position()}},
                                     upsert=True))
            for stream, version in plan.streams.items():
                self._pending_streams[stream] = max(version, self._pending_streams.get(stream, 0))
            self._pending_batches += 1
            if plan.position is not None:
                ops.append(UpdateOne({"_id": POSITION_ID}, {"$max": {"position": plan.position}}, upsert=True))
            if ops:
                self._bulk(self.tracking, ops)
            return
        self._write_tracking(plan.streams, plan.position)

    def flush(self) -> None:
        """Write the stream versions held back by ``defer_streams`` (and the checkpoint)."""
        if self._pending_streams:
            self._write_tracking({}, None)

    def _write_tracking(self, streams: Mapping[str, int], position: int | None) -> None:
        merged = dict(self._pending_streams)
        for stream, version in streams.items():
            merged[stream] = max(version, merged.get(stream, 0))
        tracking = [UpdateOne({"_id": STREAM_PREFIX + stream}, {"$max": {"version": version}}, upsert=True)
                    for stream, version in merged.items()]
        if position is None and self._pending_streams:
            position = self.position()  # every stream up to the position written so far is in merged
        if position is not None:
            tracking.append(UpdateOne({"_id": POSITION_ID}, {"$max": {"position": position}}, upsert=True))
            tracking.append(UpdateOne({"_id": CHECKPOINT_ID}, {"$set": {"position": position}}, upsert=True))
        if tracking:
            self._bulk(self.tracking, tracking)
        self._pending_streams = {}
        self._pending_batches = 0

    def write_documents(self, writes: Sequence[DocumentWrite]) -> None:
        """The document updates of ``writes``, each applied at most once: one update per
        document where its events' changes combine (:func:`updates_for`), else one per event
        in order."""
        if writes:
            updates = updates_for(writes)
            self._bulk(self.collection, [update for update, _ in updates], [each for _, each in updates])

    def _bulk(self, collection: MongoCollection[dict[str, Any]], ops: list[UpdateOne],
              separately: Sequence[list[UpdateOne]] = ()) -> None:
        """``ops`` in order; a duplicate key (a conditional upsert whose document has the
        event already) is tried once more alone, or, for a combined update, as the updates
        of its events one by one (``separately[i]``): the document may have some of them."""
        start = 0
        while start < len(ops):
            try:
                collection.bulk_write(ops[start:], ordered=True)
                return
            except BulkWriteError as exc:
                index = start + self._duplicate_index(collection, exc)
                if index < len(separately) and separately[index]:
                    self._bulk(collection, separately[index])
                    start = index + 1
                    continue
                try:
                    collection.bulk_write([ops[index]], ordered=True)  # once more alone: a racing insert?
                except BulkWriteError as again:
                    self._duplicate_index(collection, again)  # a second duplicate key: already applied
                except PyMongoError as again:
                    raise ModelWriteError(f"{collection.name}: write failed: {again}") from again
                start = index + 1
            except PyMongoError as exc:
                raise ModelWriteError(f"{collection.name}: write failed: {exc}") from exc

    @staticmethod
    def _duplicate_index(collection: MongoCollection[dict[str, Any]], exc: BulkWriteError) -> int:
        errors = exc.details.get("writeErrors") or []
        concern = exc.details.get("writeConcernErrors") or []
        if concern or not errors or errors[0].get("code") != DUPLICATE_KEY:
            raise ModelWriteError(f"{collection.name}: write failed: {errors[:1] or concern[:1]}") from exc
        return int(errors[0]["index"])

    # ------------------------------------------------------------------ reading
    def get(self, key: str) -> Document | None:
        """Document ``key`` as readers see it (None: absent or deleted)."""
        return public(self.collection.find_one({"_id": key}))

    def documents(self, query: Mapping[str, Any] | None = None) -> dict[str, Document]:
        """Every live document matching ``query``, as readers see them, by key."""
        found = self.collection.find({**(query or {}), DELETED: {"$ne": True}}, {APPLIED: 0})
        return {doc["_id"]: doc for doc in found}

    def raw_documents(self) -> dict[str, Document]:
        """Every stored document, bookkeeping and tombstones included (for checks)."""
        return {doc["_id"]: doc for doc in self.collection.find({})}

    def position(self) -> int | None:
        """The position the read model reached (its last batch's), None before any."""
        doc = self.tracking.find_one({"_id": POSITION_ID})
        return None if doc is None else int(doc["position"])

    def resume_position(self) -> int | None:
        """Where a catch-up runner resumes: the last position written with every stream
        version up to it (:meth:`write`), at or before :meth:`position`; the position for a
        read model written before checkpoints existed."""
        doc = self.tracking.find_one({"_id": CHECKPOINT_ID})
        if doc is None:
            return self.position()
        return None if doc["position"] is None else int(doc["position"])

    def parked(self) -> list[Parked]:
        """The parked events, in the order they were delivered (with the events themselves)."""
        return [Parked(d["stream_id"], d["version"], d["position"], d["event_type"], d["error"],
                       _delivered(d["stream_id"], d["version"], d["position"], d.get("event")))
                for d in self.parked_collection.find({}).sort([("position", 1), ("version", 1)])]

    def parked_count(self) -> int:
        return self.parked_collection.count_documents({})

    def replay_parked(self, rounds: int = 10) -> tuple[int, list[Parked]]:
        """Apply the parked events again (after the projection was fixed), each stream's in
        version order, with the projection as it is now; returns how many were applied and
        what is still parked. An event that fails again is parked again (its error
        updated) and holds the rest of its stream back as before. A runner may park more
        events of a held stream meanwhile: they are picked up by the next round (up to
        ``rounds``, while a round applies something)."""
        applied = 0
        for _ in range(rounds):
            progressed = 0
            by_stream: dict[str, list[Parked]] = {}
            for parked in self.parked():
                by_stream.setdefault(parked.stream_id, []).append(parked)
            for stream_id, items in by_stream.items():
                items.sort(key=lambda p: p.version)
                events = [p.event for p in items if p.event is not None]
                if len(events) < len(items):
                    log.warning("%s: parked events of %s fed as envelopes cannot be replayed", self.name, stream_id)
                    continue
                plan = plan_batch(self.projection, events, self, release={stream_id})
                self.write(plan)
                progressed += plan.outcomes.get("applied", 0) + plan.outcomes.get("ignored", 0) + \
                    plan.outcomes.get("skipped", 0)
                tracked = self.stream_versions([stream_id]).get(stream_id, 0)
                try:
                    self.parked_collection.delete_many({"stream_id": stream_id, "version": {"$lte": tracked}})
                except PyMongoError as exc:
                    raise ModelWriteError(f"{self.parked_collection.name}: clearing replayed events failed: {exc}") from exc
            applied += progressed
            if not progressed:
                break
        return applied, self.parked()


def live_collection(database: Database[Any], name: str) -> str:
    """The live collection of projection ``name``: the pointer's (module docstring), else ``name``."""
    return _live(database[POINTERS].find_one({"_id": name}), name)


def _live(pointer: Mapping[str, Any] | None, name: str) -> str:
    """The collection a pointer document names (it may hold only a consumer count: then ``name``)."""
    collection = None if pointer is None else pointer.get("collection")
    return name if collection is None else str(collection)


def switch_live(database: Database[Any], name: str, collection: str) -> str:
    """Point readers of projection ``name`` at ``collection`` (one atomic document write);
    returns the collection that was live before."""
    before = database[POINTERS].find_one_and_update(
        {"_id": name}, {"$set": {"collection": collection, "switched_at": datetime.now(UTC)}}, upsert=True)
    return _live(before, name)


def _stored_event(parked: Parked) -> dict[str, Any] | None:
    """What a parked record keeps of the delivered event, to replay it (stored events only)."""
    event = parked.event
    if not isinstance(event, StreamEvent):
        return None
    return {"topic": event.topic, "state": event.state, "event_id": event.event_id, "recorded_at": event.recorded_at}


def _delivered(stream_id: str, version: int, position: int, kept: Mapping[str, Any] | None) -> StreamEvent | None:
    if not kept:
        return None
    return StreamEvent(stream_id=stream_id, version=version, position=position, event_id=kept["event_id"],
                       topic=kept["topic"], state=bytes(kept["state"]), recorded_at=kept.get("recorded_at"))


def updates_for(writes: Sequence[DocumentWrite]) -> list[tuple[UpdateOne, list[UpdateOne]]]:
    """The updates that apply ``writes``: per document, one update combining its events'
    changes (:func:`combined_update`) with the per-event updates it stands for, or, where
    they do not combine, each event's :func:`update_for` (in order) with nothing behind it.
    Documents are independent, so only each document's own order matters."""
    by_key: dict[str, list[DocumentWrite]] = {}
    for write in writes:
        by_key.setdefault(write.key, []).append(write)
    updates: list[tuple[UpdateOne, list[UpdateOne]]] = []
    for mine in by_key.values():
        combined = combined_update(mine) if len(mine) > 1 else None
        if combined is not None:
            updates.append((combined, [update_for(write) for write in mine]))
        else:
            updates.extend((update_for(write), []) for write in mine)
    return updates


def combined_update(writes: Sequence[DocumentWrite]) -> UpdateOne | None:
    """One conditional upsert doing what ``writes`` (several events' changes to one
    document, in order) do one after the other, or None when they do not combine.

    It applies only to a document that has none of the events (per stream, ``_applied``
    below the first version written here); one that has some (another writer, a batch cut
    short) fails it with a duplicate key, and the writer then sends the events' own updates
    (:meth:`MongoReadModel._bulk`), each conditional as always. Field by field: a field any
    of them sets or unsets ends as the events after the last such change leave it, whatever
    it held before, so it is set to its value in the plan's document after the last event
    (or unset, when only unsets touched it); a field only incremented gets the sum; a field
    only pushed to, under one cap, gets every value in order under that cap (the last
    ``cap`` of the last ``cap`` are the last ``cap``). Delete, pushes under different caps,
    increments and pushes to one field, a field set and then unset (its map would stay),
    or two events touching a field and a map around it, do not combine."""
    paths: dict[str, list[Change]] = {}
    creates = False
    for write in writes:
        for change in write.changes:
            if isinstance(change, Set | Increment):
                for name in change.fields:
                    paths.setdefault(name, []).append(change)
                creates = True
            elif isinstance(change, Push):
                paths.setdefault(change.field, []).append(change)
                creates = True
            elif isinstance(change, Unset):
                for name in change.fields:
                    paths.setdefault(name, []).append(change)
            else:
                return None
    split = [tuple(name.split(".")) for name in paths]
    for i, one in enumerate(split):
        for other in split[i + 1:]:
            if one[:len(other)] == other[:len(one)]:
                return None  # a field and a map around it
    final = writes[-1].after
    sets: dict[str, Any] = {}
    incs: dict[str, Any] = {}
    pushes: dict[str, Any] = {}
    unsets: dict[str, Any] = {}
    for name, changes in paths.items():
        kinds = {type(change) for change in changes}
        if kinds & {Set, Unset}:
            found, value = _field(final, name)
            if found:
                sets[name] = value
            elif kinds == {Unset}:
                unsets[name] = ""
            else:
                return None
        elif kinds == {Increment}:
            incs[name] = sum(change.fields[name] for change in changes if isinstance(change, Increment))
        elif kinds == {Push} and len({change.cap for change in changes if isinstance(change, Push)}) == 1:
            pushed = [change for change in changes if isinstance(change, Push)]
            each: dict[str, Any] = {"$each": [value for change in pushed for value in change.values]}
            if pushed[0].cap is not None:
                each["$slice"] = -pushed[0].cap
            pushes[name] = each
        else:
            return None
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for write in writes:
        first.setdefault(write.stream_id, write.version)
        last[write.stream_id] = write.version
    query: dict[str, Any] = {"_id": writes[0].key}
    for stream, version in first.items():
        query[f"{APPLIED}.{escape_segment(stream)}"] = {"$not": {"$gte": version}}
    sets.update({f"{APPLIED}.{escape_segment(stream)}": version for stream, version in last.items()})
    update: dict[str, Any] = {"$set": sets}
    if incs:
        update["$inc"] = incs
    if pushes:
        update["$push"] = pushes
    if creates:
        unsets[DELETED] = ""  # as update_for: a change that creates revives a tombstone
    else:
        update["$setOnInsert"] = {DELETED: True}  # unsets alone on no document: it stays absent
    if unsets:
        update["$unset"] = unsets
    return UpdateOne(query, update, upsert=True)


def _field(doc: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    node: Any = doc
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def update_for(write: DocumentWrite) -> UpdateOne:
    """The conditional upsert that applies ``write`` unless its document has it already."""
    applied = f"{APPLIED}.{escape_segment(write.stream_id)}"
    query = {"_id": write.key, applied: {"$not": {"$gte": write.version}}}
    update: dict[str, dict[str, Any]]
    if any(isinstance(c, Delete) for c in write.changes):  # alone for its document (check_changes)
        update = {"$set": {DELETED: True, applied: write.version}}
        fields = [name for name in (write.before or {}) if name not in ("_id", APPLIED, DELETED)]
        if fields:
            update["$unset"] = {name: "" for name in fields}
        return UpdateOne(query, update, upsert=True)
    sets: dict[str, Any] = {applied: write.version}
    incs: dict[str, Any] = {}
    pushes: dict[str, Any] = {}
    unsets: dict[str, Any] = {}
    creates = False
    for change in write.changes:
        if isinstance(change, Set):
            sets.update(change.fields)
            creates = True
        elif isinstance(change, Increment):
            incs.update(change.fields)
            creates = True
        elif isinstance(change, Push):
            each: dict[str, Any] = {"$each": list(change.values)}
            if change.cap is not None:
                each["$slice"] = -change.cap
            pushes[change.field] = each
            creates = True
        elif isinstance(change, Unset):
            unsets.update({name: "" for name in change.fields})
    update = {"$set": sets}
    if incs:
        update["$inc"] = incs
    if pushes:
        update["$push"] = pushes
    if creates:
        unsets[DELETED] = ""  # a change that creates revives a tombstone
    else:
        update["$setOnInsert"] = {DELETED: True}  # Unset alone on no document: stays absent
    if unsets:
        update["$unset"] = unsets
    return UpdateOne(query, update, upsert=True)


__all__ = ["POINTERS", "MongoReadModel", "combined_update", "connect", "live_collection", "switch_live", "update_for",
           "updates_for"]
