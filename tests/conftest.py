"""Shared fixtures: real servers (session-scoped) and journals for each store."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from infrastructure.persistence import EventJournal, open_journal
from infrastructure.settings import Settings
from ops.local.emulator import EmulatorProcess, launch_emulator
from tests.support.servers import PostgresServer

STORES = ["sqlite", "postgres", "memory", "eventstoredb"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (fails, with its log, if it cannot start)."""
    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def eventstoredb_uri() -> Iterator[str]:
    """Where the EventStoreDB tests go: ``EVENTSTOREDB_URI`` when set (a real server or
    cluster; ``XPLATFORM_EVENTSTOREDB_*`` supply its CA file and credentials), else the
    gRPC emulator started as a subprocess for the session. An emulator that cannot start
    fails the tests with its log; it is never a skip."""
    uri = os.environ.get("EVENTSTOREDB_URI")
    if uri:
        yield uri
        return
    running: EmulatorProcess = launch_emulator()
    try:
        yield running.uri
    finally:
        died = running.process.poll()
        log = running.log()
        running.stop()
        if died is not None:
            print(f"\nEventStoreDB emulator exited during the session with {died}; its log:\n{log}")


def postgres_settings(server: PostgresServer, **overrides: object) -> Settings:
    return Settings(store="postgres", postgres_port=server.port, postgres_user=server.user,
                    postgres_dbname=server.dbname, postgres_password="unused-trust-auth", **overrides)  # type: ignore[arg-type]


def sqlite_settings(tmp_path: object, **overrides: object) -> Settings:
    return Settings(store="sqlite", data_dir=str(tmp_path), **overrides)  # type: ignore[arg-type]


def eventstoredb_settings(uri: str, **overrides: object) -> Settings:
    """Settings for the EventStoreDB store at ``uri``, in a namespace of its own (a fresh
    stream prefix), so tests with fixed entity IDs never meet each other's streams, on the
    session's emulator or on a real server that keeps data between runs."""
    environ = {k: v for k, v in os.environ.items() if k.startswith("XPLATFORM_EVENTSTOREDB_")}
    overrides = {"eventstoredb_stream_prefix": f"t{uuid.uuid4().hex[:12]}-", **overrides}
    return Settings.from_env(environ, store="eventstoredb", eventstoredb_uri=uri, **overrides)


@pytest.fixture(params=STORES)
def store_settings(request: pytest.FixtureRequest, tmp_path: object) -> Settings:
    """Settings for each store adapter the contract must hold on."""
    if request.param == "sqlite":
        return sqlite_settings(tmp_path)
    if request.param == "postgres":
        return postgres_settings(request.getfixturevalue("postgres_server"))
    if request.param == "eventstoredb":
        return eventstoredb_settings(request.getfixturevalue("eventstoredb_uri"))
    return Settings(store="memory")


@pytest.fixture
def journal(store_settings: Settings) -> Iterator[EventJournal]:
    j = open_journal(store_settings)
    yield j
    j.close()


@pytest.fixture(params=["memory", "eventstoredb"])
def sandbox_journal(request: pytest.FixtureRequest) -> Iterator[EventJournal | None]:
    """The journal a Sandbox runs on: None (its in-memory default) or EventStoreDB."""
    if request.param == "memory":
        yield None
        return
    j = open_journal(eventstoredb_settings(request.getfixturevalue("eventstoredb_uri")))
    yield j
    j.close()


@pytest.fixture
def stream_id() -> str:
    """A fresh stream per test (the PostgreSQL database is shared by the session)."""
    return f"Test-{uuid.uuid4()}"
