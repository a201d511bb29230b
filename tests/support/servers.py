"""Test fixtures use the local servers of ops/local (one implementation for tests and benchmarks)."""

from ops.local.servers import MongoWireServer, PostgresServer, ServerStartError, ZooKeeperServer, free_port

__all__ = ["MongoWireServer", "PostgresServer", "ServerStartError", "ZooKeeperServer", "free_port"]
