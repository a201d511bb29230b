"""The EventStoreDB journal adapter beyond the port contract: stream layout, expected
positions, group commit in one call, idempotent re-sends, and bad input (unreachable
server, deadline, TLS mismatch, wrong credentials, not-leader) as typed errors with the
client's exception as cause; and the runtime living through a store outage.

The layout and group-commit tests use the session's store (emulator or ``EVENTSTOREDB_URI``).
The error tests always start emulators of their own (TLS with users, a follower): those
situations cannot be staged on somebody's real server.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import msgpack
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing_eventstoredb.recorders import EventStoreDBAggregateRecorder
from kurrentdbclient import KurrentDBClient, exceptions as kdb

from domain import ClientMessage, Connect, EntityRef
from infrastructure.errors import (
    ConcurrencyConflict,
    StoreAuthenticationFailed,
    StoreDeadlineExceeded,
    StoreNotLeader,
    StoreTlsError,
    StoreUnavailable,
)
from infrastructure.persistence import StreamWrite, open_journal
from infrastructure.persistence.eventstoredb_journal import EventStoreDBJournal, event_id
from infrastructure.settings import Settings
from ops.local.emulator import EmulatorProcess, launch_emulator, launch_secure_emulator
from ops.wiring.dev import build_platform
from tests.conftest import eventstoredb_settings
from tests.support.entities import Counter
from tests.support.servers import free_port
from tests.support.tls import CertificateFiles, make_certificates


def events(stream_id: str, first: int, count: int, tag: str = "") -> tuple[StoredEvent, ...]:
    return tuple(StoredEvent(stream_id, v, "tests:Event", f"{tag}{v}".encode()) for v in range(first, first + count))


def journal_at(uri: str, **overrides: Any) -> EventStoreDBJournal:
    settings = Settings(store="eventstoredb", eventstoredb_uri=uri, **overrides)
    journal = open_journal(settings)
    assert isinstance(journal, EventStoreDBJournal)
    return journal


@pytest.fixture
def esdb(eventstoredb_uri: str) -> Iterator[EventStoreDBJournal]:
    journal = open_journal(eventstoredb_settings(eventstoredb_uri))
    assert isinstance(journal, EventStoreDBJournal)
    yield journal
    journal.close()


class RecordingStub:
    """Stands in for the client's Streams stub: records BatchAppend requests; can lose
    the answer of the first call after the server has processed it."""

    def __init__(self, inner: Any, lose_first_answer: bool = False) -> None:
        self.inner = inner
        self.calls: list[list[Any]] = []
        self.lose_first_answer = lose_first_answer

    def BatchAppend(self, requests: Any, **kwargs: Any) -> Any:  # noqa: N802 - gRPC method name
        sent = list(requests)
        self.calls.append(sent)
        call = self.inner.BatchAppend(iter(sent), **kwargs)
        if self.lose_first_answer and len(self.calls) == 1:
            answers = [next(call) for _ in sent]  # the server wrote them...
            call.cancel()
            assert all(a.WhichOneof("result") == "success" for a in answers)
            raise LostAnswer()  # ...but the client never hears back
        return call

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class LostAnswer(grpc.RpcError, grpc.Call):
    """What grpc raises when a call's deadline passes with the answer still on the way."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.DEADLINE_EXCEEDED

    def details(self) -> str:
        return "Deadline Exceeded"

    def initial_metadata(self) -> tuple[()]:
        return ()

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


