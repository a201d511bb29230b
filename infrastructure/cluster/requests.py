"""Operator requests to one member, through ZooKeeper: ``xplatform drain NODE`` (and the
failover drill) from any machine that reaches ZooKeeper - no SSH, no PID.

Layout under ``/xplatform/<cluster>/``: ``requests/<node_id>``, created by the operator's
command as an *ephemeral* znode (a command that dies leaves nothing behind), JSON
``{"action": "drain"|"kill", "incarnation": <czxid>, "id", "by"}``. ``incarnation`` is the
creation transaction (``czxid``) of the member entry the operator saw: a process manager's
replacement registers a new entry (a new czxid), so a request meant for the process that
left is never taken by the one that replaced it.

The member that watches its path answers once, by rewriting the request's data with
``"state": "accepted"`` (or ``"refused"`` and a ``"reason"``); the ZooKeeper server's
``mtime`` of that write is when the drain started on the cluster's one clock, which the
command uses to time each shard's handoff. Then it acts: ``drain`` stops the process
gracefully (a state node refuses new messages, flushes, leaves; an edge says GOING_AWAY to
its clients); ``kill`` (the failover drill) ends it like ``kill -9``, and only where the
member was started with ``XPLATFORM_DRILLS_ENABLED=1`` (a test or staging cluster).

Who may ask: with ZooKeeper credentials (every clustered process unless insecure) the
``requests`` znode carries the cluster's digest ACL only (set here at start, like the map's),
so only holders of the cluster's ZooKeeper password - its members and its operators - can
create a request; a request is also ignored while that znode is open to anyone else.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.protocol.states import ZnodeStat

from infrastructure.cluster.zookeeper import ZooKeeperAuth

log = logging.getLogger(__name__)

ACTIONS = ("drain", "kill")
REQUESTS = "requests"
"""The znode (under the cluster's root) holding one request per member."""


@dataclass(frozen=True)
class MemberRequest:
    """What an operator asked one member to do (see the module docstring)."""

    action: str
    incarnation: int
    request_id: str = ""
    by: str = ""

    def to_bytes(self, **answer: object) -> bytes:
        return json.dumps({"action": self.action, "incarnation": self.incarnation, "id": self.request_id,
                           "by": self.by, **answer}).encode()

    @classmethod
    def parse(cls, data: bytes) -> tuple[MemberRequest, dict[str, object]]:
        """The request and the whole JSON (with the member's answer, if any). ValueError if malformed."""
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("action") not in ACTIONS or not isinstance(raw.get("incarnation"), int):
            raise ValueError(f"not a member request: {data[:200]!r}")
        return cls(str(raw["action"]), int(raw["incarnation"]), str(raw.get("id", "")), str(raw.get("by", ""))), raw


def requests_path(root: str) -> str:
    return f"{root}/{REQUESTS}"


class RequestWatch:
    """Member side: watch ``requests/<node_id>`` and hand an accepted request to the loop.

    ``on_request(action)`` runs on the event loop thread, at most once per process.
    ``drills_enabled``: whether ``kill`` is honoured (else it is refused with a reason)."""

    def __init__(self, client: KazooClient, root: str, node_id: str, auth: ZooKeeperAuth | None,
                 on_request: Callable[[str], None], drills_enabled: bool = False) -> None:
        self.client = client
        self.root = root
        self.node_id = node_id
        self.auth = auth
        self.on_request = on_request
        self.drills_enabled = drills_enabled
        self.path = f"{requests_path(root)}/{node_id}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._taken = False

    async def start(self) -> None:
        """After the member registered (the request names its entry's incarnation)."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._prepare)
        self.client.DataWatch(self.path, self._on_data)

    def _prepare(self) -> None:
        """Create ``requests`` with the cluster's ACL (the client's default), or close it."""
        parent = requests_path(self.root)
        try:
            self.client.create(parent)
        except NodeExistsError:
            pass
        if self.auth is not None:
            acl, _stat = self.client.get_acls(parent)
            if list(acl) != self.auth.acl:
                self.client.set_acls(parent, self.auth.acl)
                log.warning("ZooKeeper node %s was open; now only to its digest user", parent)

    # kazoo thread: never block here
    def _on_data(self, data: bytes | None, stat: ZnodeStat | None) -> bool:
        if data is not None and not self._taken:
            self.client.handler.spawn(self._consider, data)
        return not self._taken

    def _consider(self, data: bytes) -> None:
        try:
            request, raw = MemberRequest.parse(data)
        except ValueError:
            log.warning("ignoring a malformed request at %s", self.path)
            return
        if "state" in raw:
            return  # already answered
        try:
            mine = self.client.exists(f"{self.root}/members/{self.node_id}")
            if mine is None or mine.czxid != request.incarnation:
                log.info("ignoring a %s request for another incarnation of %s", request.action, self.node_id)
                return
            if self.auth is not None and list(self.client.get_acls(requests_path(self.root))[0]) != self.auth.acl:
                log.warning("ignoring a %s request: %s is open to others than the cluster's user",
                            request.action, requests_path(self.root))
                return
            if request.action == "kill" and not self.drills_enabled:
                self.client.set(self.path, request.to_bytes(state="refused", reason=(
                    f"{self.node_id} does not take drill kills (start it with XPLATFORM_DRILLS_ENABLED=1, "
                    "test and staging clusters only)")))
                return
            self._taken = True
            self.client.set(self.path, request.to_bytes(state="accepted"))
        except NoNodeError:
            return  # the operator's command went away (its request with it)
        except KazooException:
            log.warning("could not answer a %s request; the operator may ask again", request.action, exc_info=True)
            self._taken = False
            return
        log.warning("%s requested by %s (request %s)", request.action, request.by or "an operator", request.request_id)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.on_request, request.action)
