"""The read port: how an edge answers queries of read models, and the position token
that makes a read see the caller's own writes.

The edge's query API (``edge/reads.py``: ``GET /read/<projection>[/<key>]``) depends on this
port only, as it depends on the transport port for commands; the MongoDB implementation
lives with the read models (:mod:`projections.query`), and the composition floor
(``ops/wiring``) hands one to the edge. So the edge never imports a database driver.

**Position tokens.** Every command reply an entity gives carries the version its stream
had when the reply left (everything up to it durable): ``<stream>@<version>``, e.g.
``Lot-vase@7`` (:class:`Position`). Read models track, per source stream, the last version
applied (``projections.engine``), so a read presenting the token waits until the model has
applied that stream up to that version: the caller reads its own writes. A read model that
does not read the stream's category is not affected by it: the token holds at once there.

**Consistency per read** (:class:`Consistency`): eventual (the default: answer from what the
model holds now), bounded staleness (``max_lag_ms``: every event recorded more than that
long ago is applied), read-your-writes (``after``: positions). Either waits at most
``wait_s``, then :class:`~infrastructure.errors.ReadModelBehind`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from domain.errors import DomainError
from domain.refs import EntityRef
from infrastructure.errors import BadReadQuery

Document = dict[str, Any]
MAX_TOKEN_LENGTH = 300
"""A stream ID is at most a category (64) + ``-`` + an entity ID (200); the version fits in the rest."""


@dataclass(frozen=True, slots=True)
class Position:
    """How far one stream was durable: the read-your-writes token of a command reply."""

    stream: str
    version: int

    def token(self) -> str:
        """``<stream>@<version>``, the form clients carry (PROTOCOL.md "Position tokens")."""
        return f"{self.stream}@{self.version}"

    @property
    def category(self) -> str:
        return self.stream.partition("-")[0]

    @classmethod
    def parse(cls, token: str) -> Position:
        """The position of a token. Raises BadReadQuery unless it is ``<stream>@<version>``
        with a valid entity stream and a version of 1 or more."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise BadReadQuery(f"a position token is a string of at most {MAX_TOKEN_LENGTH} characters")
        stream, at, version = token.rpartition("@")
        if not at or not version.isdigit() or not version.isascii() or int(version) < 1:
            raise BadReadQuery(f"position token {token[:80]!r} is not <stream>@<version>")
        try:
            EntityRef.from_stream_id(stream)
        except DomainError:
            raise BadReadQuery(f"position token {token[:80]!r} does not name an entity stream") from None
        return cls(stream, int(version))


@dataclass(frozen=True, slots=True)
class Consistency:
    """What a read must reflect before it is answered (see the module docstring)."""

    after: tuple[Position, ...] = ()
    max_lag_ms: float | None = None
    wait_s: float = 5.0

    @property
    def eventual(self) -> bool:
        return not self.after and self.max_lag_ms is None


EVENTUAL = Consistency()


class ReadPort(Protocol):
    """Edge-side view of the read models. Errors: the ``ReadModelError`` family of
    :mod:`infrastructure.errors` (unknown read model, not allowed, not found, behind,
    unavailable, bad query)."""

    def projections(self) -> Collection[str]:
        """The names of the read models served."""
        ...

    async def get(self, projection: str, key: str, claims: Mapping[str, Any],
                  consistency: Consistency = EVENTUAL) -> Document:
        """The document ``key`` of ``projection``, if the caller (its verified token's
        ``claims``) may read it, once ``consistency`` holds."""
        ...

    async def find(self, projection: str, filters: Mapping[str, tuple[Any, ...]], limit: int,
                   claims: Mapping[str, Any], consistency: Consistency = EVENTUAL) -> tuple[list[Document], bool]:
        """Up to ``limit`` documents (by key) whose field ``f`` equals one of
        ``filters[f]`` for every ``f``, among those the caller may read; and whether
        more matched."""
        ...


__all__ = ["EVENTUAL", "Consistency", "Document", "Position", "ReadPort"]