# ---------------------------------------------------------------------------- layout
def test_layout_is_the_one_eventsourcing_eventstoredb_reads(esdb: EventStoreDBJournal) -> None:
    """One stream per entity named by its ID; versions from 1 are stream positions from
    0; snapshots in ``snapshot-$<id>`` with the aggregate version (a position) in their
    metadata, as eventsourcing-eventstoredb writes and reads them."""
    sid = f"Lot-{uuid.uuid4().hex[:8]}"
    assert esdb.append([StreamWrite(sid, 0, events(sid, 1, 3))]) == [None]
    esdb.save_snapshot(StoredEvent(sid, 3, "tests:Snap", b"three"))
    name = esdb.stream_name(sid)
    recorded = list(esdb.client.read_stream(name))
    assert [(e.stream_position, e.type, e.data, e.content_type) for e in recorded] == [
        (0, "tests:Event", b"1", "application/octet-stream"), (1, "tests:Event", b"2", "application/octet-stream"),
        (2, "tests:Event", b"3", "application/octet-stream")]
    assert [e.id for e in recorded] == [event_id(name, p, "tests:Event", str(p + 1).encode()) for p in range(3)]
    library_events = EventStoreDBAggregateRecorder(esdb.client)
    assert [e.originator_version for e in library_events.select_events(name)] == [0, 1, 2]  # type: ignore[arg-type]
    library_snapshots = EventStoreDBAggregateRecorder(esdb.client, for_snapshotting=True)
    [snapshot] = library_snapshots.select_events(name, desc=True, limit=1)  # type: ignore[arg-type]
    assert (snapshot.originator_version, snapshot.state) == (2, b"three")
    [raw] = esdb.client.read_stream(f"snapshot-${name}")
    assert json.loads(raw.metadata) == {"originator_version": 2}
    assert esdb.latest_snapshot(sid) == StoredEvent(sid, 3, "tests:Snap", b"three")


