"""A journal and snapshots written before the entity's platform part had one owner still load,
replay and keep deduplicating, and what today's code stores has the same layout
(tests/fixtures/make_pre_platform_part_journal.py wrote the fixture with the code of commit
e63ae71: connections, timers, reply window, live count and owner epoch as attributes of the
entity in snapshots; ``_xp_mid``/``_xp_reply``/``_xp_from`` set on events as undeclared
attributes). The layout test keeps a rollback possible: a snapshot or event written today
reads the same to the code before."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from domain import EntityRef, Terminated, TimerFired
from domain.auction import Bidder, Lot
from domain.idempotency import LEGACY
from domain.messages import timer_message_id
from domain.platform_part import GRACE_TIMER
from infrastructure.persistence import RecorderJournal
from infrastructure.settings import Settings
from infrastructure.testkit import Sandbox

FIXTURE = Path(__file__).parent.parent / "fixtures" / "pre_platform_part.sqlite3"
LOT = EntityRef("Lot", "before-part")
BOB_ACCOUNT = EntityRef("Bidder", "bob")
GRACE_DUE = 1_800_000_030.0
"""When the fixture's grace timers of carol and dave are due (its sandbox started at 1.8e9)."""


@pytest.fixture
def kit(tmp_path: Path) -> Sandbox:
    shutil.copy(FIXTURE, tmp_path / "events.sqlite3")
    return Sandbox(Lot, Bidder, journal=RecorderJournal(Settings(store="sqlite", data_dir=str(tmp_path)).journal_env()))


def stored_state(kit: Sandbox, stored: Any) -> dict[str, Any]:
    state: dict[str, Any] = kit.mapper.transcoder.decode(stored.state)
    return state


def test_connections_timers_and_owner_epoch_load_from_the_old_snapshot_and_events(kit: Sandbox) -> None:
    lot = kit.state(LOT)
    # carol dropped before the snapshot, dave after it (his records are on events only).
    assert {cid: rec[1] for cid, rec in lot.platform.connections.items()} == {
        "c-ann": True, "c-bob": True, "c-carol": False, "c-dave": False}
    assert lot.live_count() == 2 and sorted(lot.live_connections()) == ["c-ann", "c-bob"]
    assert lot.connection_claims("c-carol") == {"sub": "carol", "role": "viewer"}
    assert lot.timers() == {f"{GRACE_TIMER}:c-{who}": (GRACE_DUE, GRACE_TIMER, {"connection_id": f"c-{who}"})
                            for who in ("carol", "dave")}
    assert lot.owner_epoch == 3 and lot.bid_count == 2
    assert kit.state(BOB_ACCOUNT).timers() == {"hold_check": (1_800_000_300.0, "hold_check", {})}


def test_the_message_ids_it_recorded_are_still_duplicates(kit: Sandbox) -> None:
    versions = [e.originator_version for e in kit.events(LOT)]
    # "bid-1" is in the old snapshot's window; "bid-2" and "chat-1" on events after it.
    first = kit.client(LOT, "c-bob", {"type": "bid", "amount": 100}, message_id="bid-1")
    assert first.duplicate and first.reply.payload == {"status": "pending", "bid_id": "bid-1"}
    second = kit.client(LOT, "c-bob", {"type": "bid", "amount": 110}, message_id="bid-2")
    assert second.duplicate and second.reply.payload == {"status": "accepted", "bid_id": "bid-2", "amount": 110}
    assert kit.client(LOT, "c-bob", {"type": "chat", "text": "hello"}, message_id="chat-1").duplicate
    assert kit.client(LOT, "c-ann", {"type": "open", "title": "Old vase"}, message_id="open-1").duplicate
    # The entity-derived ID the Lot sent bob's account (in the Bidder's old snapshot).
    assert kit.tell(BOB_ACCOUNT, LOT, "hold_credit", message_id="c3:bobbid-1/1", lot="before-part", minimum=100,
                    limit=150, bid=None, connection_id="c-bob").duplicate
    # Recorded per sender, as then: the same ID from another user is not a duplicate of bob's.
    assert not kit.client(LOT, "c-ann", {"type": "chat", "text": "hi"}, message_id="chat-1").duplicate
    # The refusal was remembered only while resident: not carried over.
    assert not kit.client(LOT, "c-bob", {"type": "bid", "amount": 1}, message_id="bid-low").duplicate
    assert [e.originator_version for e in kit.events(LOT)] == [*versions, versions[-1] + 1]  # only ann's chat
    assert kit.state(LOT).platform.seen.count(LEGACY) == 0  # every old entry kept its sender


