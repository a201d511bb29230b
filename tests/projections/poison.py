"""A projection with a poison event, for the parking tests: the AuctionBoard, except that its
handler fails on the bid of 30 on ``lot-3…`` until the file ``XPLATFORM_TEST_POISON_FIXED``
names exists (the "fix", visible to the projector process and the replay command alike)."""

from __future__ import annotations

import os
from pathlib import Path

from projections.auction import AuctionBoard
from projections.changes import Change
from projections.events import EventEnvelope
from projections.projection import Document, handles

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
