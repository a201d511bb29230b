"""Local real servers (PostgreSQL, ZooKeeper) and local clusters of xplatform processes, on
loopback: for development, the test suite's fixtures and the cluster benchmarks."""
