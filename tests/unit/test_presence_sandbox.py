"""The presence sample domain (``domain/presence``) in the sandbox: every rule, its refusals
and its idempotency. Like the auction's, each test runs on the in-memory journal and on the
EventStoreDB journal (``sandbox_journal``, tests/conftest.py)."""

from __future__ import annotations

import sys

import pytest

from domain import EntityRef
from domain.presence import ENTITIES, Room, UserState
from infrastructure.persistence import EventJournal
from infrastructure.testkit import Sandbox

ANN = EntityRef("UserState", "ann")
BOB = EntityRef("UserState", "bob")
LOBBY = EntityRef("Room", "lobby")


@pytest.fixture
def kit(sandbox_journal: EventJournal | None) -> Sandbox:
    return Sandbox(*ENTITIES, journal=sandbox_journal)


def _online(kit: Sandbox, user: EntityRef, cid: str = "") -> None:
    assert kit.connect(user, cid or f"c-{user.entity_id}", {"sub": user.entity_id}).ok


# ---------------------------------------------------------------------- online, offline, watching
def test_the_users_own_connect_creates_them_online(kit: Sandbox) -> None:
    welcome = kit.connect(ANN, "c-ann", {"sub": "ann", "role": "anything"})
    assert welcome.ok and welcome.event_names == ["ConnectionAccepted"]
    assert welcome.reply.payload == {"type": "presence", "user": "ann", "status": "online", "text": "",
                                     "last_seen": 0.0, "devices": 1, "settings": {}, "rooms": []}
    assert kit.state(ANN).presence()["status"] == "online"
    assert kit.state(ANN).connection_claims("c-ann") == {"sub": "ann"}  # STORED_CLAIMS: only sub is kept


def test_watching_a_user_who_never_came_online_is_not_found_and_stores_nothing(kit: Sandbox) -> None:
    refused = kit.connect(ANN, "c-bob", {"sub": "bob"})
    assert not refused.ok and refused.reply.code == "not_found"
    assert kit.events(ANN) == []


def test_anyone_may_watch_and_hears_every_change_but_not_the_settings(kit: Sandbox) -> None:
    _online(kit, ANN)
    assert kit.client(ANN, "c-ann", {"type": "set_setting", "key": "theme", "value": "dark"}).ok
    watch = kit.connect(ANN, "c-bob", {"sub": "bob"})
    assert watch.ok and watch.reply.payload["status"] == "online" and watch.reply.payload["devices"] == 1
    assert "settings" not in watch.reply.payload and "rooms" not in watch.reply.payload
    changed = kit.client(ANN, "c-ann", {"type": "set_status", "status": "busy", "text": "in a meeting"})
    assert changed.ok and changed.event_names == ["StatusSet"]
    assert changed.payloads_for("c-bob", kit.state(ANN)) == [
        {"type": "presence", "user": "ann", "status": "busy", "text": "in a meeting", "last_seen": 0.0, "devices": 1}]
    assert kit.state(ANN).live_count_of("bob") == 1 and kit.state(ANN).devices() == 1  # a watcher is no device


def test_offline_when_the_last_device_goes_with_last_seen(kit: Sandbox) -> None:
    _online(kit, ANN, "phone")
    _online(kit, ANN, "laptop")
    kit.connect(ANN, "c-bob", {"sub": "bob"})
    kit.now += 60
    first = kit.disconnect(ANN, "phone")
    assert first.event_names == ["ConnectionDropped", "ConnectionForgotten"]  # one device left: still online
    assert first.payloads_for("c-bob", kit.state(ANN)) == []
    kit.now += 60
    last = kit.disconnect(ANN, "laptop")
    assert last.event_names == ["ConnectionDropped", "WentOffline", "ConnectionForgotten"]
    assert last.payloads_for("c-bob", kit.state(ANN)) == [
        {"type": "presence", "user": "ann", "status": "offline", "text": "", "last_seen": kit.now, "devices": 0}]
    assert kit.state(ANN).timers() == {}  # GRACE_PERIOD 0: no timer per user
    back = kit.connect(ANN, "phone", {"sub": "ann"})
    assert back.reply.payload["status"] == "online"
    assert back.payloads_for("c-bob", kit.state(ANN))[-1]["status"] == "online"
    kit.restart()
    assert kit.state(ANN).presence() == {"user": "ann", "status": "online", "text": "", "last_seen": last.message.timestamp,
                                         "devices": 1}


