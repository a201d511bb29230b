"""Single writer against zombies: a new owner's takeover marker makes the old owner's
writes fail, and the old owner then refuses to serve the entity (two nodes, one store);
a fenced node writes and acknowledges nothing even while its lease still runs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgpack
import pytest

from domain import ClientMessage, Connect, EntityRef, Reply
from infrastructure.cluster.allocation import Assignment, ShardOwner
from infrastructure.cluster.ownership import Ownership, OwnershipState
from infrastructure.persistence import RecorderJournal
from infrastructure.runtime.sharding import StaticShards
from infrastructure.settings import Settings
from ops.wiring.dev import build_platform
from tests.support.entities import Counter
from tests.support.journals import BlockingJournal

EVERY_SHARD = {"Counter": set(range(64))}


def test_zombie_owner_cannot_write_after_takeover(tmp_path: Path) -> None:
    async def scenario() -> None:
        ref = EntityRef("Counter", "contested")
        settings = Settings(store="sqlite", data_dir=str(tmp_path))
        old = build_platform(settings.with_(node_id="old"), entities=[Counter], ownership=StaticShards(64, EVERY_SHARD, epoch=1))
        new = build_platform(settings.with_(node_id="new"), entities=[Counter], ownership=StaticShards(64, EVERY_SHARD, epoch=2))
        async with old, new:
            def add(n: int, mid: str) -> ClientMessage:
                return ClientMessage(mid, time.time(), "c", msgpack.packb({"type": "add", "n": n}))

            assert (await old.transport.ask(ref, Connect("c1", time.time(), "c", {"sub": "u"}))).ok
            assert (await old.transport.ask(ref, add(1, "m1"))).payload == 1
            # The shard moves to "new" (epoch 2) while "old" still believes it owns it (zombie).
            assert (await new.transport.ask(ref, add(10, "m2"))).payload == 11
            zombie = await old.transport.ask(ref, add(100, "m3"))
            assert not zombie.ok and zombie.retryable  # its stale append failed
            again = await old.transport.ask(ref, add(100, "m3"))
            assert not again.ok and "newer owner" in again.reason  # and it no longer serves it
            await asyncio.sleep(0.05)
            names = [e.topic.rsplit(".", 1)[-1] for e in new.journal.read(ref.stream_id)]
            assert names == ["OwnerChanged", "ConnectionAccepted", "Added", "OwnerChanged", "Added"]
            stored = new.journal.read(ref.stream_id)
            assert [e.originator_version for e in stored] == [1, 2, 3, 4, 5]  # contiguous
            markers = [msgpack.unpackb(e.state)["epoch"] for e in stored if e.topic.endswith("OwnerChanged")]
            assert markers == [1, 2]  # nothing of the zombie (epoch 1) after the epoch-2 marker
            assert (await new.transport.ask(ref, add(5, "m4"))).payload == 16

    asyncio.run(scenario())


@pytest.mark.parametrize("fence", ["suspended", "lease_ran_out"])
def test_fenced_node_answers_nothing_and_writes_nothing(tmp_path: Path, fence: str) -> None:
    """``suspended``: FENCED (ZooKeeper connection suspended) with the lease still valid.
    ``lease_ran_out``: still SERVING as far as kazoo knows, but the lease expired (a process
    paused past it: a zombie). Either way the append already in flight finishes, nothing
    processed before the fence is written or acknowledged, new messages are refused."""
    settings = Settings(store="sqlite", data_dir=str(tmp_path), node_id="a")
    journal = BlockingJournal(RecorderJournal(settings.journal_env()))
    journal.release.set()
    ownership = Ownership("a", 64)
    ownership.map_changed(Assignment(1, {"Counter": [ShardOwner("a", 1)] * 64}))
    ownership.connected()
    ownership.renew(time.monotonic() + 3600)  # the session is vouched for long after this test
    ref = EntityRef("Counter", "fenced")

    def add(mid: str) -> ClientMessage:
        return ClientMessage(mid, time.time(), "c", msgpack.packb({"type": "add", "n": 1}))

    async def scenario() -> None:
        async with build_platform(settings, entities=[Counter], journal=journal, ownership=ownership) as p:
            assert (await p.transport.ask(ref, Connect("c1", time.time(), "c", {"sub": "u"}))).ok
            try:
                journal.release.clear()
                journal.entered.clear()
                replies: list[Reply] = []
                p.node.deliver(ref, add("in-flight"), replies.append)
                await asyncio.to_thread(journal.entered.wait, 5)  # its append is in the store's hands
                p.node.deliver(ref, add("collected"), replies.append)  # processed, waiting for the next append
                if fence == "suspended":
                    ownership.suspended()
                    assert ownership.state is OwnershipState.FENCED and ownership.leased()
                else:
                    ownership.lease_until = time.monotonic() - 1  # what a long pause leaves behind
                    assert ownership.state is OwnershipState.SERVING and not ownership.leased()
                p.node.deliver(ref, add("after-fence"), replies.append)
                journal.release.set()
                await p.node.drain()
                answers = {r.message_id: (r.ok, r.retryable) for r in replies}
                assert answers == {"in-flight": (True, False), "collected": (False, True), "after-fence": (False, True)}
                names = [e.topic.rsplit(".", 1)[-1] for e in journal.read(ref.stream_id)]
                assert names == ["OwnerChanged", "ConnectionAccepted", "Added"]  # only the append already in flight
                peek = await p.transport.ask(ref, ClientMessage("peek", time.time(), "c", msgpack.packb({"type": "peek"})))
                assert (peek.ok, peek.retryable) == (False, True)  # not even a read is answered
                assert ownership.leased() == (fence == "suspended")  # suspended: all while the lease was valid
            finally:
                journal.release.set()  # a failed check must not leave the stop waiting for the store

    asyncio.run(scenario())


def test_an_owner_that_gets_the_shard_back_answers_from_the_store_not_its_old_copy(tmp_path: Path) -> None:
    """The shard goes to another node and comes back without this node ever seeing it leave
    (a map it missed, e.g. while its session was lost): its resident copy is stale. A
    message that writes nothing must still reflect the other owner's writes, so the copy is
    read again behind a new takeover marker before anything is answered."""
    async def scenario() -> None:
        ref = EntityRef("Counter", "returning")
        settings = Settings(store="sqlite", data_dir=str(tmp_path))
        first_shards = StaticShards(64, EVERY_SHARD, epoch=1)
        first = build_platform(settings.with_(node_id="first"), entities=[Counter], ownership=first_shards)
        other = build_platform(settings.with_(node_id="other"), entities=[Counter], ownership=StaticShards(64, EVERY_SHARD, epoch=2))
        async with first, other:
            def msg(mid: str, body: dict[str, object]) -> ClientMessage:
                return ClientMessage(mid, time.time(), "c", msgpack.packb(body))

            assert (await first.transport.ask(ref, Connect("c1", time.time(), "c", {"sub": "u"}))).ok
            assert (await first.transport.ask(ref, msg("m1", {"type": "add", "n": 1}))).payload == 1
            assert (await other.transport.ask(ref, msg("m2", {"type": "add", "n": 10}))).payload == 11  # epoch 2
            first_shards.current_epoch = 3  # the shard is back on "first", at a newer epoch
            peek = await first.transport.ask(ref, msg("p1", {"type": "peek"}))
            assert peek.ok and peek.payload == 11, peek  # not 1, the copy it held
            stored = first.journal.read(ref.stream_id)
            markers = [msgpack.unpackb(e.state)["epoch"] for e in stored if e.topic.endswith("OwnerChanged")]
            assert markers == [1, 2, 3]  # re-read behind its own new marker
            assert (await first.transport.ask(ref, msg("m3", {"type": "add", "n": 5}))).payload == 16
            exposition = first.node.metrics.exposition().decode()
            assert 'xplatform_node_entities_released_total{reason="stale_epoch"} 1.0' in exposition

    asyncio.run(scenario())


def test_a_refused_takeover_marker_is_not_counted_and_the_reload_behind_it_is(tmp_path: Path) -> None:
    """The new owner read the entity, but the old owner (a zombie) appended before the new
    owner's marker reached the store: the marker is refused, the queued message answered
    retryable, the entity read again behind a second marker. One takeover happened, and
    ``xplatform_node_takeovers_total`` says one (it counts durable markers, not attempts)."""
    async def scenario() -> None:
        ref = EntityRef("Counter", "raced")
        settings = Settings(store="sqlite", data_dir=str(tmp_path))
        journal = BlockingJournal(RecorderJournal(settings.with_(node_id="new").journal_env()))
        old = build_platform(settings.with_(node_id="old"), entities=[Counter], ownership=StaticShards(64, EVERY_SHARD, epoch=1))
        new = build_platform(settings.with_(node_id="new"), entities=[Counter], journal=journal,
                             ownership=StaticShards(64, EVERY_SHARD, epoch=2))
        async with old, new:
            def add(n: int, mid: str) -> ClientMessage:
                return ClientMessage(mid, time.time(), "c", msgpack.packb({"type": "add", "n": n}))

            assert (await old.transport.ask(ref, Connect("c1", time.time(), "c", {"sub": "u"}))).ok
            assert (await old.transport.ask(ref, add(1, "m1"))).payload == 1
            try:
                replies: list[Reply] = []
                new.node.deliver(ref, add(10, "m2"), replies.append)  # read at version 3; its marker waits
                assert await asyncio.to_thread(journal.entered.wait, 10)
                assert (await old.transport.ask(ref, add(100, "z"))).payload == 101  # the zombie gets in first
            finally:
                journal.release.set()
            await new.node.drain()
            assert [(r.message_id, r.ok, r.retryable) for r in replies] == [("m2", False, True)]
            again = await new.transport.ask(ref, add(10, "m2"))
            assert again.ok and again.payload == 111, again  # served behind the second marker, from the store
            stored = new.journal.read(ref.stream_id)
            markers = [msgpack.unpackb(e.state)["epoch"] for e in stored if e.topic.endswith("OwnerChanged")]
            assert markers == [1, 2]  # the refused marker left nothing
            exposition = new.node.metrics.exposition().decode()
            assert 'xplatform_node_takeovers_total{kind="cold"} 1.0' in exposition, exposition
            assert 'xplatform_node_takeovers_total{kind="warm"}' not in exposition

    asyncio.run(scenario())
