"""Test fixtures use the local servers of ops/local (one implementation for tests and benchmarks)."""

from ops.local.servers import PostgresServer, ServerStartError, ZooKeeperServer, free_port

__all__ = ["PostgresServer", "ServerStartError", "ZooKeeperServer", "free_port"]
