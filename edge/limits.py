"""Per-user and per-address caps of the public edge: connections, and frames per second.

Why beyond the per-connection limits: a limit per connection multiplies by the number of
connections a client opens. Measured before these caps: one viewer with 8 connections
sending chats had every other viewer of the lot closed (the fan-out of its chats), and
any token could open as many sockets as the machine allows. So each user (the token's
``sub``) and each client address gets:

- a connection cap, checked before the upgrade (HTTP 429 ``too_many_connections``);
- a frame budget (token bucket) shared by all its connections; a frame over the budget
  closes the connection that sent it like the per-connection flood limit (1008).

A cap or rate of 0 turns that check off. A frame budget outlives the user's (or address's)
last connection for its refill period (``burst / rate``): closing every connection and
reconnecting must not buy a fresh budget. After that period it would be full anyway, so the
entry is forgotten: the tables hold the keys with a connection on this edge plus those that
had one within the last refill period (swept on every admit and release, oldest first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.errors import LimitError
from edge.ratelimit import TokenBucket


@dataclass
class _Holder:
    """Connections and the shared frame budget of one user or one address."""

    connections: int = 0
    bucket: TokenBucket | None = field(default=None, repr=False)


class _Table:
    """Holders by key for one scope (user or address)."""

    def __init__(self, scope: str, max_connections: int, rate_per_s: float, rate_burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.scope = scope
        self.max_connections = max_connections
        self.rate_per_s = rate_per_s
        self.rate_burst = rate_burst
        self.clock = clock
        self.holders: dict[str, _Holder] = {}
        self.enabled = max_connections > 0 or rate_per_s > 0  # off: keep no entries at all
        self.refill_s = rate_burst / rate_per_s if rate_per_s > 0 else 0.0
        """How long an empty budget takes to be full again: how long it outlives the last connection."""
        self._idle: OrderedDict[str, float] = OrderedDict()
        """Keys without connections whose budget is kept, with when they went idle (oldest first)."""

    def full(self, key: str) -> bool:
        held = self.holders.get(key)
        return self.max_connections > 0 and held is not None and held.connections >= self.max_connections

    def add(self, key: str) -> TokenBucket | None:
        if not self.enabled:
            return None
        self._forget_idle()
        self._idle.pop(key, None)
        held = self.holders.get(key)
        if held is None:
            bucket = TokenBucket(self.rate_per_s, self.rate_burst, self.clock) if self.rate_per_s > 0 else None
            held = self.holders[key] = _Holder(0, bucket)
        held.connections += 1
        return held.bucket

    def remove(self, key: str) -> None:
        held = self.holders.get(key)
        if held is None:
            return
        held.connections -= 1
        if held.connections <= 0:
            if held.bucket is None:
                del self.holders[key]
            else:  # the budget stays until it would be full again (module docstring)
                self._idle[key] = self.clock()
        self._forget_idle()

    def _forget_idle(self) -> None:
        """Drop the keys idle for a whole refill period (their budget is full by now)."""
        now = self.clock()
        while self._idle:
            key, since = next(iter(self._idle.items()))
            if now - since < self.refill_s:
                break
            del self._idle[key]
            del self.holders[key]


@dataclass
class Lease:
    """One admitted connection: its shared buckets (``(scope, bucket)``), released once."""

    user: str
    address: str
    buckets: tuple[tuple[str, TokenBucket], ...]
    released: bool = False


class ClientLimits:
    """The per-user and per-address tables of one edge. See the module docstring."""

    def __init__(self, *, max_per_user: int, max_per_address: int, user_rate_per_s: float, user_rate_burst: float,
                 address_rate_per_s: float, address_rate_burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.users = _Table("user", max_per_user, user_rate_per_s, user_rate_burst, clock)
        self.addresses = _Table("ip", max_per_address, address_rate_per_s, address_rate_burst, clock)

    def admit(self, user: str, address: str) -> Lease:
        """Count a new connection of ``user`` from ``address``; raise :class:`LimitError` (and
        count nothing) when either is at its cap."""
        for table, key in ((self.addresses, address), (self.users, user)):
            if table.full(key):
                raise LimitError(table.scope, f"at most {table.max_connections} connections per {table.scope}")
        buckets = []
        for table, key in ((self.users, user), (self.addresses, address)):
            bucket = table.add(key)
            if bucket is not None:
                buckets.append((table.scope, bucket))
        return Lease(user, address, tuple(buckets))

    def release(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        self.users.remove(lease.user)
        self.addresses.remove(lease.address)
