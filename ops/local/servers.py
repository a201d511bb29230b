"""Real servers (PostgreSQL, ZooKeeper) started as subprocesses on free loopback ports, for
the test suite's fixtures, the cluster benchmarks and local development.

A server that cannot start raises ServerStartError with its log (in tests: a failure,
never a skip). Every server is stopped by the PID we started.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ops.children import stop_child

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


class ServerStartError(RuntimeError):
    """Raised when a test server does not come up; the message carries its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """Terminate a server we started (by its PID) and wait for it; kill it after 10 s."""
    if process is not None:
        stop_child(process)


def log_tail(path: Path) -> str:
    """The end of a server's log, for failure messages."""
    try:
        return path.read_text(errors="replace")[-5000:]
    except OSError:
        return "(no log)"


class ServerDirectory:
    """A server process we started whose files (its ``server.log`` among them) live in ``root``."""

    root: Path
    process: subprocess.Popen[bytes] | None

    def log(self) -> str:
        return log_tail(self.root / "server.log")

    def stop(self) -> None:
        stop_process(self.process)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _pg_tool(name: str) -> str:
    for directory in PG_BIN_DIRS:
        candidate = directory / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise ServerStartError(f"PostgreSQL tool {name!r} not found: install the Debian package 'postgresql'")


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """initdb/postgres refuse to run as root: run them as the 'postgres' OS user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster (initdb into a temp dir, trust auth, loopback only)."""

    port: int
    user: str
    dbname: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path

    @classmethod
    def start(cls, timeout: float = 30.0) -> PostgresServer:
        root = Path(tempfile.mkdtemp(prefix="xplatform-pg-"))
        data_dir, log_path = root / "data", root / "server.log"
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        init = subprocess.run(
            _as_postgres_user([_pg_tool("initdb"), "-D", str(data_dir), "-U", "xplatform", "-A", "trust", "-E", "UTF8"]),
            capture_output=True, text=True,
        )
        if init.returncode != 0:
            raise ServerStartError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        port = free_port()
        log_file = open(log_path, "wb")  # noqa: SIM115 - closed when the server stops
        if os.geteuid() == 0:
            shutil.chown(log_path, "postgres", "postgres")
        process = subprocess.Popen(
            _as_postgres_user([_pg_tool("postgres"), "-D", str(data_dir), "-p", str(port), "-k", str(root),
                               "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on", "-c", "max_connections=100"]),
            stdout=log_file, stderr=subprocess.STDOUT,
        )
        server = cls(port, "xplatform", "xplatform", process, data_dir, log_path)
        server._wait_ready(timeout)
        created = subprocess.run([_pg_tool("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "xplatform", "xplatform"],
                                 capture_output=True, text=True)
        if created.returncode != 0 and "already exists" not in created.stderr:
            server.stop()
            raise ServerStartError(f"createdb failed: {created.stderr}\n{server.log()}")
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(f"postgres exited with {self.process.returncode}:\n{self.log()}")
            ready = subprocess.run([_pg_tool("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                   capture_output=True)
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        raise ServerStartError(f"postgres not ready within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        stop_process(self.process)  # SIGTERM: PostgreSQL's smart shutdown
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")


@dataclass
class ZooKeeperServer(ServerDirectory):
    """A standalone ZooKeeper (Debian package) with tiny ticks, so sessions of 200 ms+ work.
    ``stop()`` + ``start_again()`` keep the data dir and port (a ZooKeeper restart)."""

    port: int
    root: Path
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, timeout: float = 30.0) -> ZooKeeperServer:
        if not ZOOKEEPER_JAR.exists():
            raise ServerStartError(f"{ZOOKEEPER_JAR} missing: install the Debian package 'zookeeper'")
        root = Path(tempfile.mkdtemp(prefix="xplatform-zk-"))
        (root / "data").mkdir()
        server = cls(free_port(), root)
        (root / "zoo.cfg").write_text(
            f"tickTime=100\nminSessionTimeout=200\nmaxSessionTimeout=60000\ndataDir={root / 'data'}\n"
            f"clientPort={server.port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n"
            "4lw.commands.whitelist=ruok\n"
        )
        server.start_again(timeout)
        return server

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_again(self, timeout: float = 30.0) -> None:
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - owned by the process lifetime
        self.process = subprocess.Popen(
            ["java", "-Xmx256m", "-cp", f"{self.root}:{ZOOKEEPER_JAR}",
             "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(self.root / "zoo.cfg")],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(f"ZooKeeper exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"ruok")
                    if s.recv(4) == b"imok":
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ServerStartError(f"ZooKeeper not ready within {timeout}s:\n{self.log()}")

@dataclass
class MongoWireServer(ServerDirectory):
    """A MongoDB-wire server for tests, benchmarks and the embedded default: ``secantusdb``
    (PyPI, install with ``pip install --pre secantusdb``: the ``test`` extra). It is GPL-2.0,
    so it only ever runs as a separate process started here (``python -m secantus``), never
    imported into ours. It advertises itself as a one-node replica set, so transactions and
    write concern ``majority`` work as on a real MongoDB replica set."""

    port: int
    root: Path
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, timeout: float = 30.0) -> MongoWireServer:
        root = Path(tempfile.mkdtemp(prefix="xplatform-mongo-"))
        port = free_port()
        log = open(root / "server.log", "wb")  # noqa: SIM115 - owned by the process lifetime
        process = subprocess.Popen(
            [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port),
             "--storage-path", str(root / "data"), "--log-level", "WARNING"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        server = cls(root=root, process=process, port=port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                hint = " (install it: pip install --pre secantusdb)" if "No module named" in server.log() else ""
                raise ServerStartError(f"secantusdb exited with {process.returncode}{hint}:\n{server.log()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return server
            except OSError:
                time.sleep(0.1)
        server.stop()
        raise ServerStartError(f"secantusdb not listening within {timeout}s:\n{server.log()}")

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.root, ignore_errors=True)  # its data dir is throwaway: stopped is gone
