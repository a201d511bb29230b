"""Fixtures for testing the EventStoreDB emulator with the real ``kurrentdbclient``.

One emulator subprocess serves the whole session (tests isolate themselves by
using fresh stream and group names); each test gets its own client.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kurrentdbclient import KurrentDBClient

from ops.local.emulator import EmulatorProcess, launch_emulator


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorProcess]:
    """The shared emulator; startup failure raises with its stdout/stderr."""
    running = launch_emulator()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(emulator: EmulatorProcess) -> Iterator[KurrentDBClient]:
    """A real client connected over gRPC to the emulator."""
    kdb = KurrentDBClient(emulator.uri)
    try:
        yield kdb
    finally:
        kdb.close()


@pytest.fixture
def stream_name() -> str:
    """A stream name no other test uses."""
    return f"emulator-test-{uuid.uuid4()}"
