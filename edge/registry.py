"""The edge's local connection registry: entity → its connections on this edge, with claims.

Why a registry of its own: outbound effects name targets by lookup (one connection, all
connections of the entity, a claims predicate); the edge resolves them here, without asking
the entity. A connection ID is unique per entity: a second registration of the same
``(entity, connection ID)`` never silently replaces the first (see :meth:`Registry.add`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from domain.refs import EntityRef


class Receiver(Protocol):
    """A client connection as fan-out sees it (a websocket, or a device's pull buffer)."""

    ref: EntityRef
    cid: str
    claims: Mapping[str, Any]

    def push(self, frame: bytes, payload: Any) -> None:
        """Send one PUSH now (immediate path). ``frame`` is the encoded PUSH, shared by all
        receivers; ``payload`` is the same message undecoded, for receivers that are not websockets."""

    def coalesce(self, key: str, seq: int, frame: bytes, payload: Any) -> bool:
        """Keep ``frame`` as the newest for ``key`` if ``seq`` is newer; True when a pending one was replaced."""

    def flush(self) -> None:
        """A coalescing tick: send what ``coalesce`` kept."""

    def terminate(self, reason: str, reconnect: bool) -> None:
        """The entity ends the connection: tell the client, then close."""


class Registry:
    """Connections by entity, then connection ID. See the module docstring."""

    def __init__(self) -> None:
        self._by_entity: dict[EntityRef, dict[str, Receiver]] = {}
        self._count = 0
        self._watchers: list[tuple[Callable[[EntityRef], None], Callable[[EntityRef], None]]] = []

    def watch(self, first: Callable[[EntityRef], None], last: Callable[[EntityRef], None]) -> None:
        """Call ``first(ref)`` when an entity gets its first connection here and ``last(ref)``
        when its last one goes: a clustered edge tells the owning node which entities it
        holds connections for (outbound then comes once per edge)."""
        self._watchers.append((first, last))

    def add(self, conn: Receiver) -> Receiver | None:
        """Register ``conn``; if its connection ID is taken, return the holder and change nothing."""
        conns = self._by_entity.get(conn.ref)
        if conns is None:
            conns = self._by_entity[conn.ref] = {}
            for first, _last in self._watchers:
                first(conn.ref)
        held = conns.get(conn.cid)
        if held is not None and held is not conn:
            return held
        if held is None:
            conns[conn.cid] = conn
            self._count += 1
        return None

    def replace(self, old: Receiver, new: Receiver) -> None:
        """Give ``old``'s slot to ``new`` (same user reconnecting while the old socket lingers)."""
        conns = self._by_entity[old.ref]
        assert conns.get(old.cid) is old and new.cid == old.cid and new.ref == old.ref
        conns[new.cid] = new

    def remove(self, conn: Receiver) -> bool:
        """Unregister ``conn`` if (and only if) it holds its slot."""
        conns = self._by_entity.get(conn.ref)
        if conns is None or conns.get(conn.cid) is not conn:
            return False
        del conns[conn.cid]
        if not conns:
            del self._by_entity[conn.ref]
            for _first, last in self._watchers:
                last(conn.ref)
        self._count -= 1
        return True

    def get(self, ref: EntityRef, cid: str) -> Receiver | None:
        conns = self._by_entity.get(ref)
        return None if conns is None else conns.get(cid)

    def of(self, ref: EntityRef) -> dict[str, Receiver] | None:
        """The live map of ``ref``'s connections (do not mutate), or None."""
        return self._by_entity.get(ref)

    def __iter__(self) -> Iterator[Receiver]:
        for conns in list(self._by_entity.values()):
            yield from list(conns.values())

    def __len__(self) -> int:
        return self._count
