"""The sample auction's cast for sandbox tests: a lot, its users, and a lot ann opened."""

from __future__ import annotations

from domain import EntityRef
from domain.auction import Bidder, Lot
from infrastructure.persistence import EventJournal
from infrastructure.testkit import Sandbox

LOT = EntityRef("Lot", "vase")
ANN = {"sub": "ann", "role": "auctioneer"}
BOB = {"sub": "bob", "role": "bidder"}
CAT = {"sub": "cat", "role": "bidder"}


def opened_lot(journal: EventJournal | None = None, **sandbox: object) -> Sandbox:
    """A sandbox where ann (``c-ann``) opened LOT ("Ming vase", increment 5)."""
    kit = Sandbox(Lot, Bidder, journal=journal, **sandbox)  # type: ignore[arg-type]
    kit.connect(LOT, "c-ann", ANN)
    assert kit.client(LOT, "c-ann", {"type": "open", "title": "Ming vase", "increment": 5}).ok
    return kit
