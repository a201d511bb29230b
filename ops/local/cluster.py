"""Real cluster processes for fault tests: state nodes and edges as subprocesses of
``xplatform`` on loopback, around a real ZooKeeper and a real PostgreSQL (shared store).
Each process is ended by the PID we started; logs are attached to failures."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient

from infrastructure.cluster.allocation import Assignment
from infrastructure.cluster.zookeeper import ZooKeeperAuth, zookeeper_client
from infrastructure.persistence import RecorderJournal
from infrastructure.settings import Settings
from infrastructure.transport.auth import LinkAuth, link_auth_from
from ops.local.servers import PostgresServer, ServerStartError, ZooKeeperServer

HS256_SECRET = "cluster-tests-secret-that-is-long-enough-for-hs256"
ISSUER = "https://idp.local-cluster.test"
AUDIENCE = "xplatform-local-cluster"
"""The edges require ``iss``/``aud`` (XPLATFORM_JWT_ISSUER/_AUDIENCE); :func:`cluster_token` signs both."""


def cluster_token(sub: str, role: str, ttl_s: int = 600) -> str:
    """A token the local cluster's edges accept (HS256 with :data:`HS256_SECRET`)."""
    import jwt

    claims = {"sub": sub, "role": role, "exp": int(time.time()) + ttl_s, "iss": ISSUER, "aud": AUDIENCE}
    return jwt.encode(claims, HS256_SECRET, algorithm="HS256")


@dataclass(frozen=True)
class ClusterSecrets:
    """A cluster's secret files, written as an operator would mount them (one file each,
    mode 0600): the state secret, the edge secret, the ZooKeeper password."""

    state: Path
    edge: Path
    zookeeper: Path

    @classmethod
    def write(cls, directory: Path) -> ClusterSecrets:
        paths = {}
        for name in ("state", "edge", "zookeeper"):
            path = directory / f"{name}.secret"
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
            paths[name] = path
        return cls(**paths)

    def settings(self) -> dict[str, Any]:
        """Settings keyword arguments (``Settings(**secrets.settings())``)."""
        return {"cluster_secret_file": str(self.state), "cluster_edge_secret_file": str(self.edge),
                "zookeeper_password_file": str(self.zookeeper)}

    def env(self) -> dict[str, str]:
        """The same as ``XPLATFORM_*`` variables, for processes."""
        return {f"XPLATFORM_{name.upper()}": value for name, value in self.settings().items()}

    def zookeeper_auth(self) -> ZooKeeperAuth:
        return ZooKeeperAuth("xplatform", self.zookeeper.read_text())

    def link_auth(self, role: str) -> LinkAuth:
        """What a process of ``role`` holds (an in-process edge or node of a test)."""
        return link_auth_from(Settings(**self.settings()), role)


