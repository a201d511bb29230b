"""Journal adapter for EventStoreDB / KurrentDB (``eventsourcing-eventstoredb`` + ``kurrentdbclient``).

Layout (the one ``eventsourcing-eventstoredb`` uses, so its recorders can read our data):

- one stream per entity, named by its stream ID (``<Category>-<id>``), optionally behind a
  namespace prefix (``Settings.eventstoredb_stream_prefix``);
- event type = the event's topic, data = its msgpack state, content type
  ``application/octet-stream``;
- snapshots in ``snapshot-$<stream name>``, the aggregate version in the event's metadata
  as ``{"originator_version": N}``.

Versions: the port counts from 1 (first event = version 1, ``expected_version`` = events
already there), EventStoreDB counts stream positions from 0. Inside this module version v
is position v - 1; an expected version e is the expected position e - 1, or "no stream"
for e = 0. Snapshot metadata holds the position too (what an eventsourcing aggregate with
``INITIAL_VERSION = 0`` would call its version), translated back on read. Every append
states its expected position — never "any", snapshots included.

Group commit: one :meth:`EventStoreDBJournal.append` call becomes ONE ``BatchAppend`` RPC
carrying one request per stream (the writes of a stream merged into one atomic request).
The server answers each request separately, so a conflicting stream fails alone, and no
stream waits for another's round trip (measured against the emulator: 100 one-event
streams per RPC ≈ 4x the throughput of 100 separate appends from a thread pool).

Retries and idempotency: reads are retried (up to ``retries`` extra attempts) on
"unavailable" and "deadline exceeded". Appends whose outcome is unknown (deadline
exceeded, connection dropped, no answer) are re-sent too, and that is safe because every
event's ID is a UUIDv5 of (stream name, position, topic, SHA-256 of the data): the same
event always gets the same ID, in this process or any other, so EventStoreDB treats a
re-sent append whose events are already at those positions as a duplicate and answers
success without writing (its idempotent-append rule). Should the server answer a re-sent
append with "wrong expected version" instead, the stream is read back: if the events at
those positions carry our IDs the write is ours and counts as done, otherwise it is a
:class:`~infrastructure.errors.ConcurrencyConflict`. A second writer that computed
byte-identical events at the same versions gets "success" too — the stream then holds
exactly what it would have written. Not-leader answers are followed (reconnect to the
leader the node names, then re-send: a follower refuses before writing anything).
Wrong credentials, access denied, TLS failures and stream-deleted are not retried.

Errors reach the caller as the typed :class:`~infrastructure.errors.StoreError`
subclasses with the client's exception as ``__cause__``.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

import grpc
from eventsourcing.persistence import InfrastructureFactory, StoredEvent
from kurrentdbclient import KurrentDBClient, NewEvent, RecordedEvent, StreamState, exceptions as kdb
from kurrentdbclient.common import handle_rpc_error
from kurrentdbclient.connection_spec import grpc_target
from kurrentdbclient.protos.v1 import shared_pb2, streams_pb2

from infrastructure.errors import (
    ConcurrencyConflict,
    PersistenceError,
    StoreAccessDenied,
    StoreAuthenticationFailed,
    StoreDeadlineExceeded,
    StoreError,
    StoreNotLeader,
    StoreTlsError,
    StoreUnavailable,
)
from infrastructure.persistence.event_ids import EVENT_ID_NAMESPACE, event_id  # noqa: F401 - re-exported
from infrastructure.persistence.port import EventJournal, StreamWrite

log = logging.getLogger(__name__)

T = TypeVar("T")

SNAPSHOT_STREAM_PREFIX = "snapshot-$"  # eventsourcing_eventstoredb.recorders.EventStoreDBAggregateRecorder
CONTENT_TYPE: Final = "application/octet-stream"
READ_PAGE = 1_000  # events per read call: each page gets a full deadline
_SNAPSHOT_RACE_ATTEMPTS = 5


def translate(exc: BaseException, what: str) -> PersistenceError:
    """A kurrentdbclient exception as our typed error (``exc`` becomes its cause)."""
    detail = f"{what}: {type(exc).__name__}: {exc}".rstrip(": ")
    error: PersistenceError
    if isinstance(exc, kdb.SSLError):
        error = StoreTlsError(f"{detail} (TLS could not be agreed: check tls= in the URI and the CA file)")
    elif isinstance(exc, kdb.NodeIsNotLeaderError):
        leader = grpc_target(exc.host, exc.port) if exc.host and exc.port else None
        error = StoreNotLeader(f"{detail} (leader: {leader or 'unknown'})", leader)
    elif isinstance(exc, kdb.DeadlineExceededError):
        error = StoreDeadlineExceeded(detail)
    elif isinstance(exc, kdb.UnauthenticatedError):
        error = StoreAuthenticationFailed(f"{detail} (check the user name and password)")
    elif isinstance(exc, kdb.AccessDeniedError):
        error = StoreAccessDenied(detail)
    elif isinstance(exc, kdb.WrongCurrentVersionError):
        error = ConcurrencyConflict(detail)
    elif isinstance(exc, kdb.ServiceUnavailableError | kdb.DiscoveryFailedError | kdb.CancelledError
                    | kdb.ExceptionThrownByHandlerError | kdb.AbortedByServerError):
        error = StoreUnavailable(detail)
    elif isinstance(exc, ValueError) and "closed channel" in str(exc).lower().replace("channel closed", "closed channel"):
        error = StoreUnavailable(detail)  # the client's channel was closed under the call (reconnect in progress)
    elif isinstance(exc, kdb.StreamIsDeletedError | kdb.StreamTombstonedError):
        error = StoreError(f"{detail} (the stream was deleted)")
    else:
        error = StoreError(detail)
    error.__cause__ = exc
    return error


def _retryable(error: PersistenceError) -> bool:
    return isinstance(error, StoreUnavailable | StoreDeadlineExceeded | StoreNotLeader)


@dataclass
class _Append:
    """One stream's part of a group commit: one atomic request."""

    stream_id: str
    stream_name: str
    expected_version: int
    events: list[NewEvent]
    indexes: list[int]
    outcome: PersistenceError | None = field(default=None)
    attempts: int = 0

    @property
    def expected_position(self) -> int | StreamState:
        return self.expected_version - 1 if self.expected_version > 0 else StreamState.NO_STREAM

    def request(self, correlation_id: uuid.UUID, deadline_s: float) -> streams_pb2.BatchAppendReq:
        options = streams_pb2.BatchAppendReq.Options(
            stream_identifier=shared_pb2.StreamIdentifier(stream_name=self.stream_name.encode()))
        seconds = int(deadline_s)
        options.deadline.seconds, options.deadline.nanos = seconds, int((deadline_s - seconds) * 1e9)
        if self.expected_version > 0:
            options.stream_position = self.expected_version - 1
        else:
            options.no_stream.SetInParent()
        return streams_pb2.BatchAppendReq(
            correlation_id=shared_pb2.UUID(string=str(correlation_id)),
            options=options,
            proposed_messages=[
                streams_pb2.BatchAppendReq.ProposedMessage(
                    id=shared_pb2.UUID(string=str(e.id)),
                    metadata={"type": e.type, "content-type": e.content_type},
                    custom_metadata=e.metadata, data=e.data)
                for e in self.events
            ],
            is_final=True,  # the whole request is one atomic write
        )


