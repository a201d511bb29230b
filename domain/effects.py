"""Outbound effects: what handling a message produces besides events.

Effects are held by the runtime until the events of the same message are durable, then
released. A target lookup tells the edges which local connections receive a client message:

- :class:`ToConnection` — one connection by ID.
- :class:`ToAllConnections` — every connection of the emitting entity.
- :class:`ToClaims` — connections of the emitting entity whose claims match every item of
  ``match`` (a value, or a list/tuple of accepted values), e.g. ``{"role": "auctioneer"}``.

Messages to another entity are :class:`Tell` effects (category + ID), delivered by the
transport at most once; their message IDs derive from the causing message's ID, so a
retried cause produces the same IDs and the receiver deduplicates them.

A state proxy (:mod:`domain.proxy`) asks for remote I/O with a :class:`RemoteCall`: the
runtime runs it beside the entity (never inside the handler) and hands the outcome back as
a :class:`~domain.messages.RemoteResult` message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.refs import EntityRef


@dataclass(frozen=True, slots=True)
class ToConnection:
    connection_id: str


@dataclass(frozen=True, slots=True)
class ToAllConnections:
    pass


@dataclass(frozen=True, slots=True)
class ToClaims:
    match: Mapping[str, Any]

    def matches(self, claims: Mapping[str, Any]) -> bool:
        """True when every item of ``match`` holds in ``claims`` (lists mean any-of)."""
        for name, wanted in self.match.items():
            have = claims.get(name)
            accepted = wanted if isinstance(wanted, (list, tuple, set, frozenset)) else (wanted,)
            if isinstance(have, (list, tuple)):
                if not any(h in accepted for h in have):
                    return False
            elif have not in accepted:
                return False
        return True


Target = ToConnection | ToAllConnections | ToClaims


@dataclass(frozen=True, slots=True)
class Send:
    """A message for client connections of the emitting entity.

    ``coalesce_key``: when set, edges may keep only the newest message per (connection,
    key) within a tick (latest-wins state updates); when None the message is never merged.
    """

    target: Target
    payload: Any
    coalesce_key: str | None = None


@dataclass(frozen=True, slots=True)
class Tell:
    """A message for another entity."""

    to: EntityRef
    type: str
    data: Mapping[str, Any]
    message_id: str


@dataclass(frozen=True, slots=True)
class Terminate:
    """Ask the edge to close a client connection; ``reconnect`` tells the client whether
    to come back (same connection ID) or go away."""

    connection_id: str
    reason: str
    reconnect: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to the sender of a message: ``ok`` with ``payload``, or an error."""

    message_id: str
    ok: bool
    payload: Any = None
    code: str = ""
    reason: str = ""
    retryable: bool = False

    def to_record(self) -> list[Any]:
        """Compact form stored with the message's last event (idempotency window)."""
        return [self.ok, self.payload, self.code, self.reason]

    @classmethod
    def from_record(cls, message_id: str, record: list[Any]) -> Reply:
        ok, payload, code, reason = record
        return cls(message_id, ok, payload, code, reason)


@dataclass(frozen=True, slots=True)
class RemoteCall:
    """Call the primary of the emitting state proxy (through its category's connector),
    beside the entity; the outcome comes back to it as a ``RemoteResult`` naming ``op``.

    ``kind``: ``"pull"`` (read the primary's state) or ``"command"`` (send ``command`` with
    the idempotency key ``key``, then pull, as one job: nothing else of this proxy reaches
    the primary in between). ``timeout_s`` bounds the whole job. ``attempt`` counts
    re-issues of the same call (same ``op`` and ``key``) after a lost result."""

    op: str
    kind: str
    key: str
    timeout_s: float
    command: Mapping[str, Any] | None = None
    attempt: int = 1


Effect = Send | Tell | Terminate | RemoteCall
