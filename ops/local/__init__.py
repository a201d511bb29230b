"""Local development and test tools, on loopback, never installed with the package
(pyproject.toml excludes them from the wheel; the product imports none of them): real
servers (PostgreSQL, ZooKeeper: servers.py), the EventStoreDB emulator's launcher
(emulator.py, ``python -m ops.local.emulator``), ``xplatform run`` as a child process
(xplatform_run.py) and local clusters of xplatform processes with their test secrets
(cluster.py), for development, the test suite's fixtures and the benchmarks."""
