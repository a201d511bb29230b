"""A local supervisor for a state node (``xplatform state-node --supervised``).

Why: a ``kill -9``'d (or crashed, or OOM-killed) node is seen by ZooKeeper only when its
session expires, ``zk_session_timeout_s`` + one tick later; its shards are unserved until
then. A closed socket does not end a session early (architecture page, section 6). The
supervisor, on the same machine, sees its child die at once, and it knows the child's
session: it connects to ZooKeeper *as that session* (kazoo ``KazooClient(client_id=...)``)
and closes it. ZooKeeper then deletes the session's ephemerals (membership, the allocator
election entry) at once, the allocator hands the child's shards to the other nodes, and
failover takes what a graceful leave takes, whatever the session timeout: sessions can stay
long (safe against GC pauses and network blips) and crash failover still be sub-second.

Protocol with the child: the supervisor makes a private directory (0700) and passes the
child ``XPLATFORM_SUPERVISOR_SESSION_FILE``; the child writes ``{"session_id", "password"}``
there (0600, atomically) each time its coordinator has a new session, before it registers
(so no window exists in which its member entry lives but the supervisor cannot end it).

Lifecycle:

- child exits 0: it drained (someone sent it SIGTERM); its session is already closed. The
  supervisor exits 0 and does not restart it (it was asked to stop).
- child dies otherwise (signal, crash, exit code != 0): the supervisor ends the session the
  child last reported, then restarts the child after a backoff (0.2 s, doubling per quick
  crash up to ``supervisor_restart_max_s``; reset after a child ran for a minute).
  Ending the session is best effort: already expired (nothing to do), ZooKeeper unreachable
  (logged; the session expires on its own) - the supervisor carries on either way.
- SIGTERM/SIGINT to the supervisor: SIGTERM to the child (it drains: refuses new messages,
  flushes appends, leaves ZooKeeper), wait for it, exit with its code. A child that does not
  finish within ``DRAIN_TIMEOUT_S`` is killed and its session ended.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError

from infrastructure.settings import Settings

log = logging.getLogger(__name__)

SESSION_FILE_ENV = "XPLATFORM_SUPERVISOR_SESSION_FILE"
"""The variable that carries ``Settings.supervisor_session_file`` to the child."""
FIRST_BACKOFF_S = 0.2
"""First restart delay: the shards already moved (session ended), so a quick restart only
brings the node back into the rotation sooner; 0.2 s keeps a crash loop from spinning."""
STABLE_AFTER_S = 60.0
"""A child that ran this long is considered healthy: the next crash restarts after FIRST_BACKOFF_S again."""
DRAIN_TIMEOUT_S = 30.0
"""How long a stopping supervisor waits for its child's drain (pending appends take well
under a second; a child stuck longer is killed and its session ended)."""
END_SESSION_TIMEOUT_S = 2.0
"""How long ending a dead child's session may try to reach ZooKeeper before giving up (the
session then expires on its own after zk_session_timeout_s)."""


@dataclass(frozen=True)
class ZkSession:
    """A ZooKeeper session as kazoo names it (``KazooClient.client_id``)."""

    session_id: int
    password: bytes


def write_session(path: str | Path, session_id: int, password: bytes) -> None:
    """Child side: publish the current session for the supervisor (atomic, mode 0600: the
    password lets whoever holds it end the session)."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"session_id": session_id, "password": password.hex(), "pid": os.getpid()}, out)
    os.replace(temporary, target)


