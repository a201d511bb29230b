"""The state-node runtime over real stores: SQLite file by default, every store where the
test takes ``store_settings`` (SQLite, PostgreSQL server, memory, EventStoreDB)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgpack

from domain import ClientMessage, Connect, EntityRef, Reply, Terminated
from domain.auction import Bidder, Lot
from infrastructure.persistence import EventJournal, RecorderJournal, StreamWrite, new_mapper
from infrastructure.settings import Settings
from ops.wiring.dev import Platform, build_platform
from tests.support.entities import Counter
from tests.support.journals import BlockingJournal


class Counter40(Counter):
    """A Counter without its own snapshot interval (the node's setting applies)."""

    CATEGORY = "Counter40"
    SNAPSHOT_EVERY = 0

CLAIMS = {"sub": "u1", "role": "bidder"}


def run(scenario: Callable[[Platform], Awaitable[None]], settings: Settings, journal: EventJournal | None = None,
        entities: Sequence[type] = (Counter, Lot, Bidder)) -> None:
    async def main() -> None:
        async with build_platform(settings, entities=entities, journal=journal) as platform:
            try:
                await scenario(platform)
            finally:
                if isinstance(journal, BlockingJournal):
                    journal.release.set()  # a failed scenario must not leave the stop waiting for it

    asyncio.run(main())


class Recorder:
    """Outbound sink that records what edges would receive."""

    def __init__(self) -> None:
        self.published: list[tuple[EntityRef, Any]] = []

    def publish(self, source: EntityRef, effect: Any) -> None:
        self.published.append((source, effect))


async def connect(p: Platform, ref: EntityRef, cid: str = "c1", claims: dict[str, Any] = CLAIMS) -> Reply:
    return await p.transport.ask(ref, Connect(f"connect-{cid}-{time.time_ns()}", time.time(), cid, claims))


async def client(p: Platform, ref: EntityRef, payload: dict[str, Any] | bytes, mid: str, cid: str = "c1") -> Reply:
    raw = payload if isinstance(payload, bytes) else msgpack.packb(payload)
    return await p.transport.ask(ref, ClientMessage(mid, time.time(), cid, raw))


def stored(p: Platform, ref: EntityRef) -> list[int]:
    return [e.originator_version for e in p.journal.read(ref.stream_id)]


# ---------------------------------------------------------------------------- durability
def test_group_commit_never_releases_a_reply_before_its_events_are_durable(tmp_path: Any) -> None:
    settings = Settings(store="sqlite", data_dir=str(tmp_path))
    journal = BlockingJournal(RecorderJournal(settings.journal_env()))
    journal.release.set()  # let the connects through
    sink = Recorder()

    async def scenario(p: Platform) -> None:
        p.transport.subscribe(sink)
        a, b, c = (EntityRef("Counter", x) for x in "abc")
        for ref in (a, b, c):
            await connect(p, ref)
        journal.release.clear()
        journal.entered.clear()
        journal.calls.clear()
        first = asyncio.create_task(client(p, a, {"type": "add", "n": 1}, "m-a"))
        await asyncio.to_thread(journal.entered.wait, 5)  # append of a is in flight, blocked
        # While it blocks, messages for b and c are processed and collect for the next append.
        second = asyncio.create_task(client(p, b, {"type": "add", "n": 2}, "m-b"))
        third = asyncio.create_task(client(p, c, {"type": "add", "n": 3}, "m-c"))
        await asyncio.sleep(0.3)
        assert not first.done() and not second.done() and not third.done(), "a reply escaped before durability"
        assert sink.published == [], "an outbound message escaped before durability"
        assert stored(p, a) == [1] and stored(p, b) == [1]  # only the connect events are durable
        assert p.node.resident(b).total == 2  # processed (pipelined) but not acknowledged
        journal.release.set()
        replies = await asyncio.gather(first, second, third)
        assert [r.payload for r in replies] == [1, 2, 3]
        assert stored(p, a) == [1, 2] and stored(p, b) == [1, 2] and stored(p, c) == [1, 2]
        assert journal.calls == [["Counter-a"], ["Counter-b", "Counter-c"]]  # b and c in ONE append
        assert len(sink.published) == 3

    run(scenario, settings, journal)


def test_the_next_append_is_under_way_before_the_previous_batch_is_answered(tmp_path: Any) -> None:
    """Group commit pipelines: when a batch is durable, the writes collected meanwhile go to
    the store BEFORE the batch's replies are sent, so the database works while the loop
    answers. Seen from the first reply: the second append has already reached the store."""
    settings = Settings(store="sqlite", data_dir=str(tmp_path))
    journal = BlockingJournal(RecorderJournal(settings.journal_env()))
    journal.release.set()

    async def scenario(p: Platform) -> None:
        a, b = EntityRef("Counter", "pipe-a"), EntityRef("Counter", "pipe-b")
        for ref in (a, b):
            await connect(p, ref)
        journal.release.clear()
        journal.entered.clear()
        journal.calls.clear()
        appends_seen_by_first_reply: list[int] = []
        replies: list[Reply] = []

        def first_reply(reply: Reply) -> None:
            # On the loop thread, as every reply: the writer thread is free to enter the next
            # append meanwhile (bounded wait: on failure this records 1 after 5 s).
            deadline = time.monotonic() + 5
            while len(journal.calls) < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            appends_seen_by_first_reply.append(len(journal.calls))
            replies.append(reply)

        p.node.deliver(a, ClientMessage("m-a", time.time(), "c1", msgpack.packb({"type": "add", "n": 1})), first_reply)
        await asyncio.to_thread(journal.entered.wait, 5)  # a's append is in flight, blocked
        p.node.deliver(b, ClientMessage("m-b", time.time(), "c1", msgpack.packb({"type": "add", "n": 2})),
                       replies.append)  # collects for the next append
        journal.release.set()
        await p.node.drain()
        assert journal.calls == [["Counter-pipe-a"], ["Counter-pipe-b"]]
        assert appends_seen_by_first_reply == [2]
        assert [(r.message_id, r.ok) for r in replies] == [("m-a", True), ("m-b", True)]
        assert stored(p, a) == [1, 2] and stored(p, b) == [1, 2]

    run(scenario, settings, journal)


def test_replies_of_messages_without_events_wait_for_earlier_writes(tmp_path: Any) -> None:
    """A read that sees an undurable state must not answer before that state is durable."""
    settings = Settings(store="sqlite", data_dir=str(tmp_path))
    journal = BlockingJournal(RecorderJournal(settings.journal_env()))
    journal.release.set()

    async def scenario(p: Platform) -> None:
        ref = EntityRef("Counter", "rw")
        await connect(p, ref)
        journal.release.clear()
        add = asyncio.create_task(client(p, ref, {"type": "add", "n": 5}, "m-add"))
        await asyncio.sleep(0.05)
        peek = asyncio.create_task(client(p, ref, {"type": "peek"}, "m-peek"))
        await asyncio.sleep(0.2)
        assert not peek.done(), "peek answered with a total that is not durable yet"
        journal.release.set()
        assert (await add).payload == 5 and (await peek).payload == 5

    run(scenario, settings, journal)


# ---------------------------------------------------------------------------- conflicts
def test_conflict_reloads_entity_and_rejects_with_retryable_error(store_settings: Settings) -> None:
    settings = store_settings

    async def scenario(p: Platform) -> None:
        ref = EntityRef("Counter", f"contested-{time.time_ns()}")  # the PostgreSQL database is per session
        await connect(p, ref)
        assert (await client(p, ref, {"type": "add", "n": 1}, "m1")).payload == 1
        # Someone else (a zombie owner, an operator's script) writes the stream behind our back.
        foreign = Counter.blank(ref.entity_id)
        foreign.version = 2
        foreign._added(n=1000)
        [event] = foreign.collect_events()
        assert p.journal.append([StreamWrite(ref.stream_id, 2, (new_mapper().to_stored_event(event),))]) == [None]

        reply = await client(p, ref, {"type": "add", "n": 1}, "m2")
        assert not reply.ok and reply.code == "retry" and reply.retryable
        assert stored(p, ref) == [1, 2, 3]  # nothing of m2 was stored
        retried = await client(p, ref, {"type": "add", "n": 1}, "m2")  # same message ID, resent
        assert retried.ok and retried.payload == 1002  # applied once, on the reloaded state
        assert stored(p, ref) == [1, 2, 3, 4]

    run(scenario, settings)


# ---------------------------------------------------------------------------- bad input
def test_bad_input_gets_typed_errors_and_changes_nothing(store_settings: Settings) -> None:
    async def scenario(p: Platform) -> None:
        ref = EntityRef("Counter", f"bad-{time.time_ns()}")
        await connect(p, ref)
        await client(p, ref, {"type": "add", "n": 2}, "ok-1")
        before, total = stored(p, ref), p.node.resident(ref).total

        cases = [
            ({"type": "nope"}, "unknown_message_type"),
            (b"\xc1\xff not msgpack", "bad_payload"),
            (msgpack.packb([1, 2]), "bad_payload"),
            ({"type": "add"}, "bad_payload"),
            ({"type": "add", "n": 1, "extra": True}, "bad_payload"),
            ({"type": "add", "n": -1}, "rejected"),
            ({"type": "boom"}, "handler_failed"),
            ({"type": "add_then_fail", "n": 50}, "handler_failed"),
            ({"type": "unencodable"}, "handler_failed"),
        ]
        for i, (payload, code) in enumerate(cases):
            reply = await client(p, ref, payload, f"bad-{i}")
            assert (reply.ok, reply.code) == (False, code), (payload, reply)
        unknown = await p.transport.ask(EntityRef("Nowhere", "x"), ClientMessage("u", time.time(), "c1", b""))
        assert (unknown.ok, unknown.code) == (False, "unknown_category")
        not_connected = await client(p, ref, {"type": "add", "n": 1}, "nc", cid="stranger")
        assert (not_connected.ok, not_connected.code) == (False, "not_connected")

        await asyncio.sleep(0.1)  # restores (reloads) complete
        assert stored(p, ref) == before
        assert (await client(p, ref, {"type": "peek"}, "peek")).payload == total
        assert (await client(p, ref, {"type": "add", "n": 1}, "ok-2")).payload == total + 1  # still serving

    run(scenario, store_settings)


def test_handler_failing_after_an_event_leaves_state_and_stream_as_before(store_settings: Settings) -> None:
    """Never half-applied: the failed message's event is neither stored nor kept in memory;
    the next message sees the old state (and appends at the old version)."""
    async def scenario(p: Platform) -> None:
        ref = EntityRef("Counter", f"half-{time.time_ns()}")
        await connect(p, ref)
        assert (await client(p, ref, {"type": "add", "n": 2}, "ok-1")).payload == 2
        before = stored(p, ref)

        failed = await client(p, ref, {"type": "add_then_fail", "n": 50}, "half")

        assert (failed.ok, failed.code) == (False, "handler_failed")
        assert (await client(p, ref, {"type": "peek"}, "peek")).payload == 2  # the next message: old state
        assert stored(p, ref) == before
        assert (await client(p, ref, {"type": "add", "n": 1}, "ok-2")).payload == 3
        assert stored(p, ref) == [*before, before[-1] + 1]

    run(scenario, store_settings)


def test_drain_returns_only_after_every_write_in_flight_is_settled(tmp_path: Any) -> None:
    """``drain()`` with one append blocked in the store and more collecting behind it: when
    it returns, every one of those messages has its reply and its events are stored."""
    settings = Settings(store="sqlite", data_dir=str(tmp_path))
    journal = BlockingJournal(RecorderJournal(settings.journal_env()))
    journal.release.set()

    async def scenario(p: Platform) -> None:
        refs = [EntityRef("Counter", f"drain-{i}") for i in range(4)]
        for ref in refs:
            await connect(p, ref)
        journal.release.clear()
        journal.entered.clear()
        replies: list[Reply] = []
        p.node.deliver(refs[0], ClientMessage("m-0", time.time(), "c1", msgpack.packb({"type": "add", "n": 1})),
                       replies.append)
        await asyncio.to_thread(journal.entered.wait, 5)  # the first append is in flight, blocked
        for i, ref in enumerate(refs[1:], 1):  # these collect for the next append
            p.node.deliver(ref, ClientMessage(f"m-{i}", time.time(), "c1", msgpack.packb({"type": "add", "n": 1})),
                           replies.append)
        assert replies == []
        asyncio.get_running_loop().call_later(0.2, journal.release.set)
        await p.node.drain()
        assert sorted((r.message_id, r.ok) for r in replies) == [(f"m-{i}", True) for i in range(4)]
        assert all(stored(p, ref) == [1, 2] for ref in refs)

    run(scenario, settings, journal)


# ---------------------------------------------------------------------------- lifecycle
def test_passivation_snapshot_reload_and_duplicate_after_reload(store_settings: Settings) -> None:
    settings = store_settings

    async def scenario(p: Platform) -> None:
        ref = EntityRef("Counter", f"sleepy-{time.time_ns()}")
        await connect(p, ref)
        replies = [await client(p, ref, {"type": "add", "n": i}, f"m{i}") for i in range(1, 13)]
        assert replies[-1].payload == 78
        assert p.node.passivate_idle(time.monotonic() + 1) >= 1
        assert p.node.resident(ref) is None
        snapshot = p.journal.latest_snapshot(ref.stream_id)
        assert snapshot is not None and snapshot.originator_version == 10  # every 5 events

        duplicate = await client(p, ref, {"type": "add", "n": 3}, "m3")  # reactivates from snapshot + tail
        assert duplicate.ok and duplicate.payload == 6  # the ORIGINAL outcome
        assert p.node.resident(ref).total == 78  # changed nothing
        assert stored(p, ref) == list(range(1, 14))
        metrics = p.node.metrics.exposition().decode()
        assert 'xplatform_node_messages_total{category="Counter",outcome="duplicate"} 1.0' in metrics
        assert "xplatform_node_entities_passivated_total 1.0" in metrics
        assert "xplatform_node_snapshots_total 2.0" in metrics  # versions 5 and 10
        assert "xplatform_node_entities_active 1.0" in metrics  # reactivated
        assert "xplatform_node_activation_duration_seconds_count 2.0" in metrics
        appends = float(re.search(r"^xplatform_node_append_duration_seconds_count (\S+)$", metrics, re.M).group(1))
        batched = float(re.search(r"^xplatform_node_append_batch_events_sum (\S+)$", metrics, re.M).group(1))
        assert appends >= 1 and batched == 13  # every stored event went through group commit

    run(scenario, settings)


def test_entities_fed_at_one_pace_snapshot_at_spread_versions_in_one_batch(tmp_path: Any) -> None:
    """Snapshots are spread over the last quarter of the interval by stream (no burst when
    many entities reach the interval together), never later than the interval; the ones a
    batch produces are saved together and all counted."""
    settings = Settings(store="sqlite", data_dir=str(tmp_path), snapshot_every=40)

    async def scenario(p: Platform) -> None:
        refs = [EntityRef("Counter40", f"pace-{i}") for i in range(12)]
        for ref in refs:
            await connect(p, ref)
        for i in range(45):  # versions 2..46: every entity passes 40
            await asyncio.gather(*(client(p, ref, {"type": "add", "n": 1}, f"m{i}") for ref in refs))
        versions = [p.journal.latest_snapshot(ref.stream_id).originator_version for ref in refs]
        assert all(30 <= v <= 40 for v in versions), versions
        assert len(set(versions)) >= 3, f"snapshots not spread: {versions}"
        assert f"xplatform_node_snapshots_total {float(len(refs))}" in p.node.metrics.exposition().decode()

    run(scenario, settings, entities=(Counter40,))


def test_settled_writes_leave_no_cyclic_garbage(tmp_path: Any) -> None:
    """A message's write, reply and closures are freed by reference counting when it is
    settled. Cycles there survive into the old generations and, at thousands of messages
    per second, made full collections of hundreds of thousands of objects (1 s pauses)."""
    import gc
    from collections import Counter as Tally

    settings = Settings(store="sqlite", data_dir=str(tmp_path))

    async def scenario(p: Platform) -> None:
        refs = [EntityRef("Counter", f"gc-{i}") for i in range(20)]
        for ref in refs:
            await connect(p, ref)
        for i in range(5):  # warm up (activations, caches)
            await asyncio.gather(*(client(p, ref, {"type": "add", "n": 1}, f"w{i}") for ref in refs))
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for i in range(20):
                await asyncio.gather(*(client(p, ref, {"type": "add", "n": 1}, f"m{i}") for ref in refs))
            gc.collect()
            kinds = Tally(type(o).__name__ for o in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        leaked = {k: n for k, n in kinds.items() if k in ("PendingWrite", "StreamWrite", "Outcome", "Reply", "StoredEvent")}
        assert leaked == {}, f"400 messages left cyclic garbage: {kinds.most_common(8)}"

    run(scenario, settings)


def test_grace_period_timer_and_durable_timers_fire(tmp_path: Any) -> None:
    settings = Settings(store="sqlite", data_dir=str(tmp_path))

    async def scenario(p: Platform) -> None:
        ref = EntityRef("Counter", "timers")
        await connect(p, ref, "c1")
        await connect(p, ref, "c2")
        await p.transport.ask(ref, Terminated("t1", time.time(), "c1", "socket closed"))
        await p.transport.ask(ref, Terminated("t2", time.time(), "c2", "socket closed"))
        await connect(p, ref, "c2")  # c2 comes back within the grace period
        assert (await client(p, ref, {"type": "remind", "delay": 0.05}, "r1", cid="c2")).ok
        await asyncio.sleep(0.4)
        await p.node.drain()  # the timers' writes (nobody awaits their replies) are durable now
        entity = p.node.resident(ref)
        assert entity.left == ["c1"]  # c1 cleaned up by the grace timer, c2 kept
        assert entity.is_live("c2") and entity.connection_claims("c1") is None
        assert entity.total == 100  # the reminder timer fired once
        assert entity.timers() == {}
        names = [e.topic.rsplit(".", 1)[-1] for e in p.journal.read(ref.stream_id)]
        assert names.count("Left") == 1 and names.count("Added") == 1

    run(scenario, settings)


def test_auction_flow_across_entities_on_every_store(store_settings: Settings) -> None:
    sink = Recorder()

    async def scenario(p: Platform) -> None:
        p.transport.subscribe(sink)
        lot = EntityRef("Lot", f"vase-{time.time_ns()}")
        assert (await connect(p, lot, "auct", {"sub": "ann", "role": "auctioneer"})).ok
        assert (await client(p, lot, {"type": "open", "title": "Vase"}, "open", cid="auct")).ok
        bidder = f"bob-{time.time_ns()}"
        assert (await connect(p, lot, "bob", {"sub": bidder, "role": "bidder"})).ok
        reply = await client(p, lot, {"type": "bid", "amount": 10}, "bid-1", cid="bob")
        assert reply.payload["status"] == "pending"
        for _ in range(500):  # the credit-line round trip: Lot -> Bidder -> Lot (generous under load)
            await asyncio.sleep(0.02)
            if p.node.resident(lot).high_bidder == bidder:
                break
        assert p.node.resident(lot).high_amount == 10
        names = [e.topic.rsplit(".", 1)[-1] for e in p.journal.read(EntityRef("Bidder", bidder).stream_id)]
        assert names[:2] == ["AccountOpened", "CreditHeld"]
        within = await client(p, lot, {"type": "bid", "amount": 12}, "bid-2", cid="bob")  # within the line
        assert within.payload["status"] == "accepted" and p.node.resident(lot).high_amount == 12
        states = [e.payload for src, e in sink.published if src == lot and getattr(e, "coalesce_key", None) == "state"]
        assert states[-1]["high_amount"] == 12

    run(scenario, store_settings)


# ---------------------------------------------------------------------------- idempotency per sender
def test_idempotency_is_per_sender_through_the_store(tmp_path: Any) -> None:
    """Issue 9 item 2 through the runtime and SQLite: a reused ID of another user is
    applied (not answered with his reply), another user's 1,400 refusals do not evict a
    victim's ID, and both still hold after passivation (reloaded from the store)."""
    lot = EntityRef("Lot", f"per-sender-{time.time_ns()}")

    async def scenario(p: Platform) -> None:
        assert (await connect(p, lot, "c-ann", {"sub": "ann", "role": "auctioneer"})).ok
        assert (await client(p, lot, {"type": "open", "title": "Vase"}, "open", "c-ann")).ok
        for cid, sub in (("c-bob", "bob"), ("c-cat", "cat")):
            assert (await connect(p, lot, cid, {"sub": sub, "role": "bidder"})).ok
        bob = await client(p, lot, {"type": "chat", "text": "bob's"}, "m-1", "c-bob")
        cat = await client(p, lot, {"type": "chat", "text": "cat's"}, "m-1", "c-cat")
        assert bob.payload == {"posted": "m-1"} and cat.ok and p.node.metrics.exposition().count(b"duplicate") == 0
        for i in range(1400):
            assert (await client(p, lot, {"type": "bid", "amount": 0}, f"junk-{i}", "c-cat")).code == "rejected"
        versions = stored(p, lot)
        assert (await client(p, lot, {"type": "chat", "text": "bob's"}, "m-1", "c-bob")) == bob
        await p.node.drain()
        assert p.node.passivate_idle(time.monotonic() + 1) >= 1 and p.node.resident(lot) is None
        assert (await client(p, lot, {"type": "chat", "text": "cat's"}, "m-1", "c-cat")) == cat
        assert (await client(p, lot, {"type": "chat", "text": "bob's"}, "m-1", "c-bob")) == bob
        assert stored(p, lot) == versions
        assert [c[1:] for c in p.node.resident(lot).chat] == [["bob", "bob's"], ["cat", "cat's"]]

    run(scenario, Settings(store="sqlite", data_dir=str(tmp_path)))
