"""Test fixtures use the local cluster of ops/local (one implementation for tests and benchmarks)."""

from ops.local.cluster import HS256_SECRET, Cluster, ClusterProcess, ClusterSecrets, cluster_token

__all__ = ["HS256_SECRET", "Cluster", "ClusterProcess", "ClusterSecrets", "cluster_token"]
