"""``xplatform run`` as a child process for tests (the launcher: ops/local/xplatform_run.py):
handed over once it prints its URL, stopped with Ctrl-C (SIGINT), which must end it cleanly."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ops.local.xplatform_run import XplatformRun


@contextmanager
def served(cwd: Path, env: dict[str, str], *args: str, start_timeout_s: float = 60) -> Iterator[str]:
    """Run ``xplatform run --port 0 *args`` and yield its base URL (``http://host:port/``);
    on leaving, SIGINT must stop it with exit code 0. A process that prints no URL fails
    the test with its output."""
    server = XplatformRun.start(("--port", "0", *args), cwd=cwd, env=env, timeout_s=start_timeout_s)
    try:
        yield server.url
        assert server.stop(signal.SIGINT) == 0, server.log()
    finally:
        server.close()
