"""The EventStoreDB emulator's one launcher (a local development tool, not installed with
the package): the test suite's fixtures, the benchmarks and a developer at a shell all
start it here.

The emulator (``tests/support/eventstoredb_emulator``) is a gRPC server implementing the part
of EventStoreDB's API the platform's client uses, on a free loopback port; it runs from a
checkout of this repository. From a shell::

    python -m ops.local.emulator [--port 2113] [--data-file PATH] [emulator options]

prints the connection string (``XPLATFORM_EVENTSTOREDB_URI=kurrentdb://...``) and runs until
Ctrl-C. It is no EventStoreDB: a production deployment runs a real cluster (ops/EVENTSTOREDB.md).
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ops.local.servers import ServerStartError

REPO_ROOT = Path(__file__).resolve().parents[2]
EMULATOR_MODULE = "tests.support.eventstoredb_emulator"
"""Run with ``python -m`` from the repository's root (the emulator lives with the tests it serves)."""
STARTUP_TIMEOUT_SECONDS = 20.0


class EmulatorStartupError(ServerStartError):
    """Raised when the emulator did not announce ``listening on`` in time (or exited)."""


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


def launch_emulator(*extra_args: str, port: int = 0) -> EmulatorProcess:
    """Start the emulator on loopback ``port`` (0: a free one) with ``extra_args`` (its own
    options, e.g. ``--data-file``) and wait until it listens.

    On timeout or early exit the subprocess's stdout and stderr are included in
    the raised error, so a broken emulator fails the run loudly.
    """
    command = [sys.executable, "-m", EMULATOR_MODULE, "--port", str(port), "--host", "127.0.0.1", *extra_args]
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
                host, _, bound = line.split("listening on ", 1)[1].strip().rpartition(":")
                return EmulatorProcess(process=process, host=host, port=int(bound), log_path=log_path)
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ops.local.emulator``: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m ops.local.emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=2113, help="loopback port (default 2113, EventStoreDB's; 0 = any free)")
    args, emulator_args = parser.parse_known_args(argv)
    emulator = launch_emulator(*emulator_args, port=args.port)
    print(f"EventStoreDB emulator (local development only) listening on {emulator.host}:{emulator.port}\n"
          f"  XPLATFORM_STORE=eventstoredb XPLATFORM_EVENTSTOREDB_URI={emulator.uri}\n"
          f"Ctrl-C stops it", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5) and emulator.process.poll() is None:
            pass
    except KeyboardInterrupt:
        pass
    finally:
        code = emulator.process.poll()
        if code is not None:
            print(f"the emulator exited with {code}:\n{emulator.log()}", file=sys.stderr)
        emulator.stop()
    return 0 if code is None else 1


if __name__ == "__main__":
    sys.exit(main())
