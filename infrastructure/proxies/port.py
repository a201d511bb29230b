"""The connector port: how a state proxy reaches its primary.

Write another connector (a message queue, a database, a serial line) by implementing
:class:`Connector`:

- ``pull(ref)`` returns the primary's current state for the proxy ``ref`` as a
  :class:`RemoteState` (with the primary's ``version``, an integer that only grows, and/or
  ``at``, its timestamp, when it has them: the proxy orders states by them).
- ``command(ref, command, key)`` asks the primary to apply ``command`` once per ``key``
  (the idempotency key the proxy derived from the message: a primary that honours keys
  ignores a second call with the same key). It returns nothing: the runtime pulls after it.
- failures raise :class:`~infrastructure.errors.ConnectorError` subclasses:
  ``PrimaryUnreachable`` (network, server error: the caller may retry later),
  ``PrimaryRefusedCall`` (the primary said no: never retried), ``CircuitOpenError``.
  Anything else counts as ``primary_unavailable``.
- never block the event loop (use asyncio I/O, or ``run_in_executor`` for a blocking
  library); the runtime bounds every call with the proxy's timeout and cancels it then;
  retry only idempotent calls; ``close()`` releases what the connector holds.

Give it to the runtime in ``ops/wiring/proxies.py`` (one instance per category, shared by
every proxy of it). The contract suite in ``tests/integration/test_state_proxy.py`` shows
the behaviour the runtime relies on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from domain.refs import EntityRef


@dataclass(frozen=True, slots=True)
class RemoteState:
    """The primary's state of one proxy, as a connector read it."""

    state: Any
    version: int | None = None
    etag: str | None = None
    at: float | None = None


class Connector(Protocol):
    """How to reach one category's primary. See the module docstring."""

    async def pull(self, ref: EntityRef) -> RemoteState: ...

    async def command(self, ref: EntityRef, command: Mapping[str, Any], key: str) -> None: ...

    async def close(self) -> None: ...
