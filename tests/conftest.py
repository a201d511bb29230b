"""Shared fixtures: real servers (session-scoped) and journals for each store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from infrastructure.persistence import EventJournal, RecorderJournal
from infrastructure.settings import Settings
from tests.support.servers import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (fails, with its log, if it cannot start)."""
    server = PostgresServer.start()
    yield server
    server.stop()


def postgres_settings(server: PostgresServer, **overrides: object) -> Settings:
    return Settings(store="postgres", postgres_port=server.port, postgres_user=server.user,
                    postgres_dbname=server.dbname, postgres_password="unused-trust-auth", **overrides)  # type: ignore[arg-type]


def sqlite_settings(tmp_path: object, **overrides: object) -> Settings:
    return Settings(store="sqlite", data_dir=str(tmp_path), **overrides)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def store_settings(request: pytest.FixtureRequest, tmp_path: object) -> Settings:
    """Settings for each store adapter the contract must hold on."""
    if request.param == "sqlite":
        return sqlite_settings(tmp_path)
    if request.param == "postgres":
        return postgres_settings(request.getfixturevalue("postgres_server"))
    return Settings(store="memory")


@pytest.fixture
def journal(store_settings: Settings) -> Iterator[EventJournal]:
    j = RecorderJournal(store_settings.journal_env())
    yield j
    j.close()


@pytest.fixture
def stream_id() -> str:
    """A fresh stream per test (the PostgreSQL database is shared by the session)."""
    return f"Test-{uuid.uuid4()}"
