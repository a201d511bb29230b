"""Fixtures of the integration tests: the process fault tests (test_cluster_processes, test_cluster_faults) and a ZooKeeper per module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.cluster import Cluster
from tests.support.servers import PostgresServer, ZooKeeperServer


@pytest.fixture
def cluster(postgres_server: PostgresServer) -> Iterator[Cluster]:
    """A ZooKeeper of its own (tests stop and restart it) and a cluster name of its own on the
    session's PostgreSQL; every process started through it is stopped by its PID afterwards."""
    zk = ZooKeeperServer.start()
    c = Cluster(zk, postgres_server, name=f"t{uuid.uuid4().hex[:6]}")
    try:
        yield c
    finally:
        c.stop_all()
        zk.destroy()


@pytest.fixture(scope="module")
def zookeeper() -> Iterator[ZooKeeperServer]:
    """A ZooKeeper of the test module's own (tests that share it use their own cluster names)."""
    server = ZooKeeperServer.start()
    yield server
    server.destroy()
