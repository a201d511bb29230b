"""Start/stop the emulator as a subprocess, the way the test suites use it.

Kept out of ``conftest.py`` so tests that need a second, private emulator
(e.g. to restart it on the same ``--data-file``) can reuse the same launcher.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_SECONDS = 20.0


class EmulatorStartupError(RuntimeError):
    """The emulator did not announce ``listening on`` in time (or exited)."""


@dataclass
class EmulatorProcess:
    """A running emulator subprocess and where to reach it."""

    process: subprocess.Popen[str]
    host: str
    port: int
    log_path: Path | None = field(default=None)

    def log(self, tail: int = 8000) -> str:
        """The end of the emulator's stderr (its log), for failure reports."""
        if self.log_path is None:
            return "(no log)"
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return "(no log)"

    @property
    def uri(self) -> str:
        """Connection string for ``KurrentDBClient``."""
        return f"kurrentdb://{self.host}:{self.port}?tls=false"

    def stop(self) -> None:
        """Terminate and reap the subprocess (kill if it ignores SIGTERM)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)


def launch_emulator(*extra_args: str) -> EmulatorProcess:
    """Start ``python -m tests.support.eventstoredb_emulator --port 0`` and wait until ready.

    On timeout or early exit the subprocess's stdout and stderr are included in
    the raised error, so a broken emulator fails the run loudly.
    """
    command = [
        sys.executable,
        "-m",
        "tests.support.eventstoredb_emulator",
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        *extra_args,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # stderr goes to a file, not a pipe: nobody drains a pipe during a long session, and a
    # full pipe would block the emulator.
    log_fd, log_name = tempfile.mkstemp(prefix="eventstoredb-emulator-", suffix=".log")
    log_path = Path(log_name)
    with os.fdopen(log_fd, "w") as log_file:
        process = subprocess.Popen(  # noqa: S603 - fixed command line
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def read_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read_stdout, daemon=True).start()
    seen: list[str] = []
    try:
        while True:
            line = lines.get(timeout=STARTUP_TIMEOUT_SECONDS)
            if line is None:
                raise EmulatorStartupError("emulator exited before listening")
            seen.append(line)
            if line.startswith("listening on "):
                host, _, port = line.split("listening on ", 1)[1].strip().rpartition(":")
                return EmulatorProcess(process=process, host=host, port=int(port), log_path=log_path)
    except (queue.Empty, EmulatorStartupError) as error:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        stderr = log_path.read_text(errors="replace")[-8000:]
        log_path.unlink(missing_ok=True)
        message = (
            f"EventStoreDB emulator failed to start ({error!r}); command={command}\n"
            f"--- stdout ---\n{''.join(seen)}\n--- stderr ---\n{stderr}"
        )
        raise EmulatorStartupError(message) from None


def launch_secure_emulator(cert_file: Path, key_file: Path, user: str = "admin:changeit") -> EmulatorProcess:
    """An emulator that speaks TLS with ``cert_file``/``key_file`` and requires ``user``."""
    return launch_emulator("--tls-cert", str(cert_file), "--tls-key", str(key_file), "--user", user)