# ---------------------------------------------------------------------- only the user changes their state
def test_only_the_user_may_change_their_state(kit: Sandbox) -> None:
    _online(kit, ANN)
    kit.connect(ANN, "c-bob", {"sub": "bob"})
    for payload in ({"type": "set_status", "status": "away"}, {"type": "set_setting", "key": "k", "value": 1},
                    {"type": "join_room", "room": "lobby"}, {"type": "leave_room", "room": "lobby"}):
        refused = kit.client(ANN, "c-bob", payload)
        assert not refused.ok and refused.reply.code == "not_authorised", payload
        assert refused.events == [] and refused.tells == [] and refused.sends == []
    assert kit.event_names(ANN) == ["ConnectionAccepted", "ConnectionAccepted"]
    assert kit.events(LOBBY) == []


@pytest.mark.parametrize(("payload", "reason"), [
    ({"type": "set_status", "status": "offline"}, "status must be one of"),
    ({"type": "set_status", "status": "away", "text": "x" * 141}, "at most 140"),
    ({"type": "set_status", "status": "away", "text": "bell\x07"}, "printable"),
    ({"type": "set_setting", "key": "", "value": 1}, "key must be"),
    ({"type": "set_setting", "key": "k", "value": [1, 2]}, "value must be"),
    ({"type": "set_setting", "key": "k", "value": "v" * 257}, "at most 256"),
    ({"type": "join_room", "room": "no/slash"}, "a room ID is"),
])
def test_bad_input_is_refused_and_changes_nothing(kit: Sandbox, payload: dict[str, object], reason: str) -> None:
    _online(kit, ANN)
    before = kit.event_names(ANN)
    refused = kit.client(ANN, "c-ann", payload)
    assert not refused.ok and refused.reply.code == "rejected" and reason in refused.reply.reason
    assert refused.events == [] and refused.tells == [] and kit.event_names(ANN) == before


def test_wrong_types_are_refused_before_the_handler(kit: Sandbox) -> None:
    _online(kit, ANN)
    refused = kit.client(ANN, "c-ann", {"type": "set_status", "status": 3})
    assert not refused.ok and refused.reply.code == "bad_payload" and refused.events == []


def test_setting_the_same_status_again_changes_nothing(kit: Sandbox) -> None:
    _online(kit, ANN)
    first = kit.client(ANN, "c-ann", {"type": "set_status", "status": "away", "text": "lunch"})
    again = kit.client(ANN, "c-ann", {"type": "set_status", "status": "away", "text": "lunch"})  # a new message ID
    assert first.event_names == ["StatusSet"] and again.ok and again.events == [] and again.sends == []
    assert again.reply.payload == first.reply.payload


def test_a_duplicate_message_id_gets_the_original_outcome_also_after_a_restart(kit: Sandbox) -> None:
    _online(kit, ANN)
    first = kit.client(ANN, "c-ann", {"type": "set_status", "status": "busy"}, message_id="m1")
    kit.client(ANN, "c-ann", {"type": "set_status", "status": "away"}, message_id="m2")
    again = kit.client(ANN, "c-ann", {"type": "set_status", "status": "busy"}, message_id="m1")
    assert again.duplicate and again.reply == first.reply and again.events == []
    kit.restart()
    after = kit.client(ANN, "c-ann", {"type": "set_status", "status": "busy"}, message_id="m1")
    assert after.duplicate and after.reply == first.reply
    assert kit.state(ANN).status == "away"  # the duplicate did not set busy again


