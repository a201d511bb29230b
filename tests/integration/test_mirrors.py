"""Hot mirrors (infrastructure/runtime/mirrors.py) on a real SQLite store: a mirror equals
the replay of every entity's stream; a standby node promoted after the owner is killed
serves exactly the state a fresh replay gives, also when its feed lagged, and discards a
mirror that is ahead of the store."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from pathlib import Path

import msgpack
import psycopg
import pytest

from domain import ClientMessage, Connect, EntityRef
from infrastructure.metrics import MirrorMetrics
from infrastructure.persistence import FEED_POOL, RecorderJournal, StreamWrite, open_event_stream, open_subscriptions
from infrastructure.persistence.rehydrate import rehydrate
from infrastructure.persistence.subscriptions import EventFilter, Source
from infrastructure.runtime.mirror_groups import GroupMirrorFeed, group_name
from infrastructure.runtime.mirrors import FEED_POLL_S, Mirror, MirrorError, MirrorFeed, state_digest
from infrastructure.runtime.registry import EntityTypes
from infrastructure.runtime.sharding import StaticShards
from infrastructure.settings import Settings
from ops.local.servers import PostgresServer
from ops.wiring.dev import Platform, build_platform
from tests.conftest import eventstoredb_settings, postgres_settings
from tests.support.entities import Counter

EVERY_SHARD = {"Counter": set(range(64))}
TYPES = EntityTypes([Counter])


def add(n: int, mid: str) -> ClientMessage:
    return ClientMessage(mid, time.time(), "c", msgpack.packb({"type": "add", "n": n}))


def peek(mid: str) -> ClientMessage:
    return ClientMessage(mid, time.time(), "c", msgpack.packb({"type": "peek"}))


def standby_of(platform: Platform, after: int | None = None) -> tuple[Mirror, MirrorFeed]:
    """A mirror of every Counter on ``platform``'s node, fed from the start of its store,
    and the node's activations warm from it."""
    mirror = Mirror(TYPES, platform.journal, platform.node.mapper, metrics=MirrorMetrics(platform.node.metrics.registry))
    assert isinstance(platform.journal, RecorderJournal)
    feed = MirrorFeed(mirror, platform.journal.event_stream(poll_interval_s=FEED_POLL_S), after=after,
                      lag_every_s=0.05).start()  # polling as a state node's standby feed does
    platform.node.warm = mirror
    return mirror, feed


def assert_equals_replay(journal: RecorderJournal, platform: Platform, refs: list[EntityRef]) -> None:
    """Every served entity is what a fresh replay of its stream gives. (Served only messages
    that wrote events: a read's reply is remembered by the resident entity alone.)"""
    mapper = platform.node.mapper
    for ref in refs:
        fresh, _ = rehydrate(journal, mapper, Counter, ref)
        served = platform.node.resident(ref)
        assert served is not None, ref
        assert (served.version, state_digest(served, mapper)) == (fresh.version, state_digest(fresh, mapper)), ref


async def workload(platform: Platform, refs: list[EntityRef], rng: random.Random, tag: str, count: int) -> None:
    for i in range(count):
        ref = rng.choice(refs)
        reply = await platform.transport.ask(ref, add(rng.randint(1, 9), f"{tag}-{i}"))
        assert reply.ok, reply


