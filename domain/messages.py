"""Inbound messages: what an entity can receive (protocol v1).

Every message carries a sender-generated ``message_id`` (idempotency: an entity applies each
ID once) and a ``timestamp`` in epoch seconds, set by the edge for client messages and by
the runtime's clock otherwise, so entities apply time rules without reading a clock.

Sender → receiver:
- :class:`Connect` — edge → entity, when a client opens a connection addressed to it. Carries
  the verified JWT claims. The entity accepts (initial state goes back) or terminates.
- :class:`Terminated` — edge → entity, when the client's socket is gone for any reason.
- :class:`ClientMessage` — edge → entity; ``payload`` is the client's bytes, undecoded: the
  entity decodes it (see :meth:`domain.entity.Entity.decode_payload`).
- :class:`EntityMessage` — entity → entity (``ctx.tell``), with a ``type`` and ``data`` map.
- :class:`TimerFired` — runtime → entity, when a timer the entity started is due.
- :class:`RemoteResult` — runtime → state proxy, the outcome of a remote call its handler
  asked for (:class:`domain.effects.RemoteCall`); never from a client or another entity.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from domain.refs import EntityRef


@dataclass(frozen=True, slots=True)
class Inbound:
    """Common fields of every inbound message."""

    message_id: str
    timestamp: float


@dataclass(frozen=True, slots=True)
class Connect(Inbound):
    connection_id: str
    claims: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Terminated(Inbound):
    """``session``: the message ID of the Connect that opened the socket that died. A
    connection resumed since (same connection ID, another socket, maybe another edge) has
    a newer session, and a late Terminated of the old socket must not drop it."""

    connection_id: str
    reason: str = "closed"
    session: str = ""


@dataclass(frozen=True, slots=True)
class ClientMessage(Inbound):
    connection_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class EntityMessage(Inbound):
    sender: EntityRef
    type: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TimerFired(Inbound):
    name: str
    key: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RemoteResult(Inbound):
    """The outcome of a state proxy's :class:`~domain.effects.RemoteCall` ``op``.

    ``ok``: the primary answered; ``state`` with the primary's ``version`` (an integer that
    only grows), ``etag`` (opaque) and ``at`` (its timestamp, epoch seconds) when it has
    them. Otherwise ``error`` is the code (``primary_timeout``, ``primary_unavailable``,
    ``primary_refused``, ``circuit_open``, ``no_connector``) and ``reason`` says why."""

    op: str
    attempt: int
    ok: bool
    state: Any = None
    version: int | None = None
    etag: str | None = None
    at: float | None = None
    error: str = ""
    reason: str = ""


def remote_result_id(op: str, attempt: int) -> str:
    """The message ID of the result of attempt ``attempt`` of remote call ``op`` (its own
    namespace, like timers': one result per attempt is applied)."""
    return f"remote:{op}:{attempt}"


def timer_message_id(key: str, due: float) -> str:
    """The message ID of timer ``key`` firing at ``due``: the same in the runtime and the
    sandbox, and the same after a restart, so a firing is applied once (timer IDs are their
    own namespace: no client's message ID can collide with one)."""
    return f"timer:{key}:{due!r}"
