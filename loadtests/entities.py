"""A minimal entity for persistence and runtime benchmarks: one event per command."""

from __future__ import annotations

from domain import Context, Entity, client_message, event


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
