"""What the runbook commands share: a ZooKeeper connection to one cluster with the operator's
credentials (members, the shard map, requests to members), the moves between two maps, and
the live status line shown while a command waits."""

from __future__ import annotations

import getpass
import json
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TextIO

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoAuthError, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import ZnodeStat

from infrastructure.cluster.allocation import Assignment, ShardOwner, allocate
from infrastructure.cluster.layout import Layout
from infrastructure.cluster.requests import MemberRequest, requests_path
from infrastructure.cluster.zookeeper import ROOT, ZooKeeperAuth, zookeeper_client
from infrastructure.errors import ConfigurationError, InfrastructureError
from infrastructure.settings import Settings
from ops.runbook import RunbookError

POLL_S = 0.02
"""How often a waiting command reads ZooKeeper again: a ZooKeeper read takes ~0.5 ms, and
50 reads a second time a handoff to within the 20 ms it is reported in."""


@dataclass(frozen=True)
class Member:
    """A member entry as ZooKeeper holds it: what the member announced, and the entry's
    creation (``czxid``: which incarnation of the node ID; ``ctime_ms``: on ZooKeeper's clock)."""

    node_id: str
    info: dict[str, Any]
    czxid: int
    ctime_ms: int

    @property
    def role(self) -> str:
        return str(self.info.get("role", "state"))

    @property
    def group(self) -> str:
        return str(self.info.get("group", "default"))


@dataclass(frozen=True)
class Move:
    """One shard changing owner between two maps (None: no owner)."""

    category: str
    shard: int
    source: str | None
    target: str | None

    def to_json(self) -> dict[str, Any]:
        return {"category": self.category, "shard": self.shard, "from": self.source, "to": self.target}


def moves_between(before: Assignment, after: Assignment) -> list[Move]:
    """Every shard whose owner differs, in category and shard order."""
    moves = []
    for category in sorted(set(before.shards) | set(after.shards)):
        old, new = before.shards.get(category, []), after.shards.get(category, [])
        for shard in range(max(len(old), len(new))):
            a, b = _node_of(old, shard), _node_of(new, shard)
            if a != b:
                moves.append(Move(category, shard, a, b))
    return moves


def _node_of(owners: list[ShardOwner | None], shard: int) -> str | None:
    owner = owners[shard] if shard < len(owners) else None
    return None if owner is None else owner.node


def reallocated(current: Assignment, groups: dict[str, str], layout: Layout) -> Assignment:
    """The map the allocator makes from ``current`` for the state members ``groups`` (node → group)."""
    return allocate(current, {c: len(owners) for c, owners in current.shards.items()}, groups, layout)


