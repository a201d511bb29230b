"""The projection sandbox: run projections with no server, from plain pytest.

    board = ProjectionSandbox(AuctionBoard())
    board.given("Lot-vase", "Opened", title="Vase", increment=1)
    board.given("Lot-vase", "BidAccepted", bid_id="b1", bidder="bob", amount=10, sent_at=0.0)
    assert board.document("vase")["high_amount"] == 10

or run real entities in the entity :class:`~infrastructure.testkit.Sandbox` and feed the
projections what they stored, through the real codec and the public envelope decoder:

    kit = Sandbox(Lot, Bidder)
    ...  # connect, open, bid
    board.feed_from(kit)

The documents are built by the same engine as MongoDB's (:mod:`projections.engine`), with
the same per-document bookkeeping, gap detection and failure policies: what passes here
behaves the same on the server (``tests/projections/test_mongo_model.py`` holds MongoDB to it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from infrastructure.persistence import RecorderJournal
from infrastructure.persistence.subscriptions import StreamEvent
from infrastructure.testkit import Sandbox
from projections.engine import BatchPlan, Delivered, Document, Parked, plan_batch, public
from projections.errors import ProjectionError
from projections.events import EventEnvelope
from projections.metrics import ProjectionMetrics
from projections.projection import Projection


class MemoryModel:
    """A read model in memory: stored documents (bookkeeping included), stream tracking,
    parked events and the position reached. The :class:`~projections.engine.DocumentSource`
    of the sandbox."""

    def __init__(self) -> None:
        self.raw: dict[str, Document] = {}
        self.streams: dict[str, int] = {}
        self.parked: list[Parked] = []
        self.position: int | None = None

    def load(self, keys: Collection[str]) -> dict[str, Document]:
        return {key: self.raw[key] for key in keys if key in self.raw}

    def stream_versions(self, streams: Collection[str]) -> dict[str, int]:
        return {s: self.streams[s] for s in streams if s in self.streams}

    def parked_streams(self, streams: Collection[str]) -> set[str]:
        return {p.stream_id for p in self.parked if p.stream_id in streams}

    def commit(self, plan: BatchPlan) -> None:
        for key, raw in plan.documents.items():
            if raw is not None:
                self.raw[key] = raw
        known = {(p.stream_id, p.version) for p in self.parked}
        self.parked.extend(p for p in plan.parked if (p.stream_id, p.version) not in known)
        for stream_id, version in plan.streams.items():
            self.streams[stream_id] = max(version, self.streams.get(stream_id, 0))
        if plan.position is not None and (self.position is None or plan.position > self.position):
            self.position = plan.position

    def documents(self) -> dict[str, Document]:
        """Every document as readers see it (no bookkeeping, deleted ones absent)."""
        out = {}
        for key, raw in self.raw.items():
            doc = public(raw)
            if doc is not None:
                out[key] = doc
        return out


class ProjectionSandbox:
    """Projections over in-memory read models. See the module docstring."""

    def __init__(self, *projections: Projection) -> None:
        if not projections:
            raise ProjectionError("a ProjectionSandbox needs at least one projection")
        self.projections = {p.NAME: p for p in projections}
        if len(self.projections) < len(projections):
            raise ProjectionError("two projections with one NAME in a sandbox")
        self.models = {name: MemoryModel() for name in self.projections}
        self.metrics = ProjectionMetrics()
        self._versions: dict[str, int] = {}
        self._position = 0
        self._kit_positions: dict[int, int | None] = {}

    # ------------------------------------------------------------------ when
    def feed(self, *events: Delivered) -> dict[str, BatchPlan]:
        """Deliver ``events`` (stored events or envelopes), in order, as one batch to every
        projection; returns each projection's plan (outcomes, parked, writes)."""
        plans = {}
        for name, projection in self.projections.items():
            model = self.models[name]
            plan = plan_batch(projection, events, model)
            model.commit(plan)
            self.metrics.record(name, plan)
            plans[name] = plan
        for event in events:
            stream, version, position = ((event.stream, event.version, event.position) if isinstance(event, EventEnvelope)
                                         else (event.stream_id, event.version, event.position))
            self._versions[stream] = max(self._versions.get(stream, 0), version)
            self._position = max(self._position, position)
        return plans

    def envelope(self, stream: str, event_type: str, /, **payload: Any) -> EventEnvelope:
        """An envelope for the next version of ``stream`` (not fed)."""
        category, _, entity_id = stream.partition("-")
        version = self._versions.get(stream, 0) + 1
        position = self._position + 1
        return EventEnvelope(stream=stream, category=category, entity_id=entity_id, version=version, type=event_type,
                             payload=MappingProxyType(dict(payload)), recorded_at=datetime.now(UTC), position=position,
                             event_id=f"sandbox-{position}")

    def given(self, stream: str, event_type: str, /, **payload: Any) -> dict[str, BatchPlan]:
        """Feed the next event of ``stream``: ``given("Lot-vase", "BidAccepted", amount=10, ...)``."""
        return self.feed(self.envelope(stream, event_type, **payload))

    def feed_from(self, kit: Sandbox, batch_size: int = 100) -> int:
        """Feed what the entities of ``kit`` stored since the last call (in the store's
        order, in batches of ``batch_size``); returns how many events were fed."""
        if not isinstance(kit.journal, RecorderJournal):
            raise ProjectionError("feed_from reads the sandbox's in-memory journal (a RecorderJournal)")
        stream = kit.journal.event_stream()
        after = self._kit_positions.get(id(kit))
        fed = 0
        while True:
            events: Sequence[StreamEvent] = stream.read_all(after=after, limit=batch_size)
            if not events:
                break
            self.feed(*events)
            fed += len(events)
            after = events[-1].position
        self._kit_positions[id(kit)] = after
        return fed

    # ------------------------------------------------------------------ then
    def _name(self, name: str | None) -> str:
        if name is None:
            if len(self.models) != 1:
                raise ProjectionError(f"name the projection: one of {sorted(self.models)}")
            return next(iter(self.models))
        if name not in self.models:
            raise ProjectionError(f"no projection {name!r} here: one of {sorted(self.models)}")
        return name

    def _model(self, name: str | None) -> MemoryModel:
        return self.models[self._name(name)]

    def documents(self, name: str | None = None) -> dict[str, Document]:
        """The read model's documents as readers see them (``name``: which projection, if several)."""
        return self._model(name).documents()

    def document(self, key: str, name: str | None = None) -> Document | None:
        return self.documents(name).get(key)

    def parked(self, name: str | None = None) -> list[Parked]:
        return list(self._model(name).parked)

    def outcome_count(self, outcome: str, name: str | None = None) -> int:
        """How many events had ``outcome`` (the projection's metric)."""
        return int(self.metrics.count(self._name(name), outcome))


__all__ = ["MemoryModel", "ProjectionSandbox"]
