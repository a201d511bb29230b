"""A projection with a poison event, for the parking tests: the AuctionBoard, except that its
handler fails on the bid of 30 on ``lot-3…`` until the file ``XPLATFORM_TEST_POISON_FIXED``
names exists (the "fix", visible to the projector process and the replay command alike)."""

from __future__ import annotations

import os
from pathlib import Path

from projections.auction import AuctionBoard
from projections.changes import Change, Set
from projections.events import EventEnvelope
from projections.projection import Document, Projection, handles

POISON_LOT_PREFIX, POISON_AMOUNT = "lot-3", 30


def fixed() -> bool:
    marker = os.environ.get("XPLATFORM_TEST_POISON_FIXED", "")
    return bool(marker) and Path(marker).exists()


class FlakyBoard(AuctionBoard):
    NAME = "flaky_board"

    @handles("Lot", "BidAccepted")
    def bid(self, event: EventEnvelope, doc: Document | None) -> list[Change]:
        if event.entity_id.startswith(POISON_LOT_PREFIX) and event.payload["amount"] == POISON_AMOUNT and not fixed():
            raise RuntimeError("poison: the handler cannot take this bid (until fixed)")
        return super().bid(event, doc)


class StubbornBoard(FlakyBoard):
    """The same poison with the "stop" policy: the persistent projector nacks it, the server
    retries and then parks it in the group."""

    NAME = "stubborn_board"
    ON_ERROR = "stop"


PROJECTIONS = (FlakyBoard,)


class FlakyHouse(Projection):
    """One document for the whole house, computed from itself (``Set`` of values read from
    the document, not ``Increment``): a stale view of it writes a wrong value, so a runner
    that remembers documents must forget them when ``replay-parked`` writes them. Poisoned
    like FlakyBoard. Order-independent (a count and a maximum), so a replay of parked events
    after the others ends where a from-scratch replay does."""

    NAME = "flaky_house"
    CATEGORIES = ("Lot", "Bidder")  # Bidder's events ignored, read so that the position reaches the head

    @handles("Lot", "BidAccepted", key=lambda event: "house")
    def bid(self, event: EventEnvelope, doc: Document | None) -> list[Change]:
        if event.entity_id.startswith(POISON_LOT_PREFIX) and event.payload["amount"] == POISON_AMOUNT and not fixed():
            raise RuntimeError("poison: the handler cannot take this bid (until fixed)")
        doc = doc or {}
        return [Set("house", {"bids": int(doc.get("bids", 0)) + 1,
                              "top": max(int(doc.get("top", 0)), int(event.payload["amount"]))})]