def test_a_mirror_equals_the_replay_of_every_stream_and_finds_entities_written_before_it(store_settings: Settings) -> None:
    """On every store: entities written before the feed starts (found from the store,
    snapshots and all) and after it (applied event by event) are, at the mirrored version,
    what a replay gives; ``get`` hands out a copy; an unknown category is refused."""
    settings = store_settings.with_(node_id="a")
    run = uuid.uuid4().hex[:6]  # the session's PostgreSQL holds other tests' Counters too
    refs = [EntityRef("Counter", f"e{i}-{run}") for i in range(12)]
    rng = random.Random(7)

    async def scenario() -> None:
        async with build_platform(settings, entities=[Counter]) as owner:
            for ref in refs[:6]:
                assert (await owner.transport.ask(ref, Connect(f"c-{ref.entity_id}", time.time(), "c", {"sub": "u"}))).ok
            await workload(owner, refs[:6], rng, "before", 60)
            mirror = Mirror(TYPES, owner.journal, owner.node.mapper)
            stream = open_event_stream(settings, owner.journal)
            feed = MirrorFeed(mirror, stream, lag_every_s=0.05).start()
            try:
                for ref in refs[6:]:
                    assert (await owner.transport.ask(ref, Connect(f"c-{ref.entity_id}", time.time(), "c", {"sub": "u"}))).ok
                await workload(owner, refs, rng, "after", 120)
                await owner.node.drain()
                assert await asyncio.to_thread(feed.wait_caught_up, 30)
                assert set(refs) <= set(mirror.refs())
                for ref in refs:
                    fresh, _ = rehydrate(owner.journal, owner.node.mapper, Counter, ref)
                    copy = mirror.get(ref)
                    assert copy is not None and mirror.version(ref) == fresh.version == copy.version
                    assert state_digest(copy, owner.node.mapper) == state_digest(fresh, owner.node.mapper)
                    assert mirror.read(ref, lambda e: e.total) == fresh.total  # type: ignore[attr-defined]
                copy = mirror.get(refs[0])
                copy.total = -1  # type: ignore[union-attr]
                assert mirror.read(refs[0], lambda e: e.total) != -1  # type: ignore[attr-defined]
                assert mirror.lag_events == 0 and mirror.bytes > 0
            finally:
                feed.stop()
                stream.close()
        with pytest.raises(MirrorError):
            Mirror(TYPES, owner.journal, owner.node.mapper, categories=("Lot",))

    asyncio.run(scenario())


def test_promoted_mirrors_equal_a_fresh_replay_for_every_entity_after_repeated_kills(tmp_path: Path) -> None:
    """Five rounds: an owner takes random messages, then a burst it never sees settle, and is
    killed (it stops owning: a zombie whose in-flight appends may still land); its standby,
    mirroring from the store, becomes the owner at the next epoch and serves every entity.
    Every entity is promoted warm, and every served entity equals a fresh replay of its
    stream (version and state digest)."""
    settings = Settings(store="sqlite", data_dir=str(tmp_path))
    refs = [EntityRef("Counter", f"k{i}") for i in range(20)]
    rng = random.Random(13)

    async def scenario() -> None:
        epoch = 1
        owner_shards = StaticShards(64, EVERY_SHARD, epoch=epoch)
        owner = build_platform(settings.with_(node_id="n0"), entities=[Counter], ownership=owner_shards)
        await owner.start()
        for ref in refs:
            assert (await owner.transport.ask(ref, Connect(f"c-{ref.entity_id}", time.time(), "c", {"sub": "u"}))).ok
        retired: list[Platform] = []
        try:
            for round_ in range(1, 6):
                standby_shards = StaticShards(64, {}, epoch=epoch)
                standby = build_platform(settings.with_(node_id=f"n{round_}"), entities=[Counter], ownership=standby_shards)
                await standby.start()
                mirror, feed = standby_of(standby)
                try:
                    await workload(owner, refs, rng, f"r{round_}", 80)
                    await owner.node.drain()
                    assert await asyncio.to_thread(feed.wait_caught_up, 30)
                    for i in range(40):  # in flight when the owner dies
                        owner.node.deliver(rng.choice(refs), add(rng.randint(1, 9), f"r{round_}-burst-{i}"))
                    owner_shards.owned = {}  # killed: serves nothing more (its appends in flight may land)
                    epoch += 1
                    standby_shards.owned, standby_shards.current_epoch = EVERY_SHARD, epoch
                    raced = 0
                    for ref in refs:
                        for attempt in range(50):  # resent with the same ID until answered
                            reply = await standby.transport.ask(ref, add(1, f"p{round_}-{ref.entity_id}"))
                            if reply.ok:
                                break
                            # the zombie's append landed after the tail was read: the marker was refused
                            # (the entity is read again, from the store: its mirror copy was handed over)
                            assert reply.retryable, reply
                            raced += attempt == 0
                        assert reply.ok, reply
                    await owner.node.drain()
                    await standby.node.drain()
                    registry = standby.node.metrics.registry
                    warm, cold = (registry.get_sample_value("xplatform_node_takeovers_total", {"kind": kind}) or 0.0
                                  for kind in ("warm", "cold"))
                    assert warm + cold == len(refs), (warm, cold)  # one takeover each, counted once its marker is durable
                    assert cold <= raced, (warm, cold, raced)  # warm but where a zombie's late append refused the marker
                    assert_equals_replay(standby.journal, standby, refs)  # type: ignore[arg-type]
                except BaseException:
                    await standby.stop()  # not the owner yet: the outer cleanup does not know it
                    raise
                finally:
                    feed.stop()
                retired.append(owner)
                owner, owner_shards = standby, standby_shards
        finally:
            for platform in [*retired, owner]:
                await platform.stop()

    asyncio.run(scenario())


