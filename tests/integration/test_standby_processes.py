"""Hot standbys with real processes: three state nodes (layout ``"mirrors": 1``), an edge,
ZooKeeper and PostgreSQL as subprocesses (the process forms of tests/integration/test_mirrors.py
and test_standby.py). kill -9 of a lot's owner: its standby takes the lot over warm and
answers with the exact state (no acknowledged bid lost or doubled); a lagging standby
(its feed's database connections stalled) promoted: caught up from the store, never
stale; a killed standby: replaced by one that warms up and takes over warm; owner and
standby killed together: the lot is loaded cold with the exact state."""

from __future__ import annotations

import asyncio
import time
import uuid

import msgpack

from domain import EntityRef
from domain.auction.lot import Lot
from edge.client import ClientError, connect
from infrastructure.cluster.allocation import ShardOwner
from infrastructure.persistence import new_mapper
from infrastructure.persistence.rehydrate import rehydrate
from infrastructure.runtime.sharding import shard_of
from tests.support.chat_load import token
from tests.support.cluster import Cluster
from tests.support.pg_stall import Stalled, stall

LAYOUT = '[{"group": "default", "categories": ["*"], "mirrors": 1}]'


def scrape(cluster: Cluster, node: str) -> dict[str, float]:
    return cluster.processes[node].metrics()


def test_kill_9_of_a_lots_owner_its_standby_takes_it_over_warm_with_the_exact_state(cluster: Cluster) -> None:
    for node in ("node-a", "node-b", "node-c"):
        cluster.start("state-node", node, XPLATFORM_CLUSTER_LAYOUT=LAYOUT)
    edge = cluster.start("edge", "edge-1", XPLATFORM_CLUSTER_LAYOUT=LAYOUT)
    base_url = edge.ready_line.split("ready on ")[1].rstrip("/")
    lot_id = f"lot-{uuid.uuid4().hex[:6]}"
    shard = ("Lot", shard_of(EntityRef("Lot", lot_id), 8))

    async def bid(bidder, amount: int) -> bool:  # type: ignore[no-untyped-def]
        while True:  # resend with the same message ID until the entity answers
            reply = await bidder.request({"type": "bid", "amount": amount}, message_id=f"bid-{amount}", timeout=5)
            if reply.ok or not reply.retryable:
                return bool(reply.ok)
            await asyncio.sleep(0.05)

    async def scenario() -> tuple[list[int], str, str]:
        auct = await connect(base_url, "Lot", lot_id, token("ann", "auctioneer"))
        bidder = await connect(base_url, "Lot", lot_id, token("bob", "bidder"))
        assert (await auct.request({"type": "open", "title": "Vase"})).ok
        acknowledged = [amount for amount in range(1, 31) if await bid(bidder, amount)]
        assignment = cluster.assignment()
        owner, standby = assignment.owner(*shard), assignment.standby(*shard)
        assert owner is not None and standby is not None and owner.node != standby.node
        deadline = time.monotonic() + 30
        while True:  # the standby's mirror holds the lot and is caught up
            seen = await asyncio.to_thread(scrape, cluster, standby.node)
            if seen.get("xplatform_mirror_lag_events") == 0 and seen.get("xplatform_mirror_entities", 0) >= 1:
                break
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.1)
        cluster.processes[owner.node].kill9()
        acknowledged += [amount for amount in range(31, 61) if await bid(bidder, amount)]
        await asyncio.sleep(0.5)  # the last reservations settle
        await auct.close()
        await bidder.close()
        return acknowledged, owner.node, standby.node

    try:
        acknowledged, killed, standby = asyncio.run(scenario())
    except BaseException:
        print(cluster.logs())
        raise
    assert len(acknowledged) == 60, cluster.logs()
    new_owner = cluster.owners("Lot", [lot_id])[lot_id]
    assert new_owner == standby, (new_owner, standby)  # the allocator handed the shard to its standby
    seen = scrape(cluster, new_owner)
    assert seen.get('xplatform_node_takeovers_total{kind="warm"}', 0) >= 1, seen
    assert seen.get('xplatform_mirror_promotions_total{outcome="discarded"}', 0) == 0, seen
    journal = cluster.journal()
    try:
        events = journal.read(f"Lot-{lot_id}")
        assert [e.originator_version for e in events] == list(range(1, len(events) + 1))  # contiguous
        epochs = [msgpack.unpackb(e.state)["epoch"] for e in events if e.topic.endswith("OwnerChanged")]
        assert epochs == sorted(set(epochs)) and len(epochs) >= 2  # taken over, epochs only grow
        bids = [msgpack.unpackb(e.state)["bid_id"] for e in events if e.topic.endswith("BidAccepted")]
        assert len(bids) == len(set(bids))  # every accepted bid exactly once
    finally:
        journal.close()
    assert killed != new_owner


