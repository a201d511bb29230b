"""Idempotency is per sender: one sender can neither read nor pre-empt another's message
IDs, refusals never evict durable results, and one sender's volume never evicts another
sender's recent IDs (issue 9, item 2). Each case was observed on the code before this
change (the comment says what it did)."""

from __future__ import annotations

import pytest

from domain import EntityMessage, EntityRef, TimerFired
from domain.auction import Bidder, Lot
from domain.platform_part import GRACE_TIMER
from infrastructure.testkit import Sandbox
from tests.support.auction import BOB, CAT, LOT, opened_lot

DAN = {"sub": "dan", "role": "viewer"}


@pytest.fixture
def kit() -> Sandbox:
    kit = opened_lot()
    kit.connect(LOT, "c-bob", BOB)
    kit.connect(LOT, "c-cat", CAT)
    return kit


def chats(kit: Sandbox) -> list[list[object]]:
    return [[e.user, e.text] for e in kit.events(LOT) if type(e).__name__ == "Chatted"]


def test_reusing_another_users_message_id_neither_reads_his_reply_nor_drops_the_message(kit: Sandbox) -> None:
    bob = kit.client(LOT, "c-bob", {"type": "bid", "amount": 100}, message_id="m-1")
    # Before: cat got bob's reply ({"status": "pending", ...}) and his chat was dropped.
    cat = kit.client(LOT, "c-cat", {"type": "chat", "text": "hi"}, message_id="m-1")
    assert not cat.duplicate and cat.ok and cat.reply.payload == {"posted": "m-1"}
    assert bob.reply.payload["status"] == "pending" and chats(kit) == [["cat", "hi"]]
    kit.restart()  # the same from the stored window (snapshot + events)
    again = kit.client(LOT, "c-cat", {"type": "chat", "text": "hi"}, message_id="m-1")
    assert again.duplicate and again.reply.payload == {"posted": "m-1"}
    bob_again = kit.client(LOT, "c-bob", {"type": "bid", "amount": 100}, message_id="m-1")
    assert bob_again.duplicate and bob_again.reply == bob.reply
    assert chats(kit) == [["cat", "hi"]]


def test_a_refusal_does_not_pre_empt_another_users_message_with_the_same_id(kit: Sandbox) -> None:
    refused = kit.client(LOT, "c-bob", {"type": "close"}, message_id="x")
    assert refused.reply.code == "rejected"
    # Before: the auctioneer's close was answered with bob's refusal and not applied.
    close = kit.client(LOT, "c-ann", {"type": "close"}, message_id="x")
    assert close.ok and not close.duplicate and kit.state(LOT).status == "closed"
    assert kit.client(LOT, "c-bob", {"type": "close"}, message_id="x").duplicate  # bob's own retry: his refusal


def test_another_senders_refusals_do_not_evict_a_victims_id(kit: Sandbox) -> None:
    first = kit.client(LOT, "c-bob", {"type": "chat", "text": "mine"}, message_id="victim-1")
    for i in range(1400):
        assert kit.client(LOT, "c-cat", {"type": "bid", "amount": 1}, message_id=f"junk-{i}").reply.code == "rejected"
    retry = kit.client(LOT, "c-bob", {"type": "chat", "text": "mine"}, message_id="victim-1")
    # Before: the refusals evicted "victim-1" from the 1,000-entry window; the retry was applied twice.
    assert retry.duplicate and retry.reply == first.reply and chats(kit) == [["bob", "mine"]]


def test_another_senders_volume_does_not_evict_a_victims_id(kit: Sandbox) -> None:
    first = kit.client(LOT, "c-bob", {"type": "chat", "text": "mine"}, message_id="victim-1")
    for i in range(1400):
        assert kit.client(LOT, "c-cat", {"type": "chat", "text": f"spam {i}"}, message_id=f"spam-{i}").ok
    kit.restart()
    retry = kit.client(LOT, "c-bob", {"type": "chat", "text": "mine"}, message_id="victim-1")
    assert retry.duplicate and retry.reply == first.reply
    assert sum(1 for user, _ in chats(kit) if user == "bob") == 1
    window = kit.state(LOT).platform.seen  # bounded: cat keeps at most his own share
    assert Lot.DEDUP_PER_SENDER * 7 // 8 <= window.count("c3:cat") <= Lot.DEDUP_PER_SENDER
    assert window.size <= Lot.DEDUP_WINDOW


def test_client_ids_and_entity_derived_ids_do_not_share_a_namespace() -> None:
    kit = opened_lot(deliver_entity_messages=False)
    kit.connect(LOT, "c-bob", BOB)
    kit.connect(LOT, "c-cat", CAT)
    bid = kit.client(LOT, "c-cat", {"type": "bid", "amount": 10}, message_id="b")
    [hold] = bid.tells
    held = kit.deliver(hold.to, EntityMessage(hold.message_id, kit.now, LOT, hold.type, hold.data))
    [answer] = held.tells
    # bob sends a client message whose ID is the Bidder's answer's ID (client IDs may hold '/').
    assert kit.client(LOT, "c-bob", {"type": "chat", "text": "x"}, message_id=answer.message_id).ok
    applied = kit.deliver(LOT, EntityMessage(answer.message_id, kit.now, hold.to, answer.type, answer.data))
    # Before: the Bidder's credit_held was taken for bob's chat; cat's bid was never accepted.
    assert not applied.duplicate and applied.event_names == ["LimitRaised", "BidAccepted"]
    assert kit.state(LOT).high_bidder == "cat"


