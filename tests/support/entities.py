"""Small entities for runtime tests (the sample domain is tested through the sandbox)."""

from __future__ import annotations

import time

from domain import Context, Entity, Rejected, client_message, entity_message, event, timer


class Counter(Entity):
    CATEGORY = "Counter"
    GRACE_PERIOD = 0.05
    SNAPSHOT_EVERY = 5

    def initialise(self) -> None:
        self.total = 0
        self.left: list[str] = []

    @client_message("add")
    def add(self, ctx: Context, n: int) -> int:
        if not isinstance(n, int) or n <= 0:
            raise Rejected("n must be a positive integer")
        self._added(n=n)
        ctx.broadcast({"total": self.total}, coalesce_key="total")
        return self.total

    @client_message("slow_add")
    def slow_add(self, ctx: Context, n: int, seconds: float) -> int:
        """Holds the node's event loop for ``seconds``: a slow handler, for the latency tests."""
        time.sleep(seconds)
        self._added(n=n)
        return self.total

    @client_message("peek")
    def peek(self, ctx: Context) -> int:
        return self.total

    @client_message("add_then_fail")
    def add_then_fail(self, ctx: Context, n: int) -> None:
        self._added(n=n)
        raise RuntimeError("bug after the event")

    @client_message("boom")
    def boom(self, ctx: Context) -> None:
        raise RuntimeError("bug before any event")

    @client_message("unencodable")
    def unencodable(self, ctx: Context) -> None:
        self._noted(value=object())

    @client_message("remind")
    def remind(self, ctx: Context, delay: float) -> None:
        ctx.start_timer("reminder", delay, note="hello")

    @timer("reminder")
    def reminder(self, ctx: Context, note: str) -> None:
        self._added(n=100)

    @entity_message("add")
    def add_from_entity(self, ctx: Context, n: int) -> None:
        self._added(n=n)

    @client_message("forward")
    def forward(self, ctx: Context, to: str, n: int) -> None:
        from domain import EntityRef

        ctx.tell(EntityRef("Counter", to), "add", n=n)

    def on_leave(self, ctx: Context, connection_id: str, claims: object) -> None:
        self._left_(connection_id=connection_id)

    @event("Added")
    def _added(self, n: int) -> None:
        self.total += n

    @event("Noted")
    def _noted(self, value: object) -> None:
        self.note = value

    @event("Left")
    def _left_(self, connection_id: str) -> None:
        self.left.append(connection_id)
