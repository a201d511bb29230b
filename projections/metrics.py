"""Prometheus metrics of projections (``xplatform_projection_*``).

One ``CollectorRegistry`` per owner (no module-level singletons). Labels are bounded: the
projection's ``NAME`` (the projections a process runs) and the outcome (``engine.OUTCOMES``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from projections.engine import BatchPlan

BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ProjectionMetrics:
    """``xplatform_projection_events_total{projection,outcome}``: events considered, by what
    became of them (applied, ignored, duplicate, parked, skipped);
    ``xplatform_projection_batch_duration_seconds{projection}``: one batch from plan to its
    position written (a runner's round trips to the read model's database);
    ``xplatform_projection_position{projection}``: the store position the read model reached;
    ``xplatform_projection_lag_events{projection}``: events of its categories stored after that
    position (counted up to :data:`projections.lag.COUNT_CAP`);
    ``xplatform_projection_lag_seconds{projection}``: how long ago the oldest of them was
    recorded (0 when caught up); ``xplatform_projection_parked_events{projection}``: events
    parked (or held behind a parked one) awaiting ``replay-parked``. The last three are
    sampled by the projector process (``XPLATFORM_PROJECTOR_LAG_INTERVAL_S``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter("xplatform_projection_events", "Events considered by a projection, by outcome.",
                              ["projection", "outcome"], registry=self.registry)
        self.batch_duration = Histogram("xplatform_projection_batch_duration_seconds",
                                        "Time to apply one batch to a read model (plan and writes).", ["projection"],
                                        buckets=BATCH_BUCKETS, registry=self.registry)
        self.position = Gauge("xplatform_projection_position", "Store position a read model has reached.",
                              ["projection"], registry=self.registry)
        self.lag_events = Gauge("xplatform_projection_lag_events", "Events of a projection's categories stored "
                                "after the position its read model reached (capped).", ["projection"],
                                registry=self.registry)
        self.lag_seconds = Gauge("xplatform_projection_lag_seconds", "Age of the oldest event a read model has not "
                                 "applied yet (0 when caught up).", ["projection"], registry=self.registry)
        self.parked = Gauge("xplatform_projection_parked_events", "Events a read model parked (or holds behind a "
                            "parked one), awaiting replay-parked.", ["projection"], registry=self.registry)

    def record(self, projection: str, plan: BatchPlan, seconds: float | None = None) -> None:
        """Count a written batch's outcomes (and its duration and position, when a runner wrote it)."""
        for outcome, count in plan.outcomes.items():
            self.events.labels(projection, outcome).inc(count)
        if seconds is not None:
            self.batch_duration.labels(projection).observe(seconds)
        if plan.position is not None:
            self.position.labels(projection).set(plan.position)

    def count(self, projection: str, outcome: str) -> float:
        """The counter's value (for tests and status)."""
        value = self.registry.get_sample_value("xplatform_projection_events_total",
                                               {"projection": projection, "outcome": outcome})
        return value or 0.0
