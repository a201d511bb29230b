"""``xplatform run`` as a child process for tests: started with the given environment,
handed over once it prints its URL, stopped with Ctrl-C (SIGINT), which must end it cleanly."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def served(cwd: Path, env: dict[str, str], *args: str, start_timeout_s: float = 60) -> Iterator[str]:
    """Run ``xplatform run --port 0 *args`` and yield its base URL (``http://host:port/``);
    on leaving, SIGINT must stop it with exit code 0. A process that prints no URL fails
    the test with its stderr."""
    server = subprocess.Popen([sys.executable, "-m", "infrastructure.cli", "run", "--port", "0", *args], cwd=cwd,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = ""
        deadline = time.monotonic() + start_timeout_s
        while not url and time.monotonic() < deadline:
            line = server.stdout.readline() if server.stdout else ""
            if not line and server.poll() is not None:
                break
            found = re.search(r"serving on (http://\S+/)", line)
            url = found.group(1) if found else ""
        assert url, server.stderr.read() if server.stderr else "no URL printed"
        yield url
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == 0, server.stderr.read() if server.stderr else ""
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
