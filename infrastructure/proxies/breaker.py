"""A circuit breaker per primary: stop calling a primary that keeps failing.

closed (calls go through) → ``failures_to_open`` consecutive failures → open (calls are
refused at once with :class:`~infrastructure.errors.CircuitOpenError` for ``open_s``) →
half-open (one trial call; the others are refused) → closed on its success, open again on
its failure. Only failures of the primary count (unreachable, server errors, timeouts); a
refusal (4xx) is an answer, and resets the count. Each change goes to ``on_change`` (the
``xplatform_proxy_circuit_state`` gauge). Event-loop thread only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from infrastructure.errors import CircuitOpenError


class CircuitBreaker:
    """See the module docstring."""

    def __init__(self, failures_to_open: int, open_s: float, on_change: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures_to_open = failures_to_open
        self.open_s = open_s
        self.on_change = on_change
        self.clock = clock
        self.state = "closed"
        self.failures = 0
        self._open_until = 0.0
        self._trial = False

    def before(self) -> None:
        """Raise CircuitOpenError unless a call may go to the primary now."""
        if self.state == "open":
            if self.clock() < self._open_until:
                raise CircuitOpenError(f"the primary failed {self.failures} times in a row; "
                                       f"calls resume after {self.open_s:g} s")
            self._set("half_open")
        if self.state == "half_open":
            if self._trial:
                raise CircuitOpenError("the primary is being tried again; wait for the trial call")
            self._trial = True

    def succeeded(self) -> None:
        self.failures = 0
        self._trial = False
        if self.state != "closed":
            self._set("closed")

    def failed(self) -> None:
        self.failures += 1
        self._trial = False
        if self.state == "half_open" or (self.state == "closed" and self.failures >= self.failures_to_open):
            self._open_until = self.clock() + self.open_s
            self._set("open")

    def _set(self, state: str) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change(state)
