"""ZooKeeper adapter (kazoo): membership, the shard map, and the elected allocator.

ZooKeeper layout under ``/xplatform/<cluster>/``:

- ``members/<node_id>`` — ephemeral, JSON {address, version, role, group, lanes, clock}: exists
  exactly while the node's session lives (a ``kill -9`` is seen when the session expires).
- ``assignment`` — JSON of :class:`~infrastructure.cluster.allocation.Assignment`, written
  only by the allocator (and ``xplatform rebalance``, which computes it the same way) with a
  compare-and-set on the znode version (two writers for a moment can never interleave writes).
- ``requests/<node_id>`` — an operator's request to one member (drain; the failover drill's
  kill), ephemeral, answered by the member: infrastructure/cluster/requests.py.
- ``allocator`` — kazoo ``Election``: one node at a time recomputes the map when members
  change.

Access control: with :class:`ZooKeeperAuth` (every clustered process, unless
``cluster_insecure``) the client authenticates with a digest user and every znode it creates
under the cluster's root carries a digest ACL giving that user all rights and nobody else
any: a client without the credentials can neither list the members nor read or write the
map. The shared parent ``/xplatform`` is created with the same ACL plus world CREATE only, so
other clusters (with other credentials) can still add their roots without reading ours.

Every kazoo callback runs on kazoo's threads and must not block: each one hands its news
to the event loop with ``call_soon_threadsafe`` (architecture page, example 8).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import BadVersionError, KazooException, NoAuthError, NodeExistsError, NoNodeError
from kazoo.recipe.election import Election
from kazoo.retry import KazooRetry
from kazoo.security import ACL, make_acl, make_digest_acl

from domain.refs import EntityRef
from infrastructure.cluster.allocation import Assignment, allocate
from infrastructure.cluster.layout import Layout
from infrastructure.cluster.ownership import Ownership
from infrastructure.errors import InfrastructureError

if TYPE_CHECKING:
    from infrastructure.settings import Settings

log = logging.getLogger(__name__)


class CoordinationError(InfrastructureError):
    """Raised when ZooKeeper cannot be reached or refuses a coordination step."""


@dataclass(frozen=True)
class MemberInfo:
    """What a node announces about itself."""

    node_id: str
    address: str = ""
    version: str = "0.1.0"
    role: str = "state"
    group: str = "default"
    lanes: list[str] = field(default_factory=list)
    mirror_lag: int | None = None
    """Events its standby mirror is behind the store (None: it stands by for nothing); for
    ``xplatform status``, updated as it changes (:meth:`ZooKeeperCoordinator.update_member`)."""


ROOT = "/xplatform"


@dataclass(frozen=True)
class ZooKeeperAuth:
    """Digest credentials of the cluster (settings ``zookeeper_user``/``zookeeper_password_file``)."""

    user: str
    password: str = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> ZooKeeperAuth | None:
        """The credentials; None in insecure mode. ConfigurationError without the password file."""
        if settings.cluster_insecure:
            return None
        from infrastructure.transport.auth import read_secret

        password = read_secret(settings.zookeeper_password_file, "XPLATFORM_ZOOKEEPER_PASSWORD_FILE").decode()
        return cls(settings.zookeeper_user, password)

    @property
    def acl(self) -> list[ACL]:
        """Creator (our user) all rights; no world access."""
        return [make_digest_acl(self.user, self.password, all=True)]

    @property
    def parent_acl(self) -> list[ACL]:
        """For the shared ``/xplatform``: ours, plus world CREATE so other clusters can add roots."""
        return [*self.acl, make_acl("world", "anyone", create=True)]

    def client_kwargs(self) -> dict[str, object]:
        return {"auth_data": [("digest", f"{self.user}:{self.password}")], "default_acl": self.acl}


def zookeeper_client(hosts: str, auth: ZooKeeperAuth | None, **kwargs: object) -> KazooClient:
    """A kazoo client authenticated with ``auth`` (if any): one place that knows how."""
    return KazooClient(hosts=hosts, **(auth.client_kwargs() if auth else {}), **kwargs)


RECONNECT_FIRST_S = 0.1
"""First wait before reconnecting to ZooKeeper; doubles per failed attempt up to the cap."""
RECONNECT_CAP_FRACTION = 1 / 8
"""Longest wait between reconnect attempts, as a fraction of the session timeout (kept
within RECONNECT_CAP_S): a node is fenced from the moment ZooKeeper is back until its next
attempt, so the cap is the price of an outage on top of the outage itself (kazoo adds
±40 % jitter). An eighth of a session leaves ~6 attempts before a session that outlived the
outage expires on a restarted server (which gives every session a full timeout again at
start). Half a session, the earlier cap, left lots ~2 s unanswered after a 4 s outage and
once let two sessions expire; kazoo's default grows to an hour."""
RECONNECT_CAP_S = (0.1, 1.0)
"""Bounds of that cap: attempts at most ten times a second per node, at least once a second."""
LEASE_FRACTION = 2 / 3
"""A round trip started at t vouches for our session until t + this × the session timeout:
the server cannot have expired the session before (it was alive when it answered, and
expiry takes a whole timeout of silence); the third left over absorbs ZooKeeper's tick
rounding and clock rates."""