def test_the_old_grace_timers_fire_once_and_the_connections_leave(kit: Sandbox) -> None:
    lot = kit.state(LOT)  # resident: the sandbox fires the timers of resident entities
    fired = kit.advance(31)
    assert sorted(r.message.key for r in fired if isinstance(r.message, TimerFired)) == [
        f"{GRACE_TIMER}:c-carol", f"{GRACE_TIMER}:c-dave"]
    assert [e for r in fired for e in r.event_names] == ["TimerStopped", "ConnectionForgotten"] * 2
    assert sorted(lot.platform.connections) == ["c-ann", "c-bob"] and lot.timer(f"{GRACE_TIMER}:c-carol") is None
    key = f"{GRACE_TIMER}:c-carol"
    again = kit.deliver(LOT, TimerFired(timer_message_id(key, GRACE_DUE), GRACE_DUE, GRACE_TIMER, key,
                                        {"connection_id": "c-carol"}))
    assert again.duplicate and again.events == []


def test_what_is_stored_today_has_the_old_layout(kit: Sandbox) -> None:
    old_snapshot = kit.journal.latest_snapshot(LOT.stream_id)
    assert old_snapshot is not None
    old_layout = stored_state(kit, old_snapshot)["state"]
    assert kit.client(LOT, "c-bob", {"type": "chat", "text": "new"}, message_id="chat-2").ok
    kit.restart()  # snapshots (round-tripped through the codec) and reloads
    new_snapshot = kit.journal.latest_snapshot(LOT.stream_id)
    assert new_snapshot is not None and new_snapshot.originator_version > old_snapshot.originator_version
    new_layout = stored_state(kit, new_snapshot)["state"]
    platform_keys = {"_connections", "_timers", "_seen", "_live", "_epoch"}
    assert platform_keys <= set(old_layout) and set(new_layout) == set(old_layout)
    assert {k: new_layout[k] for k in platform_keys - {"_seen"}} == {
        **{k: old_layout[k] for k in platform_keys - {"_seen", "_timers", "_connections"}},
        "_connections": {**old_layout["_connections"], "c-dave": [{"sub": "dave", "role": "viewer"}, False, "connect-dave"]},
        "_timers": {**old_layout["_timers"], f"{GRACE_TIMER}:c-dave": [GRACE_DUE, GRACE_TIMER, {"connection_id": "c-dave"}]},
    }
    assert list(new_layout["_seen"][0]) == [*old_layout["_seen"][0], "c3:bobbid-2", "c3:bobchat-1", "s0:sandbox-2",
                                            "c3:bobchat-2"]  # in the order processed
    # The message's outcome on its last event under the keys events were always stored with.
    last = stored_state(kit, list(kit.journal.read(LOT.stream_id))[-1])
    assert (last["_xp_mid"], last["_xp_from"], last["_xp_reply"]) == ("chat-2", "c3:bob", [True, {"posted": "chat-2"}, "", ""])
    assert kit.client(LOT, "c-bob", {"type": "chat", "text": "new"}, message_id="chat-2").duplicate
    assert kit.client(LOT, "c-bob", {"type": "bid", "amount": 100}, message_id="bid-1").duplicate


def test_platform_events_are_stored_with_the_topics_they_always_had(kit: Sandbox) -> None:
    old = [s.topic for s in kit.journal.read(LOT.stream_id)]
    assert "domain.entity:Entity.ConnectionAccepted" in old and "domain.entity:Entity.TimerStarted" in old
    kit.state(LOT)  # resident: its grace timers fire on advance
    # (explicit message IDs: a new sandbox's own "sandbox-N" are the fixture's standard-sender IDs)
    kit.connect(LOT, "c-dave", {"sub": "dave", "role": "viewer"}, message_id="connect-dave-2")  # resumed
    kit.connect(LOT, "c-eve", {"sub": "eve", "role": "viewer"}, message_id="connect-eve")
    kit.deliver(LOT, Terminated("eve-gone", kit.now, "c-eve"))
    kit.advance(31)  # carol's and eve's grace timers: TimerStopped, ConnectionForgotten
    kit.given(LOT, Lot.OwnerChanged, epoch=4, node="new-node")  # a takeover marker (the node's)
    lot = kit.state(LOT)
    new = [s.topic for s in kit.journal.read(LOT.stream_id)][len(old):]
    assert sorted(set(new)) == [f"domain.entity:Entity.{name}" for name in (
        "ConnectionAccepted", "ConnectionDropped", "ConnectionForgotten", "ConnectionResumed", "OwnerChanged",
        "TimerStarted", "TimerStopped")]
    assert lot.owner_epoch == 4 and sorted(lot.platform.connections) == ["c-ann", "c-bob", "c-dave"]