@dataclass
class ClusterProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_line: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    @property
    def metrics_url(self) -> str:
        """Where the process serves /metrics (its internal listener, from the ready line)."""
        return self.ready_line.split("(metrics: ", 1)[1].split(")", 1)[0]

    @property
    def devices_url(self) -> str:
        """Where an edge serves the device edge on its own port (``XPLATFORM_EDGE_INTERNAL_PORT``
        >= 0): ``http://host:port/internal/``, from the ready line."""
        return self.ready_line.split("(devices: ", 1)[1].split(")", 1)[0]

    @property
    def base_url(self) -> str:
        """An edge's public URL (what follows "ready on"), without the trailing slash."""
        return self.ready_line.split("ready on ", 1)[1].rstrip("/")

    def metrics(self) -> dict[str, float]:
        """The process's /metrics now: sample (name with its labels, as exposed) -> value."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line and not line.startswith("#")}

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def children(self) -> list[int]:
        """PIDs of this process's live children (a supervised node's state node), from /proc."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # exited meanwhile
            fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
            if int(fields[1]) == self.process.pid and fields[0] != "Z":
                found.append(int(entry.name))
        return found

    def kill9_child(self, timeout: float = 10.0) -> int:
        """kill -9 the supervised state node (not its supervisor); its PID."""
        deadline = time.monotonic() + timeout
        while not (children := self.children()):
            if time.monotonic() > deadline:
                raise ServerStartError(f"{self.name} has no child process to kill:\n{self.log()}")
            time.sleep(0.02)
        os.kill(children[0], signal.SIGKILL)
        return children[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@dataclass
class Cluster:
    zookeeper: ZooKeeperServer
    postgres: PostgresServer
    name: str
    session_timeout_s: float = 0.6
    store: str = "postgres"  # "sqlite": one file under root, shared by the node processes (one host only)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="xplatform-cluster-")))
    processes: dict[str, ClusterProcess] = field(default_factory=dict)
    insecure: bool = False
    """True: processes run with XPLATFORM_CLUSTER_INSECURE=1 (no transport authentication, open
    znodes) - only to measure what authentication costs (bench_rtt --auth)."""

    def __post_init__(self) -> None:
        self.secrets = ClusterSecrets.write(self.root)
        self._started_as: dict[str, tuple[str, bool, dict[str, str]]] = {}
        self._kept: set[str] = set()
        self._keeper: threading.Thread | None = None
        self._stop_keeping = threading.Event()
        self.restarts: list[str] = []
        """Node IDs restarted by :meth:`keep_running`, in order."""

    def security_env(self) -> dict[str, str]:
        """The variables that give a process the cluster's secrets (or insecure mode)."""
        return {"XPLATFORM_CLUSTER_INSECURE": "1"} if self.insecure else self.secrets.env()

    def zookeeper_auth(self) -> ZooKeeperAuth | None:
        return None if self.insecure else self.secrets.zookeeper_auth()

    def _zk(self) -> KazooClient:
        """A started ZooKeeper client with the cluster's credentials (the caller stops it)."""
        zk = zookeeper_client(self.zookeeper.hosts, self.zookeeper_auth())
        zk.start(5)
        return zk

    def env(self, node_id: str) -> dict[str, str]:
        store = {"XPLATFORM_STORE": "sqlite", "XPLATFORM_DATA_DIR": str(self.root / "data")} if self.store == "sqlite" else {}
        return {**os.environ, **self.security_env(), "XPLATFORM_ZOOKEEPER_HOSTS": self.zookeeper.hosts, "XPLATFORM_CLUSTER_NAME": self.name,
                "XPLATFORM_NODE_ID": node_id, "XPLATFORM_ZK_SESSION_TIMEOUT_S": str(self.session_timeout_s),
                "XPLATFORM_STORE": "postgres", "XPLATFORM_POSTGRES_PORT": str(self.postgres.port),
                "XPLATFORM_POSTGRES_USER": self.postgres.user, "XPLATFORM_POSTGRES_DBNAME": self.postgres.dbname,
                "XPLATFORM_POSTGRES_PASSWORD": "trust", "XPLATFORM_SHARDS_PER_CATEGORY": "8",
                "XPLATFORM_JWT_HS256_SECRET": HS256_SECRET, "XPLATFORM_EDGE_PORT": "0",
                "XPLATFORM_JWT_ISSUER": ISSUER, "XPLATFORM_JWT_AUDIENCE": AUDIENCE,
                "XPLATFORM_LOG_LEVEL": "INFO", **store}

    def start(self, kind: str, node_id: str, timeout: float = 30.0, supervised: bool = False, **env: str) -> ClusterProcess:
        """Start ``xplatform <kind>`` as ``node_id``; ``env`` overrides variables (e.g. a fixed
        XPLATFORM_EDGE_PORT so a restarted edge comes back where its clients look).
        ``supervised``: ``state-node --supervised`` (the process is the supervisor; its child,
        the node, prints the ready line through the inherited stdout; ``kill9_child`` kills it).
        ``kind`` "projector": ``xplatform projector`` (give it XPLATFORM_MONGO_URI), ready at
        its "projector ready" line."""
        self._started_as[node_id] = (kind, supervised, dict(env))
        marker = "projector ready" if kind == "projector" else "ready on"
        log_path = self.root / f"{node_id}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process; appends across restarts
        args = [kind, "--supervised"] if supervised else [kind]
        process = subprocess.Popen([sys.executable, "-m", "ops.cli", *args], env={**self.env(node_id), **env},
                                   stdout=subprocess.PIPE, stderr=log, cwd=Path(__file__).resolve().parents[2])  # the repo root
        started = ClusterProcess(node_id, process, log_path)
        deadline = time.monotonic() + timeout
        assert process.stdout is not None
        os.set_blocking(process.stdout.fileno(), False)
        buffer = b""
        while time.monotonic() < deadline:
            chunk = process.stdout.read() or b""
            buffer += chunk
            ready = [line for line in buffer.decode(errors="replace").split("\n")[:-1] if marker in line]
            if ready:  # a whole line (newline seen), not a partial read
                started.ready_line = ready[0].strip()
                self.processes[node_id] = started
                return started
            if process.poll() is not None:
                raise ServerStartError(f"{kind} {node_id} exited with {process.returncode}:\n{started.log()}")
            time.sleep(0.05)
        process.kill()
        raise ServerStartError(f"{kind} {node_id} not ready in {timeout}s:\n{started.log()}")

    def logs(self) -> str:
        return "\n".join(f"----- {name}\n{p.log()}" for name, p in self.processes.items())

    def stop_all(self) -> None:
        self._stop_keeping.set()
        if self._keeper is not None:
            self._keeper.join(60)
        for p in list(self.processes.values()):
            p.stop()

    def keep_running(self, *node_ids: str) -> None:
        """Start ``node_ids`` again, as they were started, whenever they exit (a drain
        included): what systemd's ``Restart=always`` or a Kubernetes Deployment do, for the
        runbook's rolling restart. Until :meth:`stop_all`."""
        self._kept.update(node_ids)
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._keep, name="cluster-keeper", daemon=True)
            self._keeper.start()

    def _keep(self) -> None:
        while not self._stop_keeping.wait(0.05):
            for node_id in sorted(self._kept):
                process = self.processes.get(node_id)
                if process is None or process.process.poll() is None:
                    continue
                kind, supervised, env = self._started_as[node_id]
                try:
                    self.start(kind, node_id, 30.0, supervised, **env)
                    self.restarts.append(node_id)
                except ServerStartError:
                    continue  # e.g. its old member entry lingers: next round

    # ------------------------------------------------------------------ inspection
    def wait_member_gone(self, node_id: str, timeout: float = 15.0) -> None:
        """Until ``node_id``'s member entry left ZooKeeper (its session closed or expired):
        only then can a process of the same name register again."""
        zk = self._zk()
        try:
            deadline = time.monotonic() + timeout
            while zk.exists(f"/xplatform/{self.name}/members/{node_id}") and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            zk.stop()
            zk.close()

    def wait_member_back(self, node_id: str, timeout: float = 15.0) -> bool:
        """Until ``node_id`` is registered in ZooKeeper (a restarted node joined); False if not in time."""
        zk = self._zk()
        try:
            deadline = time.monotonic() + timeout
            while not zk.exists(f"/xplatform/{self.name}/members/{node_id}"):
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
            return True
        finally:
            zk.stop()
            zk.close()

    def owners(self, category: str, entity_ids: list[str], shards: int = 8) -> dict[str, str]:
        """entity ID → the state node the current shard map gives it."""
        from domain.refs import EntityRef
        from infrastructure.runtime.sharding import shard_of

        assignment = self.assignment()
        found = {}
        for entity_id in entity_ids:
            owner = assignment.owner(category, shard_of(EntityRef(category, entity_id), shards))
            assert owner is not None, f"{category}/{entity_id} has no owner"
            found[entity_id] = owner.node
        return found

    def assignment(self) -> Assignment:
        """The current shard map: owners and, for mirrored categories, standbys."""
        zk = self._zk()
        try:
            data, _ = zk.get(f"/xplatform/{self.name}/assignment")
        finally:
            zk.stop()
            zk.close()
        return Assignment.from_json(json.loads(data))

    def journal(self) -> RecorderJournal:
        """The shared PostgreSQL store, for checking what the nodes wrote."""
        return RecorderJournal({"PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_HOST": "127.0.0.1",
                                "POSTGRES_PORT": str(self.postgres.port), "POSTGRES_USER": self.postgres.user,
                                "POSTGRES_PASSWORD": "trust", "POSTGRES_DBNAME": self.postgres.dbname,
                                "ORIGINATOR_ID_TYPE": "text", "CREATE_TABLE": "false"})