class EventStoreDBJournal(EventJournal):
    """EventJournal on EventStoreDB/KurrentDB. See the module docstring.

    ``env`` is the eventsourcing environment (``Settings.journal_env()``:
    ``PERSISTENCE_MODULE=eventsourcing_eventstoredb``, ``EVENTSTOREDB_URI``, optionally
    ``EVENTSTOREDB_ROOT_CERTIFICATES``); the library's factory builds the client.
    ``verify`` makes one read at construction so a wrong URI, credentials or TLS setting
    fails at start rather than on the first message.
    """

    def __init__(self, env: Mapping[str, str], *, deadline_s: float = 5.0, retries: int = 2,
                 stream_prefix: str = "", retry_backoff_s: float = 0.1, verify: bool = True) -> None:
        self.deadline_s = deadline_s
        self.retries = retries
        self.stream_prefix = stream_prefix
        self.retry_backoff_s = retry_backoff_s
        self.client = client = client_from_env(env)
        spec = client.connection_spec
        self._call_metadata = (("connection-name", spec.options.connection_name), ("requires-leader", "true"))
        self._credentials = client.construct_call_credentials(spec.username, spec.password)
        if verify:
            try:
                self._retrying(lambda: self._current_position(self.stream_prefix + "xplatform-connection-check"),
                               "connection check")
            except StoreUnavailable as exc:
                client.close()
                # A plaintext client is just hung up on by a TLS server ("Socket closed"): ask
                # the server for a TLS handshake to tell that apart from a server that is down.
                speaking_tls = [t for t in spec.targets if not spec.options.tls and _speaks_tls(t, deadline_s)]
                if speaking_tls:
                    raise StoreTlsError(f"{exc} (the server at {speaking_tls[0]} speaks TLS but the URI says "
                                        "tls=false)") from exc.__cause__
                raise
            except PersistenceError:
                client.close()
                raise

    # ------------------------------------------------------------------ names
    def stream_name(self, stream_id: str) -> str:
        return self.stream_prefix + stream_id

    def snapshot_stream_name(self, stream_id: str) -> str:
        return SNAPSHOT_STREAM_PREFIX + self.stream_name(stream_id)

    # ------------------------------------------------------------------ append
    def append(self, writes: Sequence[StreamWrite]) -> list[PersistenceError | None]:
        for write in writes:
            write.check()
        results: list[PersistenceError | None] = [None] * len(writes)
        appends = self._merge(writes, results)
        self._send([a for a in appends if a.events])
        for a in appends:
            for i in a.indexes:
                results[i] = a.outcome if results[i] is None else results[i]
        return results

    def _merge(self, writes: Sequence[StreamWrite], results: list[PersistenceError | None]) -> list[_Append]:
        """One request per stream; a stream's writes must follow each other, else none can stand."""
        by_stream: dict[str, _Append] = {}
        broken: set[str] = set()
        for index, write in enumerate(writes):
            current = by_stream.get(write.stream_id)
            if current is None:
                name = self.stream_name(write.stream_id)
                current = by_stream[write.stream_id] = _Append(write.stream_id, name, write.expected_version, [], [])
            elif write.expected_version != current.expected_version + len(current.events):
                broken.add(write.stream_id)
            current.indexes.append(index)
            current.events.extend(
                NewEvent(type=e.topic, data=e.state, content_type=CONTENT_TYPE,
                         id=event_id(current.stream_name, e.originator_version - 1, e.topic, e.state))
                for e in write.events)
        for stream_id in broken:
            a = by_stream.pop(stream_id)
            for i in a.indexes:
                results[i] = ConcurrencyConflict(f"writes for {stream_id} in one batch do not follow each other")
        return list(by_stream.values())

    def _send(self, appends: list[_Append]) -> None:
        """Send the appends in one BatchAppend call; re-send those with an unknown outcome."""
        pending = appends
        redirect: StoreNotLeader | None = None
        for attempt in range(self.retries + 1):
            if not pending:
                return
            answered, failure = self._batch_append(pending)
            if isinstance(failure, StoreNotLeader):
                redirect = failure
            again: list[_Append] = []
            for a in pending:
                a.attempts += 1
                response = answered.get(id(a))
                if response is None:
                    a.outcome = failure or StoreUnavailable(f"no answer for the append to {a.stream_name}")
                else:
                    a.outcome = self._outcome(a, response)
                if a.outcome is not None and _retryable(a.outcome):
                    again.append(a)
            if again and attempt < self.retries:
                self._recover(failure if failure is not None else again[0].outcome)
            pending = again
        for a in pending:
            if a.outcome is not None:
                a.outcome = _after_redirect(a.outcome, redirect)

    def _batch_append(self, appends: list[_Append]) -> tuple[dict[int, streams_pb2.BatchAppendResp], PersistenceError | None]:
        """One BatchAppend RPC: a request per stream, answers matched by correlation ID.

        Uses the stub of the client's current connection (``client.streams._stub``): the
        client's own ``append_to_stream`` sends one stream per RPC. kurrentdbclient is
        pinned (==1.3.5); the contract tests fail loudly if that attribute moves."""
        by_correlation: dict[str, _Append] = {}
        requests = []
        for a in appends:
            correlation = uuid.uuid4()
            by_correlation[str(correlation)] = a
            requests.append(a.request(correlation, self.deadline_s))
        answered: dict[int, streams_pb2.BatchAppendResp] = {}
        try:
            call = self.client.streams._stub.BatchAppend(  # noqa: SLF001 - see docstring
                iter(requests), timeout=self.deadline_s, metadata=self._call_metadata, credentials=self._credentials)
        except grpc.RpcError as exc:
            return answered, translate(handle_rpc_error(exc), "append")
        except ValueError as exc:  # "Cannot invoke RPC on closed channel!"
            return answered, StoreUnavailable(f"append: {exc}")
        try:
            for response in call:
                target = by_correlation.get(response.correlation_id.string)
                if target is not None:
                    answered[id(target)] = response
                if len(answered) == len(requests):
                    break
        except grpc.RpcError as exc:
            return answered, translate(handle_rpc_error(exc), "append")
        finally:
            call.cancel()  # every answer is in (or the call failed): release the stream
        return answered, None

    def _outcome(self, a: _Append, response: streams_pb2.BatchAppendResp) -> PersistenceError | None:
        if response.WhichOneof("result") == "success":
            return None
        details = response.error.details
        what = f"append to {a.stream_name} after version {a.expected_version}"
        if details.Is(shared_pb2.WrongExpectedVersion.DESCRIPTOR):
            if a.attempts > 1 and self._already_written(a):
                return None  # our earlier attempt was stored (see module docstring)
            wev = shared_pb2.WrongExpectedVersion()
            details.Unpack(wev)
            actual = (wev.current_stream_revision + 1
                      if wev.WhichOneof("current_stream_revision_option") == "current_stream_revision" else 0)
            return ConcurrencyConflict(f"{what}: the stream is at version {actual}")
        if details.Is(shared_pb2.Timeout.DESCRIPTOR):
            return StoreDeadlineExceeded(f"{what}: the server timed out (outcome unknown)")
        if details.Is(shared_pb2.AccessDenied.DESCRIPTOR):
            return StoreAccessDenied(f"{what}: access denied")
        if details.Is(shared_pb2.StreamDeleted.DESCRIPTOR):
            return StoreError(f"{what}: the stream was deleted")
        if details.Is(shared_pb2.MaximumAppendSizeExceeded.DESCRIPTOR):
            return StoreError(f"{what}: larger than the server's maximum append size")
        return StoreError(f"{what}: {response.error.message or 'refused'}")

    def _already_written(self, a: _Append) -> bool:
        first = a.expected_version  # position of our first event
        try:
            found = self._retrying(lambda: self._read_page(a.stream_name, first, len(a.events)), "read-back")
        except PersistenceError:
            return False
        return [e.id for e in found] == [e.id for e in a.events]

    def _recover(self, error: PersistenceError | None) -> None:
        """Before a re-send: follow a leader redirect, or reconnect after a lost connection."""
        time.sleep(self.retry_backoff_s)
        connection_id = self.client.connection_id
        try:
            if isinstance(error, StoreNotLeader) and error.leader:
                self.client.reconnect(error.leader, connection_id=connection_id)
            elif isinstance(error, StoreUnavailable | StoreNotLeader):
                self.client.reconnect(connection_id=connection_id)
        except Exception as exc:  # still down: the next attempt reports it
            log.info("EventStoreDB reconnect failed: %s: %s", type(exc).__name__, exc)

    # ------------------------------------------------------------------ read
    def read(self, stream_id: str, after_version: int = 0) -> list[StoredEvent]:
        name = self.stream_name(stream_id)
        out: list[StoredEvent] = []
        position = after_version  # the position of version after_version + 1
        while True:
            page = self._retrying(lambda: self._read_page(name, position, READ_PAGE), f"read of {name}")
            out.extend(StoredEvent(stream_id, e.stream_position + 1, e.type, e.data) for e in page)
            if len(page) < READ_PAGE:
                return out
            position = page[-1].stream_position + 1

    def _read_page(self, stream_name: str, position: int, limit: int, *, backwards: bool = False) -> list[RecordedEvent]:
        try:
            return list(self.client.read_stream(stream_name, stream_position=None if backwards else position,
                                                backwards=backwards, limit=limit, timeout=self.deadline_s))
        except kdb.NotFoundError:
            return []

    def _current_position(self, stream_name: str) -> int | StreamState:
        last = self._read_page(stream_name, 0, 1, backwards=True)
        return last[0].stream_position if last else StreamState.NO_STREAM

    def _retrying(self, call: Callable[[], T], what: str) -> T:
        """Run a read-only ``call``, retrying transient failures."""
        error: PersistenceError | None = None
        redirect: StoreNotLeader | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._recover(error)
            try:
                return call()
            except PersistenceError:
                raise
            except (kdb.KurrentDBClientError, grpc.RpcError, ValueError) as exc:
                cause = handle_rpc_error(exc) if isinstance(exc, grpc.RpcError) else exc
                error = translate(cause, what)
                if isinstance(error, StoreNotLeader):
                    redirect = error
                if not _retryable(error):
                    raise error from cause
        assert error is not None
        raise _after_redirect(error, redirect)

    # ------------------------------------------------------------------ snapshots
    def latest_snapshot(self, stream_id: str) -> StoredEvent | None:
        name = self.snapshot_stream_name(stream_id)
        last = self._retrying(lambda: self._read_page(name, 0, 1, backwards=True), f"snapshot read of {name}")
        if not last:
            return None
        return StoredEvent(stream_id, _snapshot_version(last[0]), last[0].type, last[0].data)

    def save_snapshot(self, snapshot: StoredEvent) -> None:
        """Append to the snapshot stream after its current last event (exact expected
        position); a concurrent snapshot writer makes us re-read and try again."""
        name = self.snapshot_stream_name(str(snapshot.originator_id))
        for _ in range(_SNAPSHOT_RACE_ATTEMPTS):
            last = self._retrying(lambda: self._read_page(name, 0, 1, backwards=True), f"snapshot read of {name}")
            if last and _snapshot_version(last[0]) >= snapshot.originator_version:
                return  # this one or a newer one is there
            position = last[0].stream_position + 1 if last else 0
            event = NewEvent(
                type=snapshot.topic, data=snapshot.state, content_type=CONTENT_TYPE,
                metadata=json.dumps({"originator_version": snapshot.originator_version - 1}).encode(),
                id=event_id(name, position, snapshot.topic, snapshot.state))
            write = _Append(str(snapshot.originator_id), name, position, [event], [])
            self._send([write])
            if not isinstance(write.outcome, ConcurrencyConflict):
                if write.outcome is not None:
                    raise write.outcome
                return
        raise ConcurrencyConflict(f"snapshot of {snapshot.originator_id}: {name} kept changing under us")

    def close(self) -> None:
        self.client.close()