FEED_CONNECTIONS = 3
"""The standby feed's pool (infrastructure.persistence.FEED_POOL): LISTEN, reads, lag count."""


async def chat(client, mid: str) -> None:  # type: ignore[no-untyped-def]
    """Post a chat message, resent with the same ID until the lot answers."""
    for _attempt in range(400):
        reply = await client.request({"type": "chat", "text": mid}, message_id=mid, timeout=5)
        if reply.ok:
            return
        assert reply.retryable, reply
        await asyncio.sleep(0.05)
    raise AssertionError(f"{mid} never acknowledged")


async def join(base_url: str, lot_id: str):  # type: ignore[no-untyped-def]
    """A new viewer of the lot, reconnecting while its owner is being replaced (the edge
    refuses a connect it cannot deliver, "owner unreachable"); its welcome is the lot's view."""
    for _attempt in range(200):
        try:
            return await connect(base_url, "Lot", lot_id, token("vic", "viewer"))
        except ClientError:
            await asyncio.sleep(0.05)
    raise AssertionError("the lot never took a connection again")


async def opened(base_url: str, lot_id: str, messages: int):  # type: ignore[no-untyped-def]
    """The auctioneer's client of a new lot, opened, with ``messages`` chat messages acknowledged."""
    auct = await connect(base_url, "Lot", lot_id, token("ann", "auctioneer"))
    assert (await auct.request({"type": "open", "title": "Vase"})).ok
    acknowledged = [f"m-{i}" for i in range(messages)]
    for mid in acknowledged:
        await chat(auct, mid)
    return auct, acknowledged


def owner_and_standby(cluster: Cluster, shard: tuple[str, int]) -> tuple[ShardOwner, ShardOwner]:
    assignment = cluster.assignment()
    owner, standby = assignment.owner(*shard), assignment.standby(*shard)
    assert owner is not None and standby is not None and owner.node != standby.node
    return owner, standby


async def served_after_takeover(base_url: str, lot_id: str, auct, acknowledged: list[str]) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """One more message through the takeover (resent until acknowledged), then what a new
    viewer is shown; both clients closed."""
    await chat(auct, "after-takeover")
    acknowledged.append("after-takeover")
    viewer = await join(base_url, lot_id)
    welcome: dict[str, object] = viewer.welcome
    await viewer.close()
    await auct.close()
    return welcome


def replayed_view(cluster: Cluster, lot_id: str) -> dict[str, object]:
    """What a fresh replay of the lot's stream shows a client (its view, without the live count)."""
    journal = cluster.journal()
    try:
        lot, _ = rehydrate(journal, new_mapper(), Lot, EntityRef("Lot", lot_id))
    finally:
        journal.close()
    return {k: v for k, v in lot.view().items() if k != "present"}


def served_view(welcome: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in welcome.items() if k not in ("present", "type", "reconnected")}


def assert_stream_exact(cluster: Cluster, lot_id: str, acknowledged: list[str]) -> None:
    """Versions contiguous, takeover epochs only grow, every acknowledged message stored exactly once."""
    journal = cluster.journal()
    try:
        events = journal.read(f"Lot-{lot_id}")
    finally:
        journal.close()
    assert [e.originator_version for e in events] == list(range(1, len(events) + 1))
    epochs = [msgpack.unpackb(e.state)["epoch"] for e in events if e.topic.endswith("OwnerChanged")]
    assert epochs == sorted(set(epochs)) and len(epochs) >= 2
    stored = [msgpack.unpackb(e.state)["message_id"] for e in events if e.topic.endswith("Chatted")]
    assert sorted(stored) == sorted(acknowledged) and len(stored) == len(set(stored))


