"""``xplatform run`` as a child process: the one launcher of the tests and the benchmarks.

Started with ``python -m ops.cli run`` (the same interpreter, so the same virtualenv and
``PYTHONPATH``), its stdout and stderr go to one log file (never a pipe: nobody drains a pipe
during a long benchmark, and a full pipe would stop the server); :meth:`XplatformRun.start`
returns once it prints ``serving on <url>``. The caller says how it stops
(:meth:`XplatformRun.stop`): SIGINT is Ctrl-C (tests require it to exit 0), SIGTERM is how
a service manager stops it; both run the same graceful shutdown (GOING_AWAY to every socket).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ops.local.servers import ServerStartError

SERVING = re.compile(r"serving on (http://\S+/)")
"""The line ``xplatform run`` prints once it listens (ops/wiring/dev.py)."""


class XplatformRun:
    """A running ``xplatform run`` child; see the module docstring."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, own_log: bool) -> None:
        self.process = process
        self.log_path = log_path
        self._own_log = own_log
        self.url = ""
        """The base URL, ``http://host:port/``, once started."""

    @classmethod
    def start(cls, args: Sequence[str] = ("--port", "0"), *, cwd: str | Path, env: Mapping[str, str],
              log_path: str | Path | None = None, timeout_s: float = 60.0) -> XplatformRun:
        """Run ``xplatform run *args`` in ``cwd`` with exactly ``env``, and wait until it serves.
        ``log_path``: where its output goes (default: a temporary file, removed by :meth:`close`).
        Raises ServerStartError with its output when it exits or stays silent for ``timeout_s``."""
        own_log = log_path is None
        if log_path is None:
            handle, name = tempfile.mkstemp(prefix="xplatform-run-", suffix=".log")
            log_path = Path(name)
            os.close(handle)
        log_path = Path(log_path)
        with open(log_path, "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "ops.cli", "run", *args], cwd=cwd,  # noqa: S603
                                       env={**env, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT)
        run = cls(process, log_path, own_log)
        try:
            run.url = run.wait_for(SERVING, timeout_s).group(1)
        except ServerStartError:
            run.close()
            raise
        return run

    def log(self) -> str:
        """Everything it printed so far (stdout and stderr, interleaved)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def wait_for(self, pattern: str | re.Pattern[str], timeout_s: float = 60.0) -> re.Match[str]:
        """The first match of ``pattern`` in its output, once printed. Raises ServerStartError
        with the output when it exits first or nothing matches within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = re.search(pattern, self.log())
            if found:
                return found
            exited = self.process.poll()
            if exited is not None or time.monotonic() > deadline:
                state = f"exited with {exited}" if exited is not None else f"nothing within {timeout_s:.0f} s"
                raise ServerStartError(f"`xplatform run` did not print {getattr(pattern, 'pattern', pattern)!r} "
                                       f"({state}); its output:\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def stop(self, stop_signal: int = signal.SIGINT, timeout_s: float = 30.0) -> int:
        """Send ``stop_signal``, wait up to ``timeout_s`` (then SIGKILL), and return the exit
        code (negative: the signal that ended it). The log stays readable until then."""
        if self.process.poll() is None:
            self.process.send_signal(stop_signal)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def close(self) -> None:
        """Kill it if still running; remove the log if it was ours."""
        self.stop(signal.SIGKILL)
        if self._own_log:
            self.log_path.unlink(missing_ok=True)
