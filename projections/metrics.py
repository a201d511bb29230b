"""Prometheus metrics of projections (``xplatform_projection_*``).

One ``CollectorRegistry`` per owner (no module-level singletons). Labels are bounded: the
projection's ``NAME`` (the projections a process runs) and the outcome (``engine.OUTCOMES``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from projections.engine import BatchPlan


class ProjectionMetrics:
    """``xplatform_projection_events_total{projection,outcome}``: events considered, by what
    became of them (applied, ignored, duplicate, parked, skipped)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter("xplatform_projection_events", "Events considered by a projection, by outcome.",
                              ["projection", "outcome"], registry=self.registry)

    def record(self, projection: str, plan: BatchPlan) -> None:
        for outcome, count in plan.outcomes.items():
            self.events.labels(projection, outcome).inc(count)

    def count(self, projection: str, outcome: str) -> float:
        """The counter's value (for tests and status)."""
        value = self.registry.get_sample_value("xplatform_projection_events_total",
                                               {"projection": projection, "outcome": outcome})
        return value or 0.0