def test_a_group_commit_is_one_call_and_every_append_states_its_position(esdb: EventStoreDBJournal) -> None:
    """Never "any": each request carries the exact expected position (or no-stream),
    snapshots included; the writes of many streams leave in ONE BatchAppend call, and
    the writes of one stream are merged into one atomic request."""
    old = [f"Counter-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    for sid in old:
        esdb.append([StreamWrite(sid, 0, events(sid, 1, 2))])
    new = [f"Counter-{uuid.uuid4().hex[:8]}" for _ in range(20)]
    stub = RecordingStub(esdb.client.streams._stub)
    esdb.client.streams._stub = stub
    writes = [StreamWrite(sid, 2, events(sid, 3, 1)) for sid in old] + [StreamWrite(sid, 0, events(sid, 1, 1)) for sid in new]
    writes.append(StreamWrite(old[0], 3, events(old[0], 4, 2)))  # a second write of one stream
    assert esdb.append(writes) == [None] * len(writes)
    [call] = stub.calls
    assert len(call) == 25  # one request per stream
    expected = {r.options.stream_identifier.stream_name.decode(): r.options.WhichOneof("expected_stream_position")
                for r in call}
    assert set(expected.values()) == {"stream_position", "no_stream"}
    assert [len(r.proposed_messages) for r in call][0] == 3  # old[0]: 3, 4, 5 together
    esdb.save_snapshot(StoredEvent(old[0], 5, "tests:Snap", b"five"))
    esdb.save_snapshot(StoredEvent(old[0], 6, "tests:Snap", b"six"))
    snapshot_requests = [r for c in stub.calls[1:] for r in c]
    assert [r.options.WhichOneof("expected_stream_position") for r in snapshot_requests] == ["no_stream", "stream_position"]
    assert [e.originator_version for e in esdb.read(old[0])] == [1, 2, 3, 4, 5]


def test_an_append_whose_answer_was_lost_is_resent_and_stored_once(esdb: EventStoreDBJournal) -> None:
    """EventStoreDB docs, Clients / Appending events, "Idempotence": an append re-sent
    with the same event IDs at the same expected position is acknowledged without
    writing the events again. Our IDs derive from the events, so the re-send matches."""
    sid = f"Counter-{uuid.uuid4().hex[:8]}"
    esdb.append([StreamWrite(sid, 0, events(sid, 1, 1))])
    stub = RecordingStub(esdb.client.streams._stub, lose_first_answer=True)
    esdb.client.streams._stub = stub
    assert esdb.append([StreamWrite(sid, 1, events(sid, 2, 2))]) == [None]
    first, second = stub.calls
    ids = lambda call: [m.id.string for r in call for m in r.proposed_messages]  # noqa: E731
    assert ids(first) == ids(second)
    assert [e.state for e in esdb.read(sid)] == [b"1", b"2", b"3"]
    # A genuinely stale write is still a conflict (different events at those positions).
    [error] = esdb.append([StreamWrite(sid, 1, events(sid, 2, 1, tag="zombie"))])
    assert isinstance(error, ConcurrencyConflict)


# ---------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def secure_emulator(certificates: CertificateFiles) -> Iterator[EmulatorProcess]:
    running = launch_secure_emulator(certificates.cert_file, certificates.key_file)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections and never answers: every call hits its deadline."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in held:
        conn.close()


def test_unreachable_server_is_store_unavailable() -> None:
    uri = f"kurrentdb://127.0.0.1:{free_port()}?tls=false"
    with pytest.raises(StoreUnavailable) as opened:
        journal_at(uri, eventstoredb_retries=1)
    assert isinstance(opened.value.__cause__, kdb.ServiceUnavailableError) and opened.value.transient
    journal = EventStoreDBJournal(Settings(store="eventstoredb", eventstoredb_uri=uri).journal_env(),
                                  retries=1, verify=False)
    try:
        [error] = journal.append([StreamWrite("Counter-x", 0, events("Counter-x", 1, 1))])
        assert isinstance(error, StoreUnavailable)
        with pytest.raises(StoreUnavailable):
            journal.read("Counter-x")
    finally:
        journal.close()


def test_deadline_exceeded_is_typed_and_bounded(black_hole: int) -> None:
    started = time.monotonic()
    with pytest.raises(StoreDeadlineExceeded) as raised:
        journal_at(f"kurrentdb://127.0.0.1:{black_hole}?tls=false", eventstoredb_deadline_s=0.3,
                   eventstoredb_retries=1)
    assert isinstance(raised.value.__cause__, kdb.DeadlineExceededError)
    assert time.monotonic() - started < 5  # (1 + retries) x the client's own retry x 0.3 s, plus backoff


def test_tls_expected_but_server_is_plaintext(eventstoredb_uri: str) -> None:
    emulator = launch_emulator()
    try:
        with pytest.raises(StoreTlsError) as raised:
            journal_at(f"kurrentdb://admin:changeit@127.0.0.1:{emulator.port}?tls=true")
        assert isinstance(raised.value.__cause__, kdb.SSLError)
    finally:
        emulator.stop()


def test_plaintext_client_against_a_tls_server(secure_emulator: EmulatorProcess) -> None:
    with pytest.raises(StoreTlsError, match="speaks TLS but the URI says tls=false"):
        journal_at(f"kurrentdb://127.0.0.1:{secure_emulator.port}?tls=false", eventstoredb_retries=0)


def test_server_certificate_from_another_ca(secure_emulator: EmulatorProcess, tmp_path: Path) -> None:
    stranger = make_certificates(tmp_path, "some other CA")
    with pytest.raises(StoreTlsError):
        journal_at(f"kurrentdb://127.0.0.1:{secure_emulator.port}", eventstoredb_username="admin",
                   eventstoredb_password="changeit", eventstoredb_tls_ca_file=str(stranger.ca_file))


def test_credentials_over_tls(secure_emulator: EmulatorProcess, certificates: CertificateFiles) -> None:
    uri = f"kurrentdb://127.0.0.1:{secure_emulator.port}"
    with pytest.raises(StoreAuthenticationFailed) as raised:
        journal_at(uri, eventstoredb_username="admin", eventstoredb_password="wrong",
                   eventstoredb_tls_ca_file=str(certificates.ca_file))
    assert isinstance(raised.value.__cause__, kdb.UnauthenticatedError) and not raised.value.transient
    journal = journal_at(uri, eventstoredb_username="admin", eventstoredb_password="changeit",
                         eventstoredb_tls_ca_file=str(certificates.ca_file))
    try:
        assert journal.append([StreamWrite("Counter-tls", 0, events("Counter-tls", 1, 2))]) == [None]
        assert len(journal.read("Counter-tls")) == 2
    finally:
        journal.close()


def test_not_leader_redirect_is_followed_and_reported_when_it_cannot_be() -> None:
    """EventStoreDB docs, Clients / Connecting, "Cluster / node preference": a follower
    answers a leader-only call with the leader's address ("Leader info available");
    writes are refused there before anything is stored, so re-sending to the leader is safe."""
    leader = launch_emulator()
    follower = launch_emulator("--follower-of", f"{leader.host}:{leader.port}")
    try:
        journal = journal_at(f"kurrentdb://127.0.0.1:{follower.port}?tls=false")
        try:
            assert journal.append([StreamWrite("Counter-r", 0, events("Counter-r", 1, 1))]) == [None]
        finally:
            journal.close()
        with KurrentDBClient(leader.uri) as on_leader:
            assert on_leader.get_current_version("Counter-r") == 0  # it landed on the leader
        leader.stop()
        with pytest.raises(StoreNotLeader) as raised:
            journal_at(f"kurrentdb://127.0.0.1:{follower.port}?tls=false", eventstoredb_retries=1)
        assert raised.value.leader == f"{leader.host}:{leader.port}"
        assert isinstance(raised.value.__cause__, kdb.NodeIsNotLeaderError)
    finally:
        follower.stop()
        leader.stop()


# ---------------------------------------------------------------------------- runtime
def test_runtime_answers_retryably_during_an_outage_and_recovers(tmp_path: Path) -> None:
    """The store goes away under a running state node: messages get a retryable error
    within the deadline (nothing hangs, nothing is acknowledged), other entities keep
    being served once it is back, and nothing acknowledged was lost."""
    port, data = free_port(), str(tmp_path / "esdb.jsonl")
    emulator = launch_emulator("--data-file", data, port=port)
    settings = Settings(store="eventstoredb", eventstoredb_uri=emulator.uri, eventstoredb_deadline_s=1.0,
                        eventstoredb_retries=1, eventstoredb_stream_prefix=f"t{uuid.uuid4().hex[:8]}-")
    a, b = EntityRef("Counter", "a"), EntityRef("Counter", "b")

    async def ask(p: Any, ref: EntityRef, n: int, mid: str) -> Any:
        return await p.transport.ask(ref, ClientMessage(mid, time.time(), "c1", msgpack.packb({"type": "add", "n": n})))

    async def scenario() -> None:
        nonlocal emulator
        async with build_platform(settings, entities=[Counter]) as p:
            for ref in (a, b):
                assert (await p.transport.ask(ref, Connect(f"c-{ref}", time.time(), "c1", {"sub": "u"}))).ok
            assert (await ask(p, a, 5, "a1")).payload == 5
            emulator.stop()
            started = time.monotonic()
            during = await ask(p, a, 1, "a2")
            assert not during.ok and during.retryable and time.monotonic() - started < 4.5
            emulator = launch_emulator("--data-file", data, port=port)
            for _ in range(50):  # reconnects; entities reload from the store
                reply = await ask(p, b, 2, "b1")
                if reply.ok:
                    break
                await asyncio.sleep(0.1)
            assert reply.ok and reply.payload == 2
            again = await ask(p, a, 1, "a3")
            assert again.ok and again.payload == 6  # a1 survived; a2 was never applied
            await p.node.drain()
            assert [e.originator_version for e in p.journal.read(a.stream_id)][-1] == p.node.resident(a).version

    try:
        asyncio.run(scenario())
    finally:
        emulator.stop()