def test_a_lagging_standby_is_caught_up_from_the_store_before_it_serves(tmp_path: Path) -> None:
    """The standby's feed is paused while the owner goes on: promoted, it reads the tail after
    its mirror's version before answering (never the stale mirror), nothing lost or doubled."""
    settings = Settings(store="sqlite", data_dir=str(tmp_path))
    refs = [EntityRef("Counter", f"l{i}") for i in range(5)]

    async def scenario() -> None:
        owner_shards = StaticShards(64, EVERY_SHARD, epoch=1)
        standby_shards = StaticShards(64, {}, epoch=1)
        async with build_platform(settings.with_(node_id="a"), entities=[Counter], ownership=owner_shards) as owner, \
                build_platform(settings.with_(node_id="b"), entities=[Counter], ownership=standby_shards) as standby:
            mirror, feed = standby_of(standby)
            try:
                totals = {}
                for ref in refs:
                    assert (await owner.transport.ask(ref, Connect(f"c-{ref.entity_id}", time.time(), "c", {"sub": "u"}))).ok
                    totals[ref] = (await owner.transport.ask(ref, add(3, f"first-{ref.entity_id}"))).payload
                await owner.node.drain()
                assert await asyncio.to_thread(feed.wait_caught_up, 30)
                mirrored = {ref: mirror.version(ref) for ref in refs}
                feed.pause()
                for i in range(12):
                    for ref in refs:
                        totals[ref] = (await owner.transport.ask(ref, add(i + 1, f"late-{i}-{ref.entity_id}"))).payload
                await owner.node.drain()
                assert {ref: mirror.version(ref) for ref in refs} == mirrored  # the mirror is behind
                owner_shards.owned = {}
                standby_shards.owned, standby_shards.current_epoch = EVERY_SHARD, 2
                for ref in refs:
                    reply = await standby.transport.ask(ref, add(1, f"promote-{ref.entity_id}"))
                    assert reply.ok and reply.payload == totals[ref] + 1, (ref, reply)  # not on the mirror's stale total
                await standby.node.drain()
                exposition = standby.node.metrics.exposition().decode()
                assert f'xplatform_node_takeovers_total{{kind="warm"}} {len(refs)}.0' in exposition
                assert f'xplatform_mirror_promotions_total{{outcome="warm"}} {len(refs)}.0' in exposition
                assert_equals_replay(standby.journal, standby, refs)  # type: ignore[arg-type]
                for ref in refs:  # every acknowledged message once: 1 connect + 14 adds + 2 markers
                    assert [e.originator_version for e in standby.journal.read(ref.stream_id)] == list(range(1, 18))
            finally:
                feed.stop()

    asyncio.run(scenario())