HANDSHAKE_FRACTION = 1 / 4
"""Longest wait for the server's answer to a session handshake, as a fraction of the
session timeout (at least HANDSHAKE_MIN_S). kazoo waits session timeout / number of hosts:
all of it with one server. A restarting ZooKeeper accepts connections before it serves
them, and an attempt that lands then may never be answered: waiting a whole session for it
let that session expire on the restarted server (seen: ZooKeeperCoordinator tests, and two
members in a fault run). A live server answers within milliseconds; the attempt is retried."""
HANDSHAKE_MIN_S = 0.2


def reconnect_retry(session_timeout_s: float) -> KazooRetry:
    """kazoo's connection retry for a session of ``session_timeout_s`` (see RECONNECT_*)."""
    low, high = RECONNECT_CAP_S
    cap = min(high, max(low, session_timeout_s * RECONNECT_CAP_FRACTION))
    return KazooRetry(max_tries=-1, delay=RECONNECT_FIRST_S, backoff=2, max_delay=cap)


def bound_handshake(client: KazooClient, session_timeout_s: float,
                    on_negotiated: Callable[[float], None] | None = None) -> bool:
    """Make ``client`` give up on an unanswered session handshake after HANDSHAKE_FRACTION of
    a session, and report the session timeout the server granted (kazoo keeps it to itself)
    to ``on_negotiated`` in seconds. Works on kazoo's connection handler (2.x); returns False,
    leaving kazoo as it is, if that is not what it looks like."""
    connection = getattr(client, "_connection", None)
    invoke, connect = getattr(connection, "_invoke", None), getattr(connection, "_connect", None)
    if connection is None or invoke is None or connect is None:
        log.warning("kazoo %s: cannot bound its session handshake; a restarting ZooKeeper may cost a session",
                    type(connection).__name__)
        return False
    limit = max(HANDSHAKE_MIN_S, session_timeout_s * HANDSHAKE_FRACTION)

    def bounded_invoke(timeout: float, request: object, xid: int | None = None) -> object:
        return invoke(min(timeout, limit), request, xid)

    def reporting_connect(host: str, hostip: str, port: int) -> tuple[float, float]:
        read_timeout_ms, connect_timeout_ms = connect(host, hostip, port)
        if on_negotiated is not None:
            on_negotiated(read_timeout_ms * 1.5 / 1000.0)  # kazoo's read timeout is 2/3 of the granted session
        return read_timeout_ms, connect_timeout_ms

    connection._invoke = bounded_invoke
    connection._connect = reporting_connect
    return True


