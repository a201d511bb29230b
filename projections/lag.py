"""How far behind its events a read model is: the figures of ``xplatform projection status``
and the lag gauges a projector process samples.

- **events**: events of the projection's categories stored after the position the read
  model reached, counted by reading them (positions are not contiguous, so they cannot be
  subtracted), up to a cap (then "at least that many");
- **seconds**: how long ago the oldest of them was recorded (0 when there are none): the
  age of the oldest change readers do not see yet;
- **parked**: events parked in the read model (or held behind a parked one).

With persistent subscriptions the position is the highest any consumer reached; events
below it still in flight on another consumer are not counted (the group's ``in_flight``,
which ``status`` shows beside it, covers them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from infrastructure.errors import PersistenceError
from infrastructure.persistence.subscriptions import EventFilter, EventStream, StreamEvent
from projections.errors import EventDecodeError, ProjectionError, SourceFailed
from projections.events import decode_event
from projections.metrics import ProjectionMetrics
from projections.mongo import MongoReadModel

log = logging.getLogger(__name__)

COUNT_CAP = 10_000
"""Events counted at most per measurement: one read of up to 10k events (a few MB) is cheap
for a status command; beyond it the exact figure does not change what an operator does."""


@dataclass(frozen=True)
class Lag:
    """One read model's figures (module docstring)."""

    projection: str
    collection: str  # the live collection
    position: int | None
    head: int | None
    events: int
    capped: bool  # events is a lower bound
    seconds: float
    parked: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(model: MongoReadModel, stream: EventStream, *, cap: int = COUNT_CAP) -> Lag:
    """The figures of ``model`` against the store ``stream`` reads."""
    projection = model.projection
    position = model.position()
    try:
        head = stream.head_position()
        pending = stream.read_all(after=position, limit=cap, filter=EventFilter(categories=projection.CATEGORIES))
    except PersistenceError as exc:
        raise SourceFailed(f"{projection.NAME}: reading the store after {position} failed: {exc}") from exc
    seconds = 0.0
    if pending:
        recorded = recorded_time(pending[0])
        if recorded is not None:
            seconds = max(0.0, time.time() - recorded.timestamp())
    return Lag(projection=projection.NAME, collection=model.name, position=position, head=head, events=len(pending),
               capped=len(pending) >= cap, seconds=seconds, parked=model.parked_count())


def recorded_time(event: StreamEvent) -> datetime | None:
    """When ``event`` was recorded (the store's time, else the event's own timestamp)."""
    if event.recorded_at is not None:
        return event.recorded_at
    try:
        envelope = decode_event(event, platform_events=True)
    except EventDecodeError:
        return None
    return None if envelope is None else envelope.recorded_at


def sample(models: Sequence[MongoReadModel], stream: EventStream, metrics: ProjectionMetrics, interval_s: float,
           stopped: threading.Event, *, cap: int = 1000) -> None:
    """Until ``stopped``: every ``interval_s``, each read model's lag, parked count and
    position into ``metrics``' gauges (a projector process's, or ``xplatform run``'s). A
    sample that fails is logged and skipped: a missed sample is not worth stopping a
    projector for. ``models`` should be this thread's own (their collection handles are
    re-read with ``refresh``)."""
    while not stopped.is_set():
        for model in models:
            try:
                model.refresh()
                publish(metrics, measure(model, stream, cap=cap))
            except ProjectionError as exc:
                log.warning("lag of %s not measured: %s", model.projection.NAME, exc)
            except Exception as exc:  # noqa: BLE001 - see the docstring
                log.warning("lag of %s not measured: %s: %s", model.projection.NAME, type(exc).__name__, exc)
        stopped.wait(interval_s)


def publish(metrics: ProjectionMetrics, lag: Lag) -> None:
    """Set the lag gauges of ``lag``'s projection."""
    metrics.lag_events.labels(lag.projection).set(lag.events)
    metrics.lag_seconds.labels(lag.projection).set(lag.seconds)
    metrics.parked.labels(lag.projection).set(lag.parked)
    if lag.position is not None:
        metrics.position.labels(lag.projection).set(lag.position)


__all__ = ["COUNT_CAP", "Lag", "measure", "publish", "recorded_time", "sample"]
