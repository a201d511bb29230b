"""A projector process (``xplatform projector``): the projections ``XPLATFORM_PROJECTIONS``
names, each fed into its MongoDB read model (``XPLATFORM_MONGO_URI``, ``_DATABASE``).

- On EventStoreDB: a persistent subscription group per projection
  (:mod:`projections.persistent`: Pinned, ack after commit, nack → retry → park); start as
  many projector processes as you like, they share each group.
- On SQLite and PostgreSQL: the catch-up projector (:mod:`projections.catchup`), which keeps
  its position in the read model. Run one process per read model there: two would do the
  same work twice (harmlessly: the bookkeeping makes the second a duplicate).
- Memory (tests, the one-process dev platform): the catch-up projector on the journal the
  caller passes.

Each projection runs in a thread of its own (pymongo and the subscription clients block),
so one slow read model does not hold up the others. Lag gauges are sampled every
``XPLATFORM_PROJECTOR_LAG_INTERVAL_S``. SIGTERM/SIGINT: each runner finishes and acks the
batch in hand, then the process exits.

:func:`run_projections` runs them in an existing event loop until a stop event is set (the
one-process platform starts its read models with it); :func:`serve_projector` is the command.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import generate_latest
from pymongo import MongoClient

from infrastructure.persistence import EventJournal, open_event_stream, open_subscriptions
from infrastructure.persistence.subscriptions import EventStream, PersistentSubscriptions
from infrastructure.settings import Settings
from ops.wiring.metrics import MetricsListener
from projections.catchup import CatchUpProjector
from projections.lag import sample
from projections.metrics import ProjectionMetrics
from projections.mongo import MongoReadModel, connect
from projections.persistent import PersistentProjector, ensure_group, group_settings
from projections.projection import Projection
from projections.topics import resolve_projections

log = logging.getLogger(__name__)


class Runner(Protocol):
    def run(self) -> None: ...

    def stop(self) -> None: ...


def load_projections(settings: Settings) -> list[Projection]:
    """The projections ``XPLATFORM_PROJECTIONS`` names (ProjectionTopicError, one line, if wrong)."""
    return resolve_projections(settings.projections)


def mongo_client(settings: Settings) -> MongoClient[dict[str, Any]]:
    return connect(settings.read_model_uri())


@dataclass
class Projector:
    """The runners of one process, their sources and read models (what :func:`run_projections` builds)."""

    settings: Settings
    projections: list[Projection]
    client: MongoClient[dict[str, Any]]
    metrics: ProjectionMetrics
    runners: list[Runner] = field(default_factory=list)
    models: list[MongoReadModel] = field(default_factory=list)
    sources: list[EventStream | PersistentSubscriptions] = field(default_factory=list)

    def exposition(self) -> bytes:
        return generate_latest(self.metrics.registry)

    def close(self) -> None:
        for source in self.sources:
            try:
                source.close()
            except Exception:  # noqa: BLE001 - closing anyway
                log.debug("closing a source failed", exc_info=True)


def build_projector(settings: Settings, projections: Sequence[Projection], *, client: MongoClient[dict[str, Any]],
                    metrics: ProjectionMetrics | None = None, journal: EventJournal | None = None) -> Projector:
    """One runner per projection on the configured store (module docstring)."""
    projector = Projector(settings, list(projections), client, metrics or ProjectionMetrics())
    database = client[settings.mongo_database]
    for projection in projections:
        model = MongoReadModel(projection, database, projector.metrics)
        projector.models.append(model)
        runner: Runner
        if settings.store == "eventstoredb":
            subscriptions = open_subscriptions(settings)
            projector.sources.append(subscriptions)
            namespace = settings.eventstoredb_stream_prefix
            ensure_group(subscriptions, projection, group_settings(settings.projector_message_timeout_s,
                                                                   settings.projector_max_retry_count), namespace)
            runner = PersistentProjector(projection, subscriptions, model, batch_size=settings.projector_batch_size,
                                         max_in_flight=settings.projector_max_in_flight, namespace=namespace,
                                         cache_documents=settings.projector_cache_documents)
        else:
            stream = open_event_stream(settings, journal)
            projector.sources.append(stream)
            runner = CatchUpProjector(projection, stream, model, batch_size=settings.projector_batch_size,
                                      max_in_flight=settings.projector_max_in_flight,
                                      cache_documents=settings.projector_cache_documents)
        projector.runners.append(runner)
    return projector


async def run_projections(settings: Settings, projections: Sequence[Projection], stop_event: asyncio.Event, *,
                          client: MongoClient[dict[str, Any]] | None = None, metrics: ProjectionMetrics | None = None,
                          journal: EventJournal | None = None) -> None:
    """Run ``projections`` into their read models until ``stop_event`` is set, in the running
    event loop (each runner in a thread); raises the first runner's ProjectionError (the
    others are stopped first). ``client``: a MongoDB client to use (default: one from
    ``settings``, closed at the end); ``metrics``: where to count (e.g. the caller's
    ``/metrics``); ``journal``: the memory store's journal, when that is the store."""
    own_client = client is None
    client = client or mongo_client(settings)
    projector = await asyncio.to_thread(build_projector, settings, projections, client=client, metrics=metrics,
                                        journal=journal)
    sampling = threading.Event()
    tasks = [asyncio.create_task(asyncio.to_thread(runner.run), name=f"projection-{p.NAME}")
             for runner, p in zip(projector.runners, projections, strict=True)]
    sampler = asyncio.create_task(asyncio.to_thread(_sample_lag, projector, journal, sampling))
    stopper = asyncio.create_task(stop_event.wait())
    try:
        await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for runner in projector.runners:
            runner.stop()
        sampling.set()
        stopper.cancel()
        results = await asyncio.gather(*tasks, sampler, return_exceptions=True)
        projector.close()
        if own_client:
            client.close()
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _sample_lag(projector: Projector, journal: EventJournal | None, stopped: threading.Event) -> None:
    """Every lag interval: each read model's lag, parked count and position into its gauges."""
    stream = open_event_stream(projector.settings, journal)
    try:
        sample([MongoReadModel(m.projection, m.database) for m in projector.models], stream, projector.metrics,
               projector.settings.projector_lag_interval_s, stopped)
    finally:
        stream.close()


async def serve_projector(settings: Settings) -> None:
    """``xplatform projector``: run until SIGTERM/SIGINT (each runner finishes its batch,
    acks it and leaves), serving ``/metrics`` on the internal listener."""
    projections = load_projections(settings)  # first: a wrong topic is named before anything starts
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    metrics = ProjectionMetrics()
    listener = MetricsListener(lambda: generate_latest(metrics.registry), settings.metrics_host, settings.metrics_port)
    url = await listener.start()
    mode = "persistent subscriptions" if settings.store == "eventstoredb" else "catch-up subscriptions"
    print(f"projector ready: {', '.join(p.NAME for p in projections)} from {settings.store} ({mode}) into "
          f"database {settings.mongo_database!r} (metrics: {url})", flush=True)
    try:
        await run_projections(settings, projections, stop, metrics=metrics)
    finally:
        await listener.stop()
    print("projector stopped", flush=True)


__all__ = ["Projector", "build_projector", "load_projections", "run_projections", "serve_projector"]