# ---------------------------------------------------------------------- settings
def test_settings_are_bounded_removable_and_pushed_only_to_the_users_devices(kit: Sandbox) -> None:
    _online(kit, ANN, "phone")
    _online(kit, ANN, "laptop")
    kit.connect(ANN, "c-bob", {"sub": "bob"})
    set_ = kit.client(ANN, "phone", {"type": "set_setting", "key": "theme", "value": "dark"})
    assert set_.ok and set_.reply.payload == {"theme": "dark"} and set_.event_names == ["SettingChanged"]
    assert set_.payloads_for("laptop", kit.state(ANN)) == [{"type": "settings", "settings": {"theme": "dark"}}]
    assert set_.payloads_for("c-bob", kit.state(ANN)) == []
    assert kit.client(ANN, "phone", {"type": "set_setting", "key": "theme", "value": "dark"}).events == []
    assert kit.client(ANN, "phone", {"type": "set_setting", "key": "n", "value": True}).event_names == ["SettingChanged"]
    assert kit.client(ANN, "phone", {"type": "set_setting", "key": "n", "value": 1}).event_names == ["SettingChanged"]
    removed = kit.client(ANN, "phone", {"type": "set_setting", "key": "theme"})
    assert removed.event_names == ["SettingRemoved"] and removed.reply.payload == {"n": 1}
    assert kit.client(ANN, "phone", {"type": "set_setting", "key": "theme"}).events == []  # gone already
    for i in range(UserState.MAX_SETTINGS - 1):
        assert kit.client(ANN, "phone", {"type": "set_setting", "key": f"k{i}", "value": i}).ok
    full = kit.client(ANN, "phone", {"type": "set_setting", "key": "one-more", "value": 1})
    assert not full.ok and f"at most {UserState.MAX_SETTINGS} settings" in full.reply.reason
    assert kit.client(ANN, "phone", {"type": "set_setting", "key": "k0", "value": "changed"}).ok  # a kept key may change
    kit.restart()
    assert len(kit.state(ANN).settings) == UserState.MAX_SETTINGS and kit.state(ANN).settings["k0"] == "changed"
    assert kit.connect(ANN, "tablet", {"sub": "ann"}).reply.payload["settings"]["k0"] == "changed"


# ---------------------------------------------------------------------- rooms
def test_joining_a_room_tells_it_the_presence_and_every_change_after(kit: Sandbox) -> None:
    _online(kit, ANN)
    watcher = kit.connect(LOBBY, "c-vic", {"sub": "vic"})
    assert watcher.reply.payload == {"type": "roster", "room": "lobby", "members": {}}
    joined = kit.client(ANN, "c-ann", {"type": "join_room", "room": "lobby"})
    assert joined.reply.payload == {"rooms": ["lobby"]} and joined.event_names == ["RoomJoined"]
    [told] = joined.chain
    assert told.target == LOBBY and told.event_names == ["MemberPresence"]
    assert told.payloads_for("c-vic", kit.state(LOBBY)) == [
        {"type": "member", "user": "ann", "status": "online", "text": "", "last_seen": 0.0}]
    assert kit.client(ANN, "c-ann", {"type": "join_room", "room": "lobby"}).events == []  # a member already
    busy = kit.client(ANN, "c-ann", {"type": "set_status", "status": "busy", "text": "focus"})
    assert [r.event_names for r in busy.everything()] == [["StatusSet"], ["MemberPresence"]]
    assert busy.sends[0].coalesce_key == "presence" and busy.chain[0].sends[0].coalesce_key == "member:ann"
    kit.now += 5
    gone = kit.disconnect(ANN, "c-ann")
    assert kit.state(LOBBY).roster() == {"ann": {"status": "offline", "text": "focus", "last_seen": kit.now}}
    assert gone.chain[0].event_names == ["MemberPresence"]
    _online(kit, ANN)
    left = kit.client(ANN, "c-ann", {"type": "leave_room", "room": "lobby"})
    assert left.reply.payload == {"rooms": []} and [r.event_names for r in left.everything()] == [["RoomLeft"], ["MemberLeft"]]
    assert left.chain[0].payloads_for("c-vic", kit.state(LOBBY)) == [{"type": "member_left", "user": "ann"}]
    assert kit.client(ANN, "c-ann", {"type": "leave_room", "room": "lobby"}).tells == []  # not a member: no change
    kit.restart()
    assert kit.state(LOBBY).roster() == {} and list(kit.state(ANN).rooms) == []


