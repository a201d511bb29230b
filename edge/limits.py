"""Per-user and per-address caps of the public edge: connections, and frames per second.

Why beyond the per-connection limits: a limit per connection multiplies by the number of
connections a client opens. Measured before these caps: one viewer with 8 connections
sending chats had every other viewer of the lot closed (the fan-out of its chats), and
any token could open as many sockets as the machine allows. So each user (the token's
``sub``) and each client address gets:

- a connection cap, checked before the upgrade (HTTP 429 ``too_many_connections``);
- a frame budget (token bucket) shared by all its connections; a frame over the budget
  closes the connection that sent it like the per-connection flood limit (1008).

A cap or rate of 0 turns that check off. Entries exist only while the user or address has
a connection on this edge, so the tables are bounded by the connections themselves.
"""

from __future__ import annotations

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

    def __init__(self, scope: str, max_connections: int, rate_per_s: float, rate_burst: float) -> None:
        self.scope = scope
        self.max_connections = max_connections
        self.rate_per_s = rate_per_s
        self.rate_burst = rate_burst
        self.holders: dict[str, _Holder] = {}
        self.enabled = max_connections > 0 or rate_per_s > 0  # off: keep no entries at all

    def full(self, key: str) -> bool:
        held = self.holders.get(key)
        return self.max_connections > 0 and held is not None and held.connections >= self.max_connections

    def add(self, key: str) -> TokenBucket | None:
        if not self.enabled:
            return None
        held = self.holders.get(key)
        if held is None:
            bucket = TokenBucket(self.rate_per_s, self.rate_burst) if self.rate_per_s > 0 else None
            held = self.holders[key] = _Holder(0, bucket)
        held.connections += 1
        return held.bucket

    def remove(self, key: str) -> None:
        held = self.holders.get(key)
        if held is None:
            return
        held.connections -= 1
        if held.connections <= 0:
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
                 address_rate_per_s: float, address_rate_burst: float) -> None:
        self.users = _Table("user", max_per_user, user_rate_per_s, user_rate_burst)
        self.addresses = _Table("ip", max_per_address, address_rate_per_s, address_rate_burst)

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