class ClusterView:
    """``with ClusterView(settings) as view:`` a started ZooKeeper client on the cluster of
    ``settings``; ZooKeeper trouble inside the block becomes ``error`` with one line."""

    def __init__(self, settings: Settings, error: type[InfrastructureError] = RunbookError,
                 connect_timeout_s: float = 10.0) -> None:
        if not settings.zookeeper_hosts:
            raise ConfigurationError("cluster commands need XPLATFORM_ZOOKEEPER_HOSTS")
        self.settings = settings
        self.error = error
        self.root = f"{ROOT}/{settings.cluster_name}"
        self.connect_timeout_s = connect_timeout_s
        self.auth = ZooKeeperAuth.from_settings(settings)
        self.zk: KazooClient = zookeeper_client(settings.zookeeper_hosts, self.auth, timeout=settings.zk_session_timeout_s)

    def __enter__(self) -> ClusterView:
        try:
            self.zk.start(self.connect_timeout_s)
            if not self.zk.exists(self.root):
                raise NoNodeError
        except BaseException as exc:
            self._close()
            self._translate(exc)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._close()
        if exc is not None:
            self._translate(exc)

    def _translate(self, exc: BaseException) -> None:
        name, hosts = self.settings.cluster_name, self.settings.zookeeper_hosts
        if isinstance(exc, NoAuthError):
            raise self.error(f"ZooKeeper refused to show cluster {name!r}: set "
                             "XPLATFORM_ZOOKEEPER_USER/_PASSWORD_FILE to the cluster's credentials") from None
        if isinstance(exc, NoNodeError):
            raise self.error(f"no cluster named {name!r} in ZooKeeper at {hosts}") from None
        if isinstance(exc, KazooException | KazooTimeoutError | TimeoutError):
            raise self.error(f"cannot read ZooKeeper at {hosts}: {type(exc).__name__} {exc}") from exc

    def _close(self) -> None:
        try:
            self.zk.stop()
            self.zk.close()
        except KazooException:
            pass

    # ------------------------------------------------------------------ reads
    def members(self) -> dict[str, Member]:
        found = {}
        for node in sorted(self.zk.get_children(f"{self.root}/members")):
            try:
                data, stat = self.zk.get(f"{self.root}/members/{node}")
            except NoNodeError:
                continue
            found[node] = Member(node, json.loads(data), stat.czxid, stat.ctime)
        return found

    def member(self, node_id: str) -> Member | None:
        """``node_id``'s entry now (None: not registered)."""
        try:
            data, stat = self.zk.get(f"{self.root}/members/{node_id}")
        except NoNodeError:
            return None
        return Member(node_id, json.loads(data), stat.czxid, stat.ctime)

    def assignment(self) -> tuple[Assignment, ZnodeStat]:
        data, stat = self.zk.get(f"{self.root}/assignment")
        return (Assignment.from_json(json.loads(data)) if data else Assignment()), stat

    # ------------------------------------------------------------------ requests to members
    def ask(self, member: Member, action: str, timeout_s: float, line: StatusLine) -> int:
        """Ask ``member`` to ``action`` (infrastructure/cluster/requests.py) and wait for its
        answer; the ZooKeeper time (ms) it accepted at. The request is ephemeral: it goes when
        this view closes."""
        path = f"{requests_path(self.root)}/{member.node_id}"
        request = MemberRequest(action, member.czxid, uuid.uuid4().hex, f"{getpass.getuser()}@{socket.gethostname()}")
        try:
            self.zk.create(path, request.to_bytes(), ephemeral=True)
        except NodeExistsError:
            raise RunbookError(f"another request to {member.node_id} is in progress (an operator's command is "
                               "waiting for it); try again when it is done") from None
        except NoNodeError:
            raise RunbookError(f"the members of cluster {self.settings.cluster_name!r} take no requests (they run a "
                               f"version before `xplatform drain`): send SIGTERM to {member.node_id} instead") from None
        started = time.monotonic()
        while True:
            data, stat = self.zk.get(path)
            answer = MemberRequest.parse(data)[1]
            if answer.get("state") == "accepted":
                return int(stat.mtime)
            if answer.get("state") == "refused":
                self.zk.delete(path)
                raise RunbookError(f"{member.node_id} refused to {action}: {answer.get('reason', '')}")
            if self.member(member.node_id) is None:
                self.zk.delete(path)
                raise RunbookError(f"{member.node_id} left before answering the {action} request")
            waited = time.monotonic() - started
            if waited > timeout_s:
                self.zk.delete(path)
                raise RunbookError(f"{member.node_id} did not answer the {action} request within {timeout_s:g} s "
                                   "(is it running this version? `xplatform status`)")
            line.show(f"asked {member.node_id} to {action}; waiting for it to answer", waited)
            time.sleep(POLL_S)

    def withdraw(self, node_id: str) -> None:
        """Remove this command's answered request to ``node_id`` (it has done what was asked)."""
        try:
            self.zk.delete(f"{requests_path(self.root)}/{node_id}")
        except NoNodeError:
            pass


class StatusLine:
    """The live status line on stderr while a command waits: rewritten in place on a
    terminal; elsewhere (logs, CI) one line per change of text, without the timer."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self._last = ""

    def show(self, text: str, elapsed_s: float | None = None) -> None:
        if not self.enabled:
            return
        if self.tty:
            timer = "" if elapsed_s is None else f" [{elapsed_s:5.1f} s]"
            self.stream.write(f"\r\x1b[K{text}{timer}")
            self.stream.flush()
        elif text != self._last:
            self.stream.write(text + "\n")
            self.stream.flush()
        self._last = text

    def done(self) -> None:
        if self.enabled and self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()
        self._last = ""