def read_session(path: str | Path) -> ZkSession | None:
    """Supervisor side: the session the child last published (None: it never got that far)."""
    try:
        data = json.loads(Path(path).read_text())
        return ZkSession(int(data["session_id"]), bytes.fromhex(data["password"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def end_session(hosts: str, session: ZkSession, timeout_s: float = END_SESSION_TIMEOUT_S) -> str:
    """Close ``session`` from this process, so ZooKeeper drops its ephemerals now.

    Returns what happened: ``"ended"``, ``"expired"`` (the session was already gone: kazoo
    reconnecting with it sees LOST and gets a new session, which we close again, harmless)
    or ``"unreachable"``. Never raises for ZooKeeper trouble: a supervisor carries on."""
    lost = threading.Event()
    client = KazooClient(hosts=hosts, client_id=(session.session_id, session.password),
                         connection_retry={"max_tries": 2, "delay": 0.05, "max_delay": 0.2})

    def on_state(state: str) -> None:
        if state == KazooState.LOST:
            lost.set()

    client.add_listener(on_state)
    try:
        client.start(timeout=timeout_s)
    except (KazooTimeoutError, KazooException, OSError):
        _stop_quietly(client)
        return "expired" if lost.is_set() else "unreachable"
    current = client.client_id
    outcome = "expired" if lost.is_set() or current is None or current[0] != session.session_id else "ended"
    _stop_quietly(client)  # closing our connection of that session ends it (CloseSession)
    return outcome


def _stop_quietly(client: KazooClient) -> None:
    try:
        client.stop()
        client.close()
    except (KazooException, OSError):
        log.debug("ZooKeeper client did not stop cleanly", exc_info=True)


class Supervisor:
    """Runs one state node as a child process; see the module docstring."""

    def __init__(self, settings: Settings, command: Sequence[str]) -> None:
        """``command``: how to start the node (the composition floor's ``state-node`` command;
        this package does not know the CLI that runs it)."""
        self.settings = settings
        self.command = list(command)
        self.restarts = 0
        self._stop = asyncio.Event()
        self._dir = Path(tempfile.mkdtemp(prefix="xplatform-supervisor-"))  # 0700
        self.session_file = self._dir / "session.json"

    def stop(self) -> None:
        """Drain the child and exit (what SIGTERM/SIGINT do)."""
        self._stop.set()

    async def run(self) -> int:
        """Supervise until stopped or the child exits cleanly; the exit code to return."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        backoff = FIRST_BACKOFF_S
        try:
            while True:
                self.session_file.unlink(missing_ok=True)
                started = time.monotonic()
                child = await asyncio.create_subprocess_exec(
                    *self.command, env={**os.environ, SESSION_FILE_ENV: str(self.session_file)})
                log.info("supervising %s as pid %d", self.settings.node_id, child.pid)
                code = await self._wait(child)
                if self._stop.is_set():
                    return code
                if code == 0:
                    log.info("%s (pid %d) exited cleanly (drained); not restarting", self.settings.node_id, child.pid)
                    return 0
                outcome = await self._end_child_session()
                ran = time.monotonic() - started
                backoff = FIRST_BACKOFF_S if ran >= STABLE_AFTER_S else backoff
                log.warning("%s (pid %d) died with %s after %.1f s; its ZooKeeper session: %s; restarting in %.1f s",
                            self.settings.node_id, child.pid, _describe(code), ran, outcome, backoff)
                try:
                    await asyncio.wait_for(self._stop.wait(), backoff)
                    return code  # asked to stop while waiting to restart
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, self.settings.supervisor_restart_max_s)
                self.restarts += 1
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            shutil.rmtree(self._dir, ignore_errors=True)

    async def _wait(self, child: asyncio.subprocess.Process) -> int:
        """The child's exit code; if we are stopped first, drain it (SIGTERM) and then that."""
        exited = asyncio.ensure_future(child.wait())
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if exited.done():
            return exited.result()
        log.info("stopping: draining %s (pid %d)", self.settings.node_id, child.pid)
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(exited, DRAIN_TIMEOUT_S)
        except TimeoutError:
            log.error("%s did not drain in %.0f s; killing it", self.settings.node_id, DRAIN_TIMEOUT_S)
            child.kill()
            code = await child.wait()
            await self._end_child_session()
            return code

    async def _end_child_session(self) -> str:
        session = read_session(self.session_file)
        if session is None:
            return "none reported (the child died before joining ZooKeeper)"
        outcome = await asyncio.to_thread(end_session, self.settings.zookeeper_hosts, session)
        if outcome == "unreachable":
            log.error("cannot reach ZooKeeper at %s to end the dead child's session; its shards move when it "
                      "expires (zk_session_timeout_s=%s)", self.settings.zookeeper_hosts,
                      self.settings.zk_session_timeout_s)
        return outcome


def _describe(code: int) -> str:
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


async def supervise_state_node(settings: Settings, command: Sequence[str]) -> int:
    """``xplatform state-node --supervised``: run ``command`` (the unsupervised node) as the child."""
    from infrastructure.errors import ConfigurationError

    if not settings.zookeeper_hosts:
        raise ConfigurationError("state-node needs XPLATFORM_ZOOKEEPER_HOSTS (dev mode without ZooKeeper: xplatform run)")
    if settings.supervisor_session_file:
        raise ConfigurationError("XPLATFORM_SUPERVISOR_SESSION_FILE is set: a supervised node cannot supervise itself")
    from infrastructure.cluster.zookeeper import ZooKeeperAuth
    from infrastructure.transport.auth import link_auth_from

    link_auth_from(settings, "state")  # missing secrets fail here, once, not in a restart loop
    ZooKeeperAuth.from_settings(settings)
    return await Supervisor(settings, command).run()
