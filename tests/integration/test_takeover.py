"""Single writer against zombies: a new owner's takeover marker makes the old owner's
writes fail, and the old owner then refuses to serve the entity (two nodes, one store)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgpack

from domain import ClientMessage, Connect, EntityRef
from infrastructure.bootstrap import build_platform
from infrastructure.runtime.sharding import StaticShards
from infrastructure.settings import Settings
from tests.support.entities import Counter

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
