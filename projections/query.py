"""The read port over MongoDB read models (:class:`MongoQueries`): what the edge's query API
asks (``infrastructure/read_port.py``; HTTP in ``edge/reads.py``).

Who reads what is the projection's decision (``Projection.read_filter`` / ``may_read``):
a list is narrowed by the filter in the database and each document is checked again; a
single document is refused before it is fetched when the filter pins another key, so a
refusal does not tell whether someone else's document exists.

Consistency (per read, :class:`~infrastructure.read_port.Consistency`), checked against what
the read model records beside its documents (``projections.mongo``):

- read-your-writes: a position ``<stream>@<version>`` holds once the model's tracking of
  that stream is at the version or beyond (a stream of a category the projection does not
  read holds at once);
- bounded staleness (``max_lag_ms``): the model's lag is 0 when no event of its categories
  follows its position in the store, else the age of the first such event (read from the
  event store: one indexed read of one event). It holds when the lag is at most the bound.

A read whose consistency does not hold yet polls again (2 ms, doubling, at most
``poll_max_s``, 20 ms) until it holds or its wait is over (:class:`ReadModelBehind`). Polling, not a
notification, so it works the same whether the projector runs in this process or another.
pymongo is blocking: every database call runs on a small thread pool of its own (``threads``),
never on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pymongo.database import Database
from pymongo.errors import PyMongoError

from infrastructure.errors import (
    DocumentNotFound,
    PersistenceError,
    ReadModelBehind,
    ReadModelUnavailable,
    ReadNotAllowed,
    UnknownReadModel,
)
from infrastructure.persistence.subscriptions import EventFilter, EventStream
from infrastructure.read_port import EVENTUAL, Consistency, Document
from projections.engine import APPLIED, DELETED
from projections.errors import EventDecodeError, ProjectionError
from projections.events import decode_event
from projections.mongo import MongoReadModel
from projections.projection import Projection

T = TypeVar("T")

POLL_FIRST_S = 0.002
POLL_MAX_S = 0.02
"""A waiting read checks again after 2 ms, then twice as long each time, at most 20 ms: a
live projector applies a batch within tens of ms, and a read should see it within a few ms
after (read-your-writes targets p99 <= 150 ms end to end); one small indexed read per check,
and the checks of all waiting reads share the pool's threads, so a stopped projector cannot
make waiting reads hammer the database."""
THREADS = 4
"""Database calls of reads in flight at once (pymongo is blocking): enough for a dev edge
and a small one; the rest queue."""


class MongoQueries:
    """The read port (see the module docstring) for ``projections`` in ``database``;
    ``stream``: the event store's event stream, needed for bounded-staleness reads only."""

    def __init__(self, projections: Iterable[Projection], database: Database[Any], stream: EventStream | None = None,
                 *, threads: int = THREADS, poll_max_s: float = POLL_MAX_S, now: Callable[[], float] = time.time) -> None:
        self.models = {p.NAME: MongoReadModel(p, database) for p in projections}
        self.stream = stream
        self.poll_max_s = poll_max_s
        self.now = now
        self.waiting = 0
        """Reads waiting for their consistency now (for metrics, and for tests to know a read waits)."""
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="xplatform-reads")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def projections(self) -> Collection[str]:
        return tuple(self.models)

    # ------------------------------------------------------------------ the port
    async def get(self, projection: str, key: str, claims: Mapping[str, Any],
                  consistency: Consistency = EVENTUAL) -> Document:
        model = self._model(projection)
        scope = self._scope(model, claims)
        if "_id" in scope and scope["_id"] != key:
            raise ReadNotAllowed(f"{projection}/{key[:80]} is not yours to read")
        await self._reach(model, consistency)
        document = await self._call(model.get, key)
        if document is None:
            raise DocumentNotFound(f"{projection} has no document {key[:80]!r}")
        if not model.projection.may_read(claims, document):
            raise ReadNotAllowed(f"{projection}/{key[:80]} is not yours to read")
        return document

    async def find(self, projection: str, filters: Mapping[str, tuple[Any, ...]], limit: int,
                   claims: Mapping[str, Any], consistency: Consistency = EVENTUAL) -> tuple[list[Document], bool]:
        model = self._model(projection)
        scope = self._scope(model, claims)
        clauses: list[dict[str, Any]] = [{name: values[0] if len(values) == 1 else {"$in": list(values)}}
                                         for name, values in filters.items()]
        clauses += [{name: value} for name, value in scope.items()]
        clauses.append({DELETED: {"$ne": True}})
        query = clauses[0] if len(clauses) == 1 else {"$and": clauses}
        await self._reach(model, consistency)

        def fetch() -> list[Document]:
            return list(model.collection.find(query, {APPLIED: 0}).sort("_id", 1).limit(limit + 1))

        found = await self._call(fetch)
        more = len(found) > limit
        return [doc for doc in found[:limit] if model.projection.may_read(claims, doc)], more

    # ------------------------------------------------------------------ consistency
    async def _reach(self, model: MongoReadModel, consistency: Consistency) -> None:
        """Return once ``consistency`` holds for ``model``; ReadModelBehind after its wait."""
        if consistency.eventual:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + consistency.wait_s
        delay = POLL_FIRST_S
        self.waiting += 1
        try:
            while not await self._call(self._holds, model, consistency):
                left = deadline - loop.time()
                if left <= 0:
                    raise ReadModelBehind(f"{model.projection.NAME} did not reach the asked consistency within "
                                          f"{consistency.wait_s:g} s (its projector is behind or stopped); retry, or "
                                          "read without a position token / max_lag_ms")
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, self.poll_max_s)
        finally:
            self.waiting -= 1

    def _holds(self, model: MongoReadModel, consistency: Consistency) -> bool:
        """Whether ``consistency`` holds now (a thread of the pool: blocking calls)."""
        categories = model.projection.CATEGORIES
        wanted: dict[str, int] = {}
        for position in consistency.after:
            if position.category in categories:
                wanted[position.stream] = max(position.version, wanted.get(position.stream, 0))
        if wanted:
            applied = model.stream_versions(wanted)
            if any(applied.get(stream, 0) < version for stream, version in wanted.items()):
                return False
        if consistency.max_lag_ms is not None:
            return self._lag_s(model) * 1000 <= consistency.max_lag_ms
        return True

    def _lag_s(self, model: MongoReadModel) -> float:
        """The model's lag: the age of the first event of its categories after its position
        (0 when there is none: it is at the head)."""
        if self.stream is None:
            raise ReadModelUnavailable("bounded-staleness reads need the event store, which this process does not read")
        try:
            following = self.stream.read_all(after=model.position(), limit=1,
                                             filter=EventFilter(categories=model.projection.CATEGORIES))
        except PersistenceError as exc:
            raise ReadModelUnavailable(f"the event store could not be read to measure the lag: {exc}") from exc
        if not following:
            return 0.0
        event = following[0]
        recorded = event.recorded_at
        if recorded is None:
            try:
                envelope = decode_event(event, platform_events=True)
            except EventDecodeError:
                return float("inf")  # undatable: stale until the projector is past it
            recorded = envelope.recorded_at if envelope is not None else None
        return float("inf") if recorded is None else max(0.0, self.now() - recorded.timestamp())

    # ------------------------------------------------------------------ helpers
    def _model(self, projection: str) -> MongoReadModel:
        model = self.models.get(projection)
        if model is None:
            raise UnknownReadModel(f"no read model {projection[:80]!r} here (served: {', '.join(self.models)})")
        return model

    @staticmethod
    def _scope(model: MongoReadModel, claims: Mapping[str, Any]) -> dict[str, Any]:
        scope = model.projection.read_filter(claims)
        if scope is None:
            raise ReadNotAllowed(f"{model.projection.NAME} is not readable with this token")
        return scope

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` on the pool; database failures become ReadModelUnavailable."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)
        except (PyMongoError, ProjectionError) as exc:
            raise ReadModelUnavailable(f"the read models' database failed: {type(exc).__name__}: {exc}") from exc


__all__ = ["MongoQueries"]
