"""Server bootstrap: build the log, the services and a ``grpc.aio`` server.

``grpc.aio`` is used (rather than the thread-pool server) so every open read,
catch-up subscription and persistent subscription is just a suspended
coroutine: an idle subscriber costs no OS thread, and all state is touched from
the single event-loop thread, which makes every log operation atomic.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc.aio
from kurrentdbclient.protos.v1 import gossip_pb2_grpc, persistent_pb2_grpc, streams_pb2_grpc

from .access import AccessInterceptor
from .errors import EmulatorError
from .gossip_service import GossipService
from .journal import FileJournal
from .persistent_groups import PersistentSubscriptionRegistry
from .persistent_service import PersistentSubscriptionsService
from .store import EventLog
from .streams_service import StreamsService
from .system_events import write_startup_records

# The client accepts messages up to 17 MiB; match it so large reads are not cut.
_MAX_MESSAGE_BYTES = 17 * 1024 * 1024


class BindError(EmulatorError):
    """The requested host/port could not be bound."""


@dataclass(frozen=True)
class AccessOptions:
    """TLS, users and follower mode (all off by default; see :mod:`.access`)."""

    tls_cert: str | None = None
    tls_key: str | None = None
    users: Mapping[str, str] = field(default_factory=dict)
    follower_of: tuple[str, int] | None = None


@dataclass
class RunningEmulator:
    """A started server and the port it actually listens on."""

    server: grpc.aio.Server
    host: str
    port: int
    log: EventLog


async def start_emulator(
    host: str, port: int, data_file: str | None, access: AccessOptions | None = None
) -> RunningEmulator:
    """Create and start the server; ``port=0`` picks a free port."""
    access = access or AccessOptions()
    log = EventLog(FileJournal(data_file) if data_file else None)
    write_startup_records(log, instance_id=str(uuid.uuid4()))
    registry = PersistentSubscriptionRegistry(log)
    registry.load()
    interceptors = []
    if access.users or access.follower_of:
        interceptors.append(AccessInterceptor(access.users, access.follower_of))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 1000),
        ]
    )
    if access.tls_cert and access.tls_key:
        credentials = grpc.ssl_server_credentials(
            [(Path(access.tls_key).read_bytes(), Path(access.tls_cert).read_bytes())]
        )
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    else:
        bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise BindError(f"cannot bind {host}:{port}")
    streams_pb2_grpc.add_StreamsServicer_to_server(StreamsService(log), server)
    persistent_pb2_grpc.add_PersistentSubscriptionsServicer_to_server(
        PersistentSubscriptionsService(registry), server
    )
    gossip_pb2_grpc.add_GossipServicer_to_server(GossipService(host, bound, access.follower_of), server)
    await server.start()
    return RunningEmulator(server=server, host=host, port=bound, log=log)


async def serve(host: str, port: int, data_file: str | None, access: AccessOptions | None = None) -> None:
    """Run until SIGTERM/SIGINT, announcing readiness on stdout."""
    running = await start_emulator(host, port, data_file, access)
    sys.stdout.write(f"listening on {running.host}:{running.port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await running.server.stop(grace=0.5)