def test_a_client_id_shaped_like_a_timer_id_does_not_cancel_the_timer(kit: Sandbox) -> None:
    kit.connect(LOT, "c-dan", DAN)
    kit.disconnect(LOT, "c-dan")
    from domain.messages import timer_message_id  # noqa: PLC0415 - new in this change: the others run on old code

    key = f"{GRACE_TIMER}:c-dan"
    due = kit.state(LOT).timer(key)[0]
    assert kit.client(LOT, "c-bob", {"type": "chat", "text": "x"}, message_id=timer_message_id(key, due)).ok
    fired = kit.deliver(LOT, TimerFired(timer_message_id(key, due), due, GRACE_TIMER, key, {"connection_id": "c-dan"}))
    # Before: the firing was taken for bob's chat: the grace timer never cleaned up (and
    # the sandbox's advance() fired it forever).
    assert not fired.duplicate and "ConnectionForgotten" in fired.event_names
    assert kit.state(LOT).connection_claims("c-dan") is None


def test_messages_derived_from_different_senders_causes_do_not_collide(kit: Sandbox) -> None:
    bob_account = EntityRef("Bidder", "bob")
    assert kit.client(LOT, "c-bob", {"type": "bid", "amount": 100}, message_id="x").ok  # tells his Bidder "x/1"
    close = kit.client(LOT, "c-ann", {"type": "close"}, message_id="x")  # tells bob's Bidder "won", derived from "x"
    assert close.ok and kit.state(LOT).winner == "bob"
    # Before: the close was taken for bob's bid (or its "won" for bob's hold): bob's credit stayed held.
    assert kit.state(bob_account).holds == {} and kit.state(bob_account).credit == Bidder.INITIAL_CREDIT - 100


def test_refusals_are_remembered_only_while_resident(kit: Sandbox) -> None:
    long = "x" * (Lot.CHAT_MAX_CHARS + 1)
    assert kit.client(LOT, "c-bob", {"type": "chat", "text": long}, message_id="r-1").reply.code == "rejected"
    assert kit.client(LOT, "c-bob", {"type": "chat", "text": long}, message_id="r-1").duplicate
    kit.restart()
    # Before: the snapshot carried the refusal. Refusals are not durable: re-evaluated after a reload.
    again = kit.client(LOT, "c-bob", {"type": "chat", "text": long}, message_id="r-1")
    assert not again.duplicate and again.reply.code == "rejected"


def test_refusals_of_many_senders_are_bounded_and_never_evict_results(kit: Sandbox) -> None:
    ok = kit.client(LOT, "c-bob", {"type": "chat", "text": "mine"}, message_id="keep")
    for n in range(40):
        cid = f"c-v{n}"
        kit.connect(LOT, cid, {"sub": f"v{n}", "role": "viewer"})
        for i in range(20):
            kit.client(LOT, cid, {"type": "bid", "amount": 1}, message_id=f"r-{i}")
    lot = kit.state(LOT)
    assert lot.platform.refused.size <= Lot.REFUSALS_KEPT
    assert all(lot.platform.refused.count(f"c{len(str(n)) + 1}:v{n}") <= Lot.DEDUP_PER_SENDER for n in range(40))
    assert kit.client(LOT, "c-bob", {"type": "chat", "text": "mine"}, message_id="keep").reply == ok.reply


def test_window_keys_of_different_senders_never_meet() -> None:
    from domain.idempotency import STANDARD, TIMERS, client_sender, entity_sender

    lot = entity_sender(EntityRef("Lot", "vase"))
    keys = [client_sender("ab") + "c", client_sender("a") + "bc", lot + "1", client_sender(lot) + "1",
            TIMERS + "x", STANDARD + "x", client_sender("t0:") + "x", client_sender("") + "c2:abc"]
    assert len(set(keys)) == len(keys)


def test_what_a_message_sends_derives_its_ids_from_that_message() -> None:
    """The same message, handled anew (a retry the entity no longer remembers, e.g. a refusal
    after passivation), sends the same IDs: the receiver then deduplicates the retry's
    messages. Two fresh sandboxes stand for the two handlings."""
    def sent_ids() -> list[str]:
        kit = opened_lot()
        kit.connect(LOT, "c-bob", BOB)
        bid = kit.client(LOT, "c-bob", {"type": "bid", "amount": 100}, message_id="bid-7")
        assert bid.ok and bid.tells
        return [tell.message_id for tell in bid.tells]

    first, again = sent_ids(), sent_ids()
    assert first == again and all("bid-7" in mid for mid in first)
