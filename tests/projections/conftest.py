"""A real MongoDB-wire server (secantusdb, a separate process) for the read model tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.support.servers import MongoWireServer


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[MongoWireServer]:
    """secantusdb for the session; one that cannot start fails the tests with its log (never a skip)."""
    server = MongoWireServer.start()
    yield server
    died = server.process.poll()
    log = server.log()
    server.stop()
    if died is not None:
        print(f"\nsecantusdb exited during the session with {died}; its log:\n{log}")


@pytest.fixture(scope="session")
def mongo_client(mongo_server: MongoWireServer) -> Iterator[MongoClient]:  # type: ignore[type-arg]
    client: MongoClient = MongoClient(mongo_server.uri, serverSelectionTimeoutMS=10_000)  # type: ignore[type-arg]
    yield client
    client.close()


@pytest.fixture
def mongo_db(mongo_client: MongoClient) -> Iterator[Database]:  # type: ignore[type-arg]
    """A fresh database per test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield mongo_client[name]
    mongo_client.drop_database(name)