def wait_for(check, what: str, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return found


def start(cluster: Cluster, nodes: int) -> str:
    for node in [f"node-{n}" for n in "abcd"[:nodes]]:
        cluster.start("state-node", node, XPLATFORM_CLUSTER_LAYOUT=LAYOUT)
    edge = cluster.start("edge", "edge-1", XPLATFORM_CLUSTER_LAYOUT=LAYOUT)
    return edge.ready_line.split("ready on ")[1].rstrip("/")


def caught_up(cluster: Cluster, node: str) -> bool:
    seen = scrape(cluster, node)
    return seen.get("xplatform_mirror_lag_events") == 0 and seen.get("xplatform_mirror_entities", 0) >= 1


def test_a_lagging_standby_promoted_catches_up_from_the_store_and_never_answers_stale(cluster: Cluster) -> None:
    """The standby's feed is stalled (its own database connections stop answering: see
    tests/support/pg_stall.py) while the owner acknowledges more messages; the owner is
    killed; the promoted standby's first answer (a new client's view of the lot) is the
    store's latest state, not its mirror's, and no message is lost or doubled."""
    base_url = start(cluster, 3)
    lot_id = f"lot-{uuid.uuid4().hex[:6]}"
    shard = ("Lot", shard_of(EntityRef("Lot", lot_id), 8))
    stalled: Stalled | None = None

    async def scenario() -> tuple[list[str], dict[str, object], str, str, float, float]:
        nonlocal stalled
        auct, acknowledged = await opened(base_url, lot_id, 10)
        owner, standby = owner_and_standby(cluster, shard)
        await asyncio.to_thread(wait_for, lambda: caught_up(cluster, standby.node), "standby never caught up")
        stalled = await asyncio.to_thread(stall, cluster.postgres, f"xplatform {standby.node} mirror feed",
                                          FEED_CONNECTIONS)
        applied = scrape(cluster, standby.node)["xplatform_mirror_events_applied_total"]
        late = [f"late-{i}" for i in range(15)]
        for mid in late:
            await chat(auct, mid)
        acknowledged += late
        await asyncio.sleep(1.5)  # time enough for a feed that runs to apply them (it is stalled)
        applied_after = scrape(cluster, standby.node)["xplatform_mirror_events_applied_total"]
        cluster.processes[owner.node].kill9()
        viewer = await join(base_url, lot_id)
        welcome = viewer.welcome
        await chat(auct, "after-takeover")  # the auctioneer's client resends across the failover
        acknowledged.append("after-takeover")
        await viewer.close()
        await auct.close()
        return acknowledged, welcome, owner.node, standby.node, applied, applied_after

    try:
        acknowledged, welcome, killed, standby, applied, applied_after = asyncio.run(scenario())
        assert applied_after == applied  # the mirror was behind by the 15 late messages when promoted
        assert cluster.owners("Lot", [lot_id])[lot_id] == standby
        # the first view after the takeover has every message acknowledged before it
        assert [c["text"] for c in welcome["chat"]][-15:] == [f"late-{i}" for i in range(15)], welcome  # type: ignore[index]
        seen = scrape(cluster, standby)
        assert seen.get('xplatform_node_takeovers_total{kind="warm"}', 0) >= 1, seen
        assert seen.get('xplatform_mirror_promotions_total{outcome="warm"}', 0) >= 1, seen
        assert seen.get('xplatform_mirror_promotions_total{outcome="discarded"}', 0) == 0, seen
        # served from the caught-up mirror at once: no write of it refused, so no reload from the store
        assert seen.get('xplatform_node_takeovers_total{kind="cold"}', 0) == 0, seen
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        if stalled is not None:
            stalled.resume()
    assert_stream_exact(cluster, lot_id, acknowledged)
    assert killed != standby


def warmed_up(cluster: Cluster, node: str, entities_before: float) -> bool:
    """``node``'s mirror took in more entities than it held before it was given new shards to
    stand by for (none of their entities is written meanwhile: it found them in the store),
    and counted no lag in two counts over a second apart (its feed counts every second: the
    later one is after its new scan began)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen = scrape(cluster, node)
        if seen.get("xplatform_mirror_entities", 0) > entities_before and seen.get("xplatform_mirror_lag_events") == 0:
            time.sleep(1.2)
            if scrape(cluster, node).get("xplatform_mirror_lag_events") == 0:
                return True
        time.sleep(0.1)
    return False


def test_a_killed_standby_is_replaced_by_one_that_warms_up_and_takes_over_warm(cluster: Cluster) -> None:
    """kill -9 of a lot's standby: the map gives the shard another standby (not its owner),
    whose mirror warms up from the store (nothing is written to the lot meanwhile); kill -9
    of the owner then: that new standby takes the lot over warm, and a new client sees
    exactly the state a replay of the store gives."""
    base_url = start(cluster, 3)
    lot_id = f"lot-{uuid.uuid4().hex[:6]}"
    shard = ("Lot", shard_of(EntityRef("Lot", lot_id), 8))

    async def scenario() -> tuple[list[str], dict[str, object], str]:
        auct, acknowledged = await opened(base_url, lot_id, 20)
        owner, standby = owner_and_standby(cluster, shard)
        third = next(n for n in ("node-a", "node-b", "node-c") if n not in (owner.node, standby.node))
        entities_before = scrape(cluster, third).get("xplatform_mirror_entities", 0)
        cluster.processes[standby.node].kill9()
        cluster.wait_member_gone(standby.node)

        def replaced() -> str | None:
            new = cluster.assignment().standby(*shard)
            return new.node if new is not None and new.node != standby.node else None

        replacement = await asyncio.to_thread(wait_for, replaced, "no new standby")
        assert replacement == third  # never the owner, never the dead node
        assert cluster.assignment().owner(*shard) == owner  # the owner stays
        assert await asyncio.to_thread(warmed_up, cluster, replacement, entities_before), scrape(cluster, replacement)
        cluster.processes[owner.node].kill9()
        welcome = await served_after_takeover(base_url, lot_id, auct, acknowledged)
        return acknowledged, welcome, replacement

    try:
        acknowledged, welcome, replacement = asyncio.run(scenario())
        assert cluster.owners("Lot", [lot_id])[lot_id] == replacement
        seen = scrape(cluster, replacement)
        assert seen.get('xplatform_node_takeovers_total{kind="warm"}', 0) >= 1, seen  # from its mirror
        assert seen.get('xplatform_node_takeovers_total{kind="cold"}', 0) == 0, seen
    except BaseException:
        print(cluster.logs())
        raise
    assert served_view(welcome) == replayed_view(cluster, lot_id)
    assert_stream_exact(cluster, lot_id, acknowledged)


def test_an_owner_killed_with_its_standby_is_loaded_cold_with_the_exact_state(cluster: Cluster) -> None:
    """kill -9 of a lot's owner and standby together: the third node loads the lot from the
    store (cold) and serves exactly the state a replay gives; nothing lost or doubled."""
    base_url = start(cluster, 3)
    lot_id = f"lot-{uuid.uuid4().hex[:6]}"
    shard = ("Lot", shard_of(EntityRef("Lot", lot_id), 8))

    async def scenario() -> tuple[list[str], dict[str, object], str]:
        auct, acknowledged = await opened(base_url, lot_id, 20)
        owner, standby = owner_and_standby(cluster, shard)
        await asyncio.to_thread(wait_for, lambda: caught_up(cluster, standby.node), "standby never caught up")
        third = next(n for n in ("node-a", "node-b", "node-c") if n not in (owner.node, standby.node))
        cluster.processes[owner.node].kill9()
        cluster.processes[standby.node].kill9()
        welcome = await served_after_takeover(base_url, lot_id, auct, acknowledged)
        return acknowledged, welcome, third

    try:
        acknowledged, welcome, third = asyncio.run(scenario())
        assert cluster.owners("Lot", [lot_id])[lot_id] == third
        seen = scrape(cluster, third)
        assert seen.get('xplatform_node_takeovers_total{kind="cold"}', 0) >= 1, seen
    except BaseException:
        print(cluster.logs())
        raise
    assert served_view(welcome) == replayed_view(cluster, lot_id)
    assert_stream_exact(cluster, lot_id, acknowledged)
