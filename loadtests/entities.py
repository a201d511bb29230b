"""Entities for benchmarks: a minimal one (one event per command) and a Lot that a run can
keep from snapshotting."""

from __future__ import annotations

from domain import Context, Entity, client_message, event
from domain.auction.lot import Lot


class Tally(Entity):
    CATEGORY = "Tally"
    MAX_CONNECTIONS_PER_USER = 0
    """No cap: bench_connections holds thousands of sockets per entity with one token."""

    def initialise(self) -> None:
        self.total = 0

    @client_message("add")
    def add(self, ctx: Context, n: int) -> int:
        self._added(n=n)
        return self.total

    @client_message("read")
    def read(self, ctx: Context) -> int:
        return self.total

    @event("Added")
    def _added(self, n: int) -> None:
        self.total += n


class HeavyLot(Lot):
    """The auction's Lot (same messages, same events) whose snapshots follow the node's
    ``snapshot_every`` setting: ``Lot`` snapshots every 1,000 events by its own class
    setting, so a run could not keep a lot with 50,000 events since its last snapshot
    (``bench_failover --heavy`` sets XPLATFORM_SNAPSHOT_EVERY beyond reach)."""

    CATEGORY = "HeavyLot"
    SNAPSHOT_EVERY = None