def test_a_mirror_ahead_of_the_store_is_discarded_and_the_entity_loaded_cold(tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A mirror fed from another store that holds more of the stream than the node's store
    (impossible unless something is wrong): promotion discards it with an error log and a
    metric, and the entity is served as the node's store has it."""
    first = Settings(store="sqlite", data_dir=str(tmp_path / "first"), node_id="a")
    second = Settings(store="sqlite", data_dir=str(tmp_path / "second"), node_id="b")
    ref = EntityRef("Counter", "ahead")

    async def scenario() -> None:
        async with build_platform(first, entities=[Counter]) as writer, \
                build_platform(second, entities=[Counter], ownership=StaticShards(64, EVERY_SHARD, epoch=1)) as node:
            assert (await writer.transport.ask(ref, Connect("c1", time.time(), "c", {"sub": "u"}))).ok
            for i in range(3):
                await writer.transport.ask(ref, add(1, f"m{i}"))
            await writer.node.drain()
            prefix = writer.journal.read(ref.stream_id)[:2]  # the node's store holds only the first two
            assert node.journal.append([StreamWrite(ref.stream_id, 0, tuple(prefix))]) == [None]
            for i in range(3, 6):
                await writer.transport.ask(ref, add(1, f"m{i}"))
            await writer.node.drain()
            mirror = Mirror(TYPES, node.journal, node.node.mapper, metrics=MirrorMetrics(node.node.metrics.registry))
            assert isinstance(writer.journal, RecorderJournal)
            feed = MirrorFeed(mirror, writer.journal.event_stream(), lag_every_s=0.05).start()
            try:
                assert await asyncio.to_thread(feed.wait_caught_up, 30)
                assert mirror.version(ref) == 7
                node.node.warm = mirror
                with caplog.at_level(logging.ERROR, logger="infrastructure.runtime.mirrors"):
                    reply = await node.transport.ask(ref, peek("p"))
                assert reply.ok and reply.payload == 1, reply  # the node's store: one add
                assert any("mirror discarded" in r.getMessage() for r in caplog.records)
                exposition = node.node.metrics.exposition().decode()
                assert 'xplatform_mirror_promotions_total{outcome="discarded"} 1.0' in exposition
                assert 'xplatform_node_takeovers_total{kind="cold"} 1.0' in exposition
                await node.node.drain()
                assert [e.originator_version for e in node.journal.read(ref.stream_id)] == [1, 2, 3]  # + its marker
            finally:
                feed.stop()

    asyncio.run(scenario())


def test_a_budget_keeps_the_most_recently_updated_entities_and_an_evicted_one_returns_only_when_it_fits(
        tmp_path: Path) -> None:
    settings = Settings(store="sqlite", data_dir=str(tmp_path), node_id="a")
    refs = [EntityRef("Counter", f"b{i}") for i in range(6)]

    async def scenario() -> None:
        async with build_platform(settings, entities=[Counter]) as owner:
            for ref in refs:  # one after the other: the mirror meets them in this order
                assert (await owner.transport.ask(ref, Connect(f"c-{ref.entity_id}", time.time(), "c", {"sub": "u"}))).ok
                for i in range(3):
                    assert (await owner.transport.ask(ref, add(1, f"{ref.entity_id}-{i}"))).ok
            await owner.node.drain()
            assert isinstance(owner.journal, RecorderJournal)
            stream = owner.journal.event_stream()
            events = stream.read_all(None, 10_000)
            unlimited = Mirror(TYPES, owner.journal, owner.node.mapper)
            for event in events:
                unlimited.apply(event)
            assert len(unlimited) == 6
            budget = unlimited.bytes // 2
            mirror = Mirror(TYPES, owner.journal, owner.node.mapper, budget_bytes=budget)
            for event in events:
                mirror.apply(event)
            held = mirror.refs()
            assert 0 < len(held) < 6 and mirror.bytes <= budget
            assert held == refs[-len(held):]  # the least recently updated left first
            evicted = refs[0]
            assert mirror.promote(evicted) is None  # not held: an activation loads it cold
            assert (await owner.transport.ask(evicted, add(1, "later"))).ok
            await owner.node.drain()
            for event in stream.read_all(mirror.position, 100):
                mirror.apply(event)
            assert evicted not in mirror and mirror.bytes <= budget  # does not fit: not read again
            mirror.drop(lambda ref: ref != evicted)
            assert (await owner.transport.ask(evicted, add(1, "later-still"))).ok
            await owner.node.drain()
            for event in stream.read_all(mirror.position, 100):
                mirror.apply(event)
            assert mirror.refs() == [evicted]  # fits now: back, read from the store
            fresh, _ = rehydrate(owner.journal, owner.node.mapper, Counter, evicted)
            assert mirror.version(evicted) == fresh.version
            stream.close()

    asyncio.run(scenario())


def test_a_feed_with_a_pool_of_its_own_holds_its_named_connections_and_none_of_the_journals(
        postgres_server: PostgresServer) -> None:
    """``open_event_stream(own_pool=name)`` on PostgreSQL (a standby's feed): its connections
    carry ``name`` in pg_stat_activity (what tests/support/pg_stall.py stops to stall a
    feed) and are FEED_POOL's fixed number, its subscription and reads included; the
    journal's connections are others."""
    settings = postgres_settings(postgres_server)
    name = f"xplatform feed-{uuid.uuid4().hex[:6]}"
    journal = RecorderJournal(settings.journal_env())
    stream = open_event_stream(settings, journal, own_pool=name)
    try:
        subscription = stream.subscribe_all(None, EventFilter(categories=("Counter",)))  # LISTEN + its reads
        for _ in range(3):
            stream.read_all(None, 10)
        journal.read("Counter-none")  # the journal's own pool
        size = int(FEED_POOL["POSTGRES_POOL_SIZE"])
        counts = []
        with psycopg.connect(host="127.0.0.1", port=postgres_server.port, user=postgres_server.user,
                             dbname=postgres_server.dbname, autocommit=True) as conn:
            for _ in range(200):  # the pool opens its connections in the background
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone()
                counts.append(row[0] if row else 0)
                if counts[-1] == size:
                    break
                time.sleep(0.05)
        assert counts[-1] == size and max(counts) <= size, counts
        subscription.stop()
    finally:
        stream.close()
        journal.close()


def test_on_eventstoredb_a_persistent_subscription_group_feeds_the_mirror(eventstoredb_uri: str) -> None:
    """The design card: persistent subscriptions feed hot mirror replicas. The mirror of a
    node on EventStoreDB follows its own group (infrastructure/runtime/mirror_groups.py):
    entities stored before the group existed are found by a discovery scan, later events
    come through the group (acked once applied; the server shows the consumer); a paused
    feed applies nothing and catches up on resume; a restarted feed on the same group finds
    everything again. At every check the mirror equals a replay of every stream."""
    settings = eventstoredb_settings(eventstoredb_uri).with_(node_id="a")
    refs = [EntityRef("Counter", f"g{i}") for i in range(10)]
    rng = random.Random(11)
    group = group_name(settings.eventstoredb_stream_prefix, "a", ("Counter",))

    def mirrored_equals_replay(owner: Platform, mirror: Mirror) -> None:
        for ref in refs:
            fresh, _ = rehydrate(owner.journal, owner.node.mapper, Counter, ref)
            copy = mirror.get(ref)
            assert copy is not None and mirror.version(ref) == fresh.version, ref
            assert state_digest(copy, owner.node.mapper) == state_digest(fresh, owner.node.mapper), ref

    async def scenario() -> None:
        async with build_platform(settings, entities=[Counter]) as owner:
            for ref in refs[:5]:
                assert (await owner.transport.ask(ref, Connect(f"c-{ref.entity_id}", time.time(), "c", {"sub": "u"}))).ok
            await workload(owner, refs[:5], rng, "before", 40)
            subscriptions = open_subscriptions(settings)
            mirror = Mirror(TYPES, owner.journal, owner.node.mapper)
            feed = GroupMirrorFeed(mirror, subscriptions, subscriptions, group, lag_every_s=0.05).start()
            try:
                for ref in refs[5:]:
                    assert (await owner.transport.ask(ref, Connect(f"c-{ref.entity_id}", time.time(), "c", {"sub": "u"}))).ok
                await workload(owner, refs, rng, "after", 80)
                await owner.node.drain()
                assert await asyncio.to_thread(feed.wait_caught_up, 60)
                mirrored_equals_replay(owner, mirror)
                assert feed.acked >= 80  # the events after the group's creation came through it
                info = subscriptions.group_info(group, Source.all(mirror.filter))
                assert info.consumers == 1 and info.strategy.lower().replace("_", "") == "dispatchtosingle", info

                feed.pause()
                before = {ref: mirror.version(ref) for ref in refs}
                await workload(owner, refs, rng, "paused", 20)
                await owner.node.drain()
                await asyncio.sleep(0.3)
                assert {ref: mirror.version(ref) for ref in refs} == before  # nothing applied while paused
                assert feed.count_lag() > 0
                feed.resume()
                assert await asyncio.to_thread(feed.wait_caught_up, 60)
                mirrored_equals_replay(owner, mirror)
            finally:
                feed.stop()
            again = Mirror(TYPES, owner.journal, owner.node.mapper)  # the node restarted: same group
            feed = GroupMirrorFeed(again, subscriptions, subscriptions, group, lag_every_s=0.05).start()
            try:
                await workload(owner, refs, rng, "restarted", 20)
                await owner.node.drain()
                assert await asyncio.to_thread(feed.wait_caught_up, 60)
                mirrored_equals_replay(owner, again)
            finally:
                feed.stop()
                subscriptions.close()

    asyncio.run(scenario())