def _after_redirect(error: PersistenceError, redirect: StoreNotLeader | None) -> PersistenceError:
    """The error to report: a leader that could not be reached after a not-leader answer
    is still a not-leader problem (with the leader's address), not a generic outage."""
    if redirect is None or not isinstance(error, StoreUnavailable):
        return error
    combined = StoreNotLeader(f"{redirect}; the leader could not be reached: {error}", redirect.leader)
    combined.__cause__ = redirect.__cause__
    return combined


def client_from_env(env: Mapping[str, str]) -> KurrentDBClient:
    """The client ``eventsourcing-eventstoredb``'s factory builds from an eventsourcing
    environment (``EVENTSTOREDB_URI``, ``EVENTSTOREDB_ROOT_CERTIFICATES``)."""
    try:
        factory = InfrastructureFactory.construct(dict(env))
    except Exception as exc:  # DiscoveryFailedError for an unreachable cluster, ValueError for a bad URI
        raise translate(exc, "cannot open EventStoreDB") from exc
    client = getattr(factory, "client", None)
    if not isinstance(client, KurrentDBClient):
        raise PersistenceError(f"PERSISTENCE_MODULE={env.get('PERSISTENCE_MODULE')!r} is not eventsourcing_eventstoredb")
    return client


def _speaks_tls(target: str, timeout: float) -> bool:
    """Whether ``host:port`` completes a TLS handshake (certificate not checked: this only
    diagnoses a tls=false URI pointed at a TLS server)."""
    host, _, port = target.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host):
            return True
    except (OSError, ValueError):
        return False


def _snapshot_version(recorded: RecordedEvent) -> int:
    """Our version of a stored snapshot (metadata holds the stream position, see module docstring)."""
    return int(json.loads(recorded.metadata.decode())["originator_version"]) + 1

