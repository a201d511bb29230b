"""An in-process EventStoreDB/KurrentDB gRPC emulator for tests.

It implements the subset of the server's gRPC API that ``kurrentdbclient``
(and ``eventsourcing-eventstoredb`` on top of it) uses: streams (append, batch
append, read, catch-up subscriptions, delete, tombstone), persistent
subscriptions and gossip.  Run it with ``python -m
tests.support.eventstoredb_emulator --port 0`` and connect with
``kurrentdb://127.0.0.1:<port>?tls=false``.

Modules: :mod:`.store` (the log), :mod:`.journal` (``--data-file``),
:mod:`.filters`, :mod:`.convert` (protobuf mapping), :mod:`.streams_service`,
:mod:`.persistent_groups` + :mod:`.persistent_service`, :mod:`.gossip_service`,
:mod:`.system_events` (what a node writes to its log as it starts),
:mod:`.server` (bootstrap) and :mod:`.errors` (``EmulatorError`` root).
"""

from .errors import EmulatorError

__all__ = ["EmulatorError"]
