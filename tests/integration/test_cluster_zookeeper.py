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
    """``node(name, cluster, session=0.6)`` makes a coordinator; every one's ZooKeeper client is
    stopped at teardown, whatever the test did. A failing scenario skips its own ``stop()``,
    and a kazoo client left running reconnects to the stopped ZooKeeper forever: pytest
    would hang instead of reporting the failure."""
    made: list[ZooKeeperCoordinator] = []

    def make(name: str, cluster: str, session: float = 0.6) -> ZooKeeperCoordinator:
        coordinator = ZooKeeperCoordinator(zookeeper.hosts, cluster, MemberInfo(name, address=f"127.0.0.1:{name}"),
                                           CATEGORIES, Layout.everything(), Ownership(name, SHARDS),
                                           session_timeout_s=session)
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
        await until(lambda: owned(a) == SHARDS and owned(b) == SHARDS)
        states: list[OwnershipState] = []
        b.ownership.listeners.append(lambda state, _map: states.append(state))
        version_at_kill = b.ownership.assignment.version
        session_id, password = b.client.client_id
        started = time.monotonic()
        # Expire b's session from outside (kazoo's harness does the same): b never said goodbye.
        intruder = KazooClient(zookeeper.hosts, client_id=(session_id, password))
        intruder.start(5)
        intruder.stop()
        intruder.close()
        await until(lambda: owned(a) == 2 * SHARDS or b.ownership.assignment.version > version_at_kill + 1)
        assert time.monotonic() - started < 5
        await until(lambda: OwnershipState.LOST in states)
        assert states[0] is not OwnershipState.SERVING  # fenced before anything else happened
        # b comes back with a new session; whatever it serves again carries a newer epoch.
        await until(lambda: b.ownership.state is OwnershipState.SERVING and owned(b) == SHARDS)
        assert all(o.epoch > version_at_kill for c in b.ownership.assignment.shards.values()
                   for o in c if o is not None and o.node == "b")
        await a.stop()
        await b.stop()

    run(scenario)


def test_suspended_session_fences_every_shard_until_reconnected(zookeeper: ZooKeeperServer, node: NodeFactory) -> None:
    async def scenario() -> None:
        a = node("a", "fence", session=4.0)
        await a.start()
        ref = EntityRef("Bidder", "x")
        await until(lambda: a.ownership.owns(ref))
        zookeeper.stop()  # ZooKeeper goes away: the client is SUSPENDED long before its 4 s session expires
        await until(lambda: a.ownership.state is OwnershipState.FENCED, timeout=5)
        assert not a.ownership.owns(ref)  # stops serving (and writing) at once
        zookeeper.start_again()
        await until(lambda: a.ownership.state is OwnershipState.SERVING, timeout=15)
        assert a.ownership.owns(ref)
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
