"""Membership, shard map and the ownership state machine against a real ZooKeeper."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from kazoo.client import KazooClient

from domain import EntityRef
from infrastructure.cluster.layout import Layout
from infrastructure.cluster.ownership import Ownership, OwnershipState
from infrastructure.cluster.zookeeper import CoordinationError, MemberInfo, ZooKeeperCoordinator
from tests.support.servers import ZooKeeperServer
from tests.support.tcp_proxy import TcpProxy

SHARDS = 8
CATEGORIES = {"Lot": SHARDS, "Bidder": SHARDS}


@pytest.fixture
def zookeeper() -> Iterator[ZooKeeperServer]:
    """A ZooKeeper per test: these tests stop and restart it."""
    server = ZooKeeperServer.start()
    yield server
    server.destroy()


NodeFactory = Callable[..., ZooKeeperCoordinator]


@pytest.fixture
def node(zookeeper: ZooKeeperServer) -> Iterator[NodeFactory]:
    """``node(name, cluster, session=0.6, renew_every=None)`` makes a coordinator; every one's ZooKeeper client is
    stopped at teardown, whatever the test did. A failing scenario skips its own ``stop()``,
    and a kazoo client left running reconnects to the stopped ZooKeeper forever: pytest
    would hang instead of reporting the failure."""
    made: list[ZooKeeperCoordinator] = []

    def make(name: str, cluster: str, session: float = 0.6, renew_every: float | None = None) -> ZooKeeperCoordinator:
        coordinator = ZooKeeperCoordinator(zookeeper.hosts, cluster, MemberInfo(name, address=f"127.0.0.1:{name}"),
                                           CATEGORIES, Layout.everything(), Ownership(name, SHARDS),
                                           session_timeout_s=session, lease_renew_every_s=renew_every)
        made.append(coordinator)
        return coordinator

    yield make
    for coordinator in made:
        try:  # a no-op for a client its test already stopped
            coordinator.client.stop()
            coordinator.client.close()
        except Exception:  # noqa: BLE001 - teardown of the others must go on
            pass


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def owned(c: ZooKeeperCoordinator) -> int:
    return sum(len(v) for v in c.ownership.owned_shards().values())


def test_members_split_shards_and_a_leaver_hands_them_over_with_higher_epochs(
        zookeeper: ZooKeeperServer, node: NodeFactory) -> None:
    async def scenario() -> None:
        a, b = node("a", "split"), node("b", "split")
        await a.start()
        await until(lambda: owned(a) == 2 * SHARDS)
        await b.start()
        await until(lambda: owned(a) == SHARDS and owned(b) == SHARDS and a.ownership.assignment.version
                    == b.ownership.assignment.version)
        refs = [EntityRef("Lot", str(i)) for i in range(40)]
        assert all(a.ownership.owns(r) != b.ownership.owns(r) for r in refs)  # exactly one owner each
        b_refs = [r for r in refs if b.ownership.owns(r)]
        epochs_before = {r: a.ownership.epoch(r) for r in b_refs}
        await b.stop()  # graceful leave: its member node disappears with the session
        await until(lambda: owned(a) == 2 * SHARDS)
        assert all(a.ownership.owns(r) and a.ownership.epoch(r) > epochs_before[r] for r in b_refs)
        await a.stop()

    run(scenario)


def test_expired_session_of_a_silent_node_moves_its_shards(zookeeper: ZooKeeperServer, node: NodeFactory) -> None:
    """kill -9 looks like this to ZooKeeper: the session just expires."""
    async def scenario() -> None:
        a, b = node("a", "expire"), node("b", "expire")
        await a.start()
        await b.start()
        await until(lambda: owned(a) == SHARDS and owned(b) == SHARDS
                    and a.ownership.assignment.version == b.ownership.assignment.version)
        seen: list[tuple[OwnershipState, int]] = []  # each state b announced, with the shards its map gave it
        b.ownership.listeners.append(lambda state, _map: seen.append((state, owned(b))))
        version_at_kill = b.ownership.assignment.version
        session_id, password = b.client.client_id
        # Expire b's session from outside (kazoo's harness does the same): b never said goodbye.
        intruder = KazooClient(zookeeper.hosts, client_id=(session_id, password))
        intruder.start(5)
        intruder.stop()
        intruder.close()
        await until(lambda: owned(a) == 2 * SHARDS or b.ownership.assignment.version > version_at_kill + 1)
        await until(lambda: any(state is OwnershipState.LOST for state, _ in seen))
        # fenced before anything else happened: b never served a map that had moved its shards away
        # (a map change announced while still serving, before the expiry reached it, keeps them all)
        first_fence = next(i for i, (state, _) in enumerate(seen) if state is not OwnershipState.SERVING)
        assert all(shards == SHARDS for _, shards in seen[:first_fence]), seen
        # b comes back with a new session; whatever it serves again carries a newer epoch.
        await until(lambda: b.ownership.state is OwnershipState.SERVING and owned(b) == SHARDS)
        assert all(o.epoch > version_at_kill for c in b.ownership.assignment.shards.values()
                   for o in c if o is not None and o.node == "b")
        await a.stop()
        await b.stop()

    run(scenario)


def test_suspended_session_fences_every_shard_until_reconnected(zookeeper: ZooKeeperServer, node: NodeFactory) -> None:
    """ZooKeeper stops for less than the session timeout and comes back: every node fences at
    once, keeps its session (no LOST, the same session ID), and owns its shards again the
    moment it reports SERVING. The renewers tick once an hour here, so the leases certainly
    ran out during the outage: only the reconnect's own round trip can vouch for the session
    (before the fix, owns() lagged SERVING until the renewer's next tick)."""
    async def scenario() -> None:
        a = node("a", "fence", session=4.0, renew_every=3600)
        b = node("b", "fence", session=4.0, renew_every=3600)
        started: list[ZooKeeperCoordinator] = []
        try:
            for c in (a, b):
                await c.start()
                started.append(c)
            await until(lambda: owned(a) == SHARDS and owned(b) == SHARDS
                        and a.ownership.assignment.version == b.ownership.assignment.version)
            mine = {c: next(EntityRef("Bidder", str(i)) for i in range(100) if c.ownership.is_mine(EntityRef("Bidder", str(i))))
                    for c in (a, b)}
            sessions = {c: c.client.client_id[0] for c in (a, b)}
            seen: dict[ZooKeeperCoordinator, list[tuple[OwnershipState, bool]]] = {a: [], b: []}
            for c in (a, b):
                c.ownership.listeners.append(
                    lambda state, _map, c=c: seen[c].append((state, c.ownership.owns(mine[c]))))
            zookeeper.stop()  # the clients are SUSPENDED long before their 4 s sessions could expire
            await until(lambda: all(c.ownership.state is OwnershipState.FENCED for c in (a, b)), timeout=5)
            assert not any(c.ownership.owns(mine[c]) for c in (a, b))  # stop serving (and writing) at once
            await until(lambda: not a.ownership.leased() and not b.ownership.leased())
            zookeeper.start_again()
            await until(lambda: all(c.ownership.state is OwnershipState.SERVING for c in (a, b)), timeout=15)
            for c in (a, b):
                states = [state for state, _owns in seen[c]]
                assert OwnershipState.LOST not in states and c.client.client_id[0] == sessions[c]  # same session
                assert states[0] is OwnershipState.FENCED and states[-1] is OwnershipState.SERVING
                assert all(owns for state, owns in seen[c] if state is OwnershipState.SERVING), seen[c]  # owns() == SERVING
                assert c.ownership.owns(mine[c]) and owned(c) == SHARDS
        finally:
            for c in started:
                await c.stop()

    run(scenario)


def test_a_handshake_nobody_answers_does_not_cost_the_session(zookeeper: ZooKeeperServer) -> None:
    """A restarting ZooKeeper accepts connections before it serves them, and a reconnect
    that lands then may never be answered. kazoo alone waits a whole session (4 s here) for
    each such handshake, so two of them outlast the session, which the (running) server then
    expires. Bounded at a quarter of a session, the node retries and keeps its session."""
    async def scenario() -> None:
        proxy = TcpProxy(zookeeper.port).start()
        a = ZooKeeperCoordinator(proxy.address, "hang", MemberInfo("a", address="127.0.0.1:a"), CATEGORIES,
                                 Layout.everything(), Ownership("a", SHARDS), session_timeout_s=4.0)
        try:
            await a.start()
            await until(lambda: owned(a) == 2 * SHARDS)
            session = a.client.client_id[0]
            states: list[OwnershipState] = []
            a.ownership.listeners.append(lambda state, _map: states.append(state))
            proxy.swallow(2)  # the next two reconnects hang
            await asyncio.to_thread(a.client.exists, "/")  # the server heard from us just now
            assert proxy.cut() == 1
            await until(lambda: OwnershipState.FENCED in states and a.ownership.state is not OwnershipState.FENCED,
                        timeout=30)
            assert proxy.swallowed == 2
            assert OwnershipState.LOST not in states and a.client.client_id[0] == session  # kept its session
            assert a.ownership.state is OwnershipState.SERVING and owned(a) == 2 * SHARDS
        finally:
            await a.stop()
            proxy.stop()

    run(scenario)


def test_the_lease_counts_with_the_session_the_server_granted(zookeeper: ZooKeeperServer, node: NodeFactory) -> None:
    """The server caps sessions at its maxSessionTimeout (60 s here): asking for 61 s gets 60,
    and a lease computed from the 61 s asked for would outlive the real session."""
    async def scenario() -> None:
        a = node("a", "granted", session=61.0)
        try:
            await a.start()
            assert a.granted_session_s == 60.0
            before = time.monotonic()
            await asyncio.to_thread(a._resume)  # a reconnect's round trip renews the lease
            await until(lambda: a.ownership.lease_until is not None and a.ownership.lease_until > before + 30)
            assert a.ownership.lease_until <= time.monotonic() + 60.0 * 2 / 3
        finally:
            await a.stop()

    run(scenario)


def test_duplicate_node_name_is_refused(zookeeper: ZooKeeperServer, node: NodeFactory) -> None:
    async def scenario() -> None:
        a, twin = node("a", "dup"), node("a", "dup")
        await a.start()
        with pytest.raises(CoordinationError, match="already registered"):
            await twin.start()
        await twin.stop()
        await a.stop()

    run(scenario)
