"""A stalled database connection, for fault tests: the PostgreSQL server processes
(backends) serving the connections named ``application_name`` are stopped (SIGSTOP) and
later continued. To their client those connections simply hang - no answer, no error -
as over a stuck network path; every other connection of the same process goes on.

A state node's standby feed has a pool of connections of its own, named
``xplatform <node> mirror feed`` (``open_event_stream(own_pool=...)``), so stalling them
pauses that node's mirror feed and nothing else: the honest form of "its feed lags" for a
process we do not control from inside. A backend is stopped only while idle (waiting for
its client): one stopped in the middle of a query could hold a lock others wait for.
"""

from __future__ import annotations

import os
import signal
import time

import psycopg

from ops.local.servers import PostgresServer


class Stalled:
    """The stopped backends; :meth:`resume` continues them (idempotent)."""

    def __init__(self, postgres: PostgresServer, pids: list[int]) -> None:
        self.postgres = postgres
        self.pids = pids

    def resume(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.pids = []


def _backends(postgres: PostgresServer, application_name: str) -> dict[int, str]:
    with psycopg.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, dbname=postgres.dbname,
                         autocommit=True) as conn:
        rows = conn.execute("SELECT pid, state FROM pg_stat_activity WHERE application_name = %s",
                            (application_name,)).fetchall()
    return {int(pid): str(state) for pid, state in rows}


def stall(postgres: PostgresServer, application_name: str, connections: int, timeout: float = 30.0) -> Stalled:
    """Stop the ``connections`` backends named ``application_name`` (waits until there are
    that many, and until all are idle at the moment they are stopped)."""
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"no {connections} idle connections named {application_name!r}"
        backends = _backends(postgres, application_name)
        if len(backends) != connections:
            time.sleep(0.05)
            continue
        stopped = Stalled(postgres, list(backends))
        for pid in stopped.pids:
            os.kill(pid, signal.SIGSTOP)
        if all(state == "idle" for state in _backends(postgres, application_name).values()):
            return stopped  # each one stopped while waiting for its client: it holds no lock
        stopped.resume()
        time.sleep(0.02)