def test_a_room_hears_only_a_users_own_user_state(kit: Sandbox) -> None:
    forged = kit.tell(LOBBY, BOB, "member_presence", user="ann", status="away", text="", last_seen=0.0)
    assert not forged.ok and forged.reply.code == "not_authorised" and kit.events(LOBBY) == []
    by_room = kit.tell(LOBBY, EntityRef("Room", "ann"), "member_left", user="ann")
    assert not by_room.ok and by_room.reply.code == "not_authorised"
    _online(kit, ANN)
    assert kit.client(ANN, "c-ann", {"type": "join_room", "room": "lobby"}).ok
    not_the_room = kit.tell(ANN, EntityRef("Room", "other"), "room_full", room="lobby")
    assert not not_the_room.ok and not_the_room.reply.code == "not_authorised"
    assert list(kit.state(ANN).rooms) == ["lobby"]


def test_a_duplicate_tell_to_a_room_changes_nothing(kit: Sandbox) -> None:
    first = kit.tell(LOBBY, ANN, "member_presence", message_id="t1", user="ann", status="away", text="", last_seen=0.0)
    again = kit.tell(LOBBY, ANN, "member_presence", message_id="t1", user="ann", status="away", text="", last_seen=0.0)
    assert first.event_names == ["MemberPresence"] and again.duplicate and again.events == []
    same = kit.tell(LOBBY, ANN, "member_presence", user="ann", status="away", text="", last_seen=0.0)
    assert same.ok and same.events == []  # the same presence under a new ID: nothing to record


def test_a_full_room_refuses_a_newcomer_whose_user_state_forgets_it(kit: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Room, "MAX_MEMBERS", 1)
    _online(kit, ANN)
    _online(kit, BOB)
    assert kit.client(ANN, "c-ann", {"type": "join_room", "room": "lobby"}).ok
    refused = kit.client(BOB, "c-bob", {"type": "join_room", "room": "lobby"})
    assert refused.ok  # the join is recorded, the room's answer comes back as a message
    [room] = refused.chain
    assert room.events == [] and [t.type for t in room.tells] == ["room_full"]
    [back] = room.chain
    assert back.event_names == ["RoomLeft"]
    assert back.payloads_for("c-bob", kit.state(BOB)) == [{"type": "room_full", "room": "lobby", "rooms": []}]
    assert list(kit.state(BOB).rooms) == [] and list(kit.state(LOBBY).roster()) == ["ann"]


def test_rooms_per_user_are_bounded(kit: Sandbox) -> None:
    _online(kit, ANN)
    for i in range(UserState.MAX_ROOMS):
        assert kit.client(ANN, "c-ann", {"type": "join_room", "room": f"r{i}"}).ok
    refused = kit.client(ANN, "c-ann", {"type": "join_room", "room": "one_more"})
    assert not refused.ok and f"at most {UserState.MAX_ROOMS} rooms" in refused.reply.reason and refused.tells == []


# ---------------------------------------------------------------------- small entities
def test_a_user_who_only_came_online_holds_no_state_of_their_own(kit: Sandbox) -> None:
    """The class-level defaults: nothing per instance but the platform's parts until an event
    changes the user's state (what lets a node hold 1M+ of them)."""
    _online(kit, ANN)
    own = set(vars(kit.state(ANN))) - {"_id", "_version", "_created_on", "_modified_on", "_pending_events",
                                        "platform"}  # the platform's part: connections, timers, the reply window
    assert own == set()
    kit.restart()
    restored = kit.state(ANN)
    assert {"status", "text", "last_seen", "settings", "rooms"}.isdisjoint(vars(restored))
    assert sys.getsizeof(vars(restored)) < sys.getsizeof({f"k{i}": i for i in range(20)})