class ZooKeeperCoordinator:
    """Keeps an :class:`Ownership` current from ZooKeeper; allocates when elected."""

    def __init__(self, hosts: str, cluster: str, member: MemberInfo, categories: Mapping[str, int],
                 layout: Layout, ownership: Ownership, session_timeout_s: float = 2.0,
                 auth: ZooKeeperAuth | None = None, lease_renew_every_s: float | None = None) -> None:
        layout.check_covers(categories)
        self.member = member
        self.categories = dict(categories)
        self.layout = layout
        self.ownership = ownership
        self.root = f"{ROOT}/{cluster}"
        self.auth = auth
        self.session_timeout_s = session_timeout_s
        self.lease_renew_every_s = lease_renew_every_s
        """Period of the lease renewer; None: a third of the session timeout. Reconnecting
        renews the lease itself, so SERVING never waits for the renewer's next tick."""
        self.client = zookeeper_client(hosts, auth, timeout=session_timeout_s,
                                       connection_retry=reconnect_retry(session_timeout_s))
        self.granted_session_s: float | None = None
        """The session timeout ZooKeeper granted (its min/max session settings may differ from
        what we asked); the lease counts with the shorter of the two."""
        bound_handshake(self.client, session_timeout_s, self._granted)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._members_changed = threading.Event()
        self._stopping = threading.Event()
        self._election_thread: threading.Thread | None = None
        self._started = False
        self.members: dict[str, dict[str, object]] = {}
        """Live members (node id → announced info), kept current by a watch."""
        self.on_session: Callable[[int, bytes], None] | None = None
        """Called (on a kazoo or worker thread) with (session id, password) each time a new
        session is about to register: a supervised node hands it to its supervisor, which
        ends the session when the node dies (infrastructure/cluster/supervisor.py)."""

    # ------------------------------------------------------------------ lifecycle
    async def start(self, connect_timeout_s: float = 10.0) -> None:
        self._loop = asyncio.get_running_loop()
        self.client.add_listener(self._on_state)
        try:
            await asyncio.to_thread(self.client.start, connect_timeout_s)
            await asyncio.to_thread(self._register)
        except NoAuthError:
            raise CoordinationError(f"ZooKeeper refused access to {self.root}: wrong XPLATFORM_ZOOKEEPER_USER/"
                                    "_PASSWORD_FILE, or the znodes were created with other credentials") from None
        except (KazooException, TimeoutError) as exc:
            raise CoordinationError(f"cannot join ZooKeeper at {self.client.hosts}: {exc}") from exc
        self.client.DataWatch(f"{self.root}/assignment", self._on_assignment)
        self.client.ChildrenWatch(f"{self.root}/members", self._on_members)
        if self.member.role == "state":
            self._election_thread = threading.Thread(target=self._run_election, name="xplatform-allocator", daemon=True)
            self._election_thread.start()
            self._lease_thread = threading.Thread(target=self._renew_lease_forever, name="xplatform-lease", daemon=True)
            self._lease_thread.start()
        asked = time.monotonic()
        data, _stat = await asyncio.to_thread(self.client.get, f"{self.root}/assignment")
        self._started = True
        self._apply_then_serve(_decode(data), asked)

    async def stop(self) -> None:
        """Leave. A state node first withdraws its member entry and waits (briefly) for a map
        without it, then closes the session: the allocator - this node too, while it still
        holds the election - moves its shards at once. Closing first made a draining
        allocator's shards wait for the next election as well."""
        if self._started and self.member.role == "state":
            await asyncio.to_thread(self._withdraw)
        self._stopping.set()
        self._members_changed.set()
        await asyncio.to_thread(self._close)

    def _withdraw(self, timeout: float = 1.0) -> None:
        try:
            self.client.delete(f"{self.root}/members/{self.member.node_id}")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data, _stat = self.client.get(f"{self.root}/assignment")
                if not any(owner is not None and owner.node == self.member.node_id
                           for owners in _decode(data).shards.values() for owner in owners):
                    return
                time.sleep(0.01)
            log.warning("no shard map without %s within %.1f s; leaving anyway", self.member.node_id, timeout)
        except KazooException:
            log.warning("could not withdraw from ZooKeeper before leaving", exc_info=True)

    def _close(self) -> None:
        try:
            self.client.stop()
            self.client.close()
        except KazooException:
            log.warning("ZooKeeper client did not stop cleanly", exc_info=True)

    def _register(self) -> None:
        session = self.client.client_id
        if self.on_session is not None and session is not None:
            self.on_session(*session)  # before the member entry exists: it never outlives what the supervisor knows
        if self.auth is not None and not self.client.exists(ROOT):
            try:
                self.client.create(ROOT, acl=self.auth.parent_acl)
            except NodeExistsError:
                pass
        for path in ("members", "assignment"):
            self.client.ensure_path(f"{self.root}/{path}")
        if self.auth is not None:
            self._lock_down()
        _data, root_stat = self.client.get(self.root)
        self.ownership.generation = int(root_stat.ctime)
        # "clock": our wall clock as we register; against the entry's ctime (ZooKeeper's clock)
        # it shows this host's clock offset (`xplatform doctor` compares members')
        data = json.dumps({**asdict(self.member), "clock": time.time()}).encode()
        try:
            self.client.create(f"{self.root}/members/{self.member.node_id}", data, ephemeral=True)
        except NodeExistsError:
            # Our previous session's node may linger until that session expires.
            raise CoordinationError(f"a member named {self.member.node_id} is already registered") from None

    def _lock_down(self) -> None:
        """A cluster created before ACLs (or in insecure mode) has open znodes: close them.
        Needs the znodes' ADMIN right, which open znodes give to anyone."""
        for path in (self.root, f"{self.root}/members", f"{self.root}/assignment", f"{self.root}/allocator"):
            try:
                acl, _stat = self.client.get_acls(path)
                if list(acl) != self.auth.acl:  # type: ignore[union-attr]
                    self.client.set_acls(path, self.auth.acl)  # type: ignore[union-attr]
                    log.warning("ZooKeeper node %s was open to %s; now only to its digest user", path,
                                sorted({a.id.scheme for a in acl}))
            except NoNodeError:
                continue

    def update_member(self, **changes: object) -> None:
        """Change what this member announces in its ZooKeeper entry (any thread; written
        asynchronously, best effort: the next change or a re-registration writes it again).
        Only the entry's data changes: the members watch (children) does not fire."""
        self.member = replace(self.member, **changes)  # type: ignore[arg-type]
        if self._started and not self._stopping.is_set():
            self.client.set_async(f"{self.root}/members/{self.member.node_id}", json.dumps(asdict(self.member)).encode())

    # ------------------------------------------------------------------ kazoo callbacks (kazoo threads)
    def _on_state(self, state: str) -> None:
        assert self._loop is not None
        if state == KazooState.SUSPENDED:
            self._loop.call_soon_threadsafe(self.ownership.suspended)
        elif state == KazooState.LOST:
            self._loop.call_soon_threadsafe(self.ownership.lost)
        elif state == KazooState.CONNECTED and self._started:
            # Back in the same session (SUSPENDED → CONNECTED): re-read the map before serving.
            self.client.handler.spawn(self._resume)

    def _resume(self) -> None:
        assert self._loop is not None
        try:
            if not self.client.exists(f"{self.root}/members/{self.member.node_id}"):
                self._register()  # a new session after LOST
            asked = time.monotonic()
            data, _stat = self.client.get(f"{self.root}/assignment")
        except (KazooException, CoordinationError):
            log.warning("resume after reconnect failed; staying fenced", exc_info=True)
            return
        assignment = _decode(data)
        self._loop.call_soon_threadsafe(self._apply_then_serve, assignment, asked)

    def _apply_then_serve(self, assignment: Assignment, asked: float) -> None:
        """Serve again after the round trip started at ``asked`` (monotonic) read the map: it
        also vouches for the session, so the lease is renewed *before* we report SERVING. An
        outage longer than the lease had let it run out; waiting for the renewer's next tick
        (up to a third of a session) refused every message while the state said SERVING."""
        self.ownership.map_changed(assignment)
        if self.member.role == "state":  # only state nodes hold a lease (and renew it)
            self.ownership.renew(self._vouched_until(asked))
        self.ownership.connected()

    def _vouched_until(self, asked: float) -> float:
        session = min(self.session_timeout_s, self.granted_session_s or self.session_timeout_s)
        return asked + session * LEASE_FRACTION

    def _granted(self, session_s: float) -> None:
        """(kazoo's connection thread) Each handshake: remember the granted session timeout."""
        if session_s != self.granted_session_s and abs(session_s - self.session_timeout_s) > 0.001:
            log.warning("ZooKeeper granted a %.3f s session (asked %.3f s: its min/maxSessionTimeout); "
                        "failure detection follows the granted one, the lease the shorter of the two",
                        session_s, self.session_timeout_s)
        self.granted_session_s = session_s

    def _on_assignment(self, data: bytes | None, _stat: object) -> None:
        if data is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.ownership.map_changed, _decode(data), time.monotonic())

    def _on_members(self, children: list[str]) -> bool:
        self._members_changed.set()
        self.client.handler.spawn(self._read_members, list(children))
        return not self._stopping.is_set()

    def _read_members(self, children: list[str]) -> None:
        members: dict[str, dict[str, object]] = {}
        for node_id in children:
            try:
                data, _ = self.client.get(f"{self.root}/members/{node_id}")
                members[node_id] = json.loads(data)
            except (NoNodeError, ValueError):
                continue
            except KazooException:
                return  # connection trouble: the next watch event reads again
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._set_members, members)

    def _set_members(self, members: dict[str, dict[str, object]]) -> None:
        self.members = members

    # ------------------------------------------------------------------ queries (loop thread)
    def is_member(self, node_id: str) -> bool:
        return node_id in self.members

    def address_of(self, node_id: str) -> str | None:
        info = self.members.get(node_id)
        return None if info is None else str(info.get("address") or "") or None

    def route(self, ref: EntityRef) -> tuple[str, int] | None:
        """Owner node and epoch of ``ref``'s shard, for the transport client."""
        owner = self.ownership.owner_of(ref)
        return None if owner is None else (owner.node, self.ownership.epoch(ref))

    # ------------------------------------------------------------------ lease (its own thread)
    def _renew_lease_forever(self) -> None:
        """A ZooKeeper round trip every third of the session timeout; each success vouches
        for the session until (request start + LEASE_FRACTION of the timeout): the server
        cannot have expired it before then. See Ownership.leased(). A round trip that took
        longer than the period (it waited out a disconnection: kazoo queues requests until it
        reconnects) vouched for little: the next one starts at once."""
        while not self._stopping.is_set():
            period = self.lease_renew_every_s or self.session_timeout_s / 3
            started = time.monotonic()
            try:
                self.client.exists(self.root)
            except KazooException:
                pass
            else:
                if self._loop is not None:
                    self._loop.call_soon_threadsafe(self.ownership.renew, self._vouched_until(started))
                if time.monotonic() - started > period:
                    continue
            self._stopping.wait(period)

    # ------------------------------------------------------------------ allocator (its own thread)
    def _run_election(self) -> None:
        election = Election(self.client, f"{self.root}/allocator", self.member.node_id)
        while not self._stopping.is_set():
            try:
                election.run(self._allocate_while_leader)
            except KazooException:
                if self._stopping.is_set():
                    return
                self._stopping.wait(0.2)

    def _allocate_while_leader(self) -> None:
        log.info("%s is the shard allocator", self.member.node_id)
        self._members_changed.set()
        while not self._stopping.is_set() and self.client.state == KazooState.CONNECTED:
            if self._members_changed.wait(0.5):
                self._members_changed.clear()
                try:
                    self.reallocate()
                except KazooException:
                    log.warning("allocation failed; retrying", exc_info=True)
                    self._members_changed.set()

    def reallocate(self) -> Assignment:
        """Recompute and CAS-write the map from the live members (allocator only)."""
        while True:
            groups = {}
            for node_id in self.client.get_children(f"{self.root}/members"):
                try:
                    data, _ = self.client.get(f"{self.root}/members/{node_id}")
                except NoNodeError:
                    continue
                info = json.loads(data)
                if info.get("role") == "state":
                    groups[node_id] = info.get("group", "default")
            data, stat = self.client.get(f"{self.root}/assignment")
            previous = _decode(data)
            nxt = allocate(previous, self.categories, groups, self.layout)
            if nxt.version == previous.version:
                return previous
            try:
                self.client.set(f"{self.root}/assignment", json.dumps(nxt.to_json()).encode(), version=stat.version)
                log.info("shard map v%s for members %s", nxt.version, sorted(groups))
                return nxt
            except BadVersionError:
                continue  # another allocator wrote in between: recompute on its map


def _decode(data: bytes | None) -> Assignment:
    if not data:
        return Assignment()
    return Assignment.from_json(json.loads(data))
