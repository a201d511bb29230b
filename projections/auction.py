"""Sample projections of the auction domain (``domain.auction``): what a back office shows.

- :class:`AuctionBoard` (``auction_board``): one document per lot with its title, status,
  high bid, bid count, the last few bids and the winner. Reads ``Lot``.
- :class:`BidderSummary` (``bidder_summary``): one document per bidder across every lot:
  bids placed, best bid, the lots bid on (highest amount each), lots won, credit and what
  is held or spent. Reads ``Lot`` (bids, wins) and ``Bidder`` (the account): downstream
  aggregation over two categories.

Readers (the query API): the board is public to anyone signed in; a bidder's summary only
to that bidder (the token's ``sub``).

``PROJECTIONS`` lists both (the value a projector's setting names, like ``ENTITIES``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from projections.changes import Change, Increment, Push, Set, Unset, path
from projections.events import EventEnvelope
from projections.projection import Document, Projection, handles

RECENT_BIDS = 5
WINS_KEPT = 10


class AuctionBoard(Projection):
    """Every lot with its high bid and bid count."""

    NAME = "auction_board"
    CATEGORIES = ("Lot",)

    def read_filter(self, claims: Mapping[str, Any]) -> dict[str, Any] | None:
        return {} if claims.get("sub") else None  # every lot, for anyone signed in

    @handles("Lot", "Opened")
    def opened(self, event: EventEnvelope, doc: Document | None) -> list[Change]:
        p = event.payload
        return [Set(event.entity_id, {"lot": event.entity_id, "title": p["title"], "status": "open",
                                      "increment": p["increment"], "high_amount": 0, "high_bidder": None,
                                      "bid_count": 0, "winner": None, "opened_at": event.recorded_at})]

    @handles("Lot", "BidAccepted")
    def bid(self, event: EventEnvelope, doc: Document | None) -> list[Change]:
        p = event.payload
        return [Set(event.entity_id, {"high_amount": p["amount"], "high_bidder": p["bidder"]}),
                Increment(event.entity_id, {"bid_count": 1}),
                Push(event.entity_id, "recent_bids", ({"bidder": p["bidder"], "amount": p["amount"]},), cap=RECENT_BIDS)]

    @handles("Lot", "Closed")
    def closed(self, event: EventEnvelope, doc: Document | None) -> list[Change]:
        return [Set(event.entity_id, {"status": "closed", "winner": event.payload["winner"],
                                      "final_amount": event.payload["amount"]})]


def _bidder(event: EventEnvelope) -> str:
    return str(event.payload["bidder"])


def _winner_or_lot(event: EventEnvelope) -> str:
    return str(event.payload["winner"] or event.entity_id)


class BidderSummary(Projection):
    """Each bidder across lots: bids, best bid, lots bid on, wins, credit held and spent."""

    NAME = "bidder_summary"
    CATEGORIES = ("Lot", "Bidder")

    def read_filter(self, claims: Mapping[str, Any]) -> dict[str, Any] | None:
        sub = claims.get("sub")
        return {"_id": sub} if isinstance(sub, str) and sub else None  # a bidder's own summary only

    @handles("Lot", "BidAccepted", key=_bidder)
    def bid(self, event: EventEnvelope, doc: Document | None) -> list[Change]:
        bidder, amount = _bidder(event), event.payload["amount"]
        best = max(amount, (doc or {}).get("best_bid", 0))  # reads its own document: safe on redelivery
        return [Increment(bidder, {"bids": 1}),
                Set(bidder, {"bidder": bidder, "best_bid": best, path("lots", event.entity_id): amount})]

    @handles("Lot", "Closed", key=_winner_or_lot)
    def closed(self, event: EventEnvelope, doc: Document | None) -> list[Change]:
        winner, amount = event.payload["winner"], event.payload["amount"]
        if not winner:
            return []
        return [Increment(winner, {"lots_won": 1, "won_total": amount}),
                Push(winner, "wins", ({"lot": event.entity_id, "amount": amount},), cap=WINS_KEPT)]

    @handles("Bidder", "AccountOpened")
    def opened(self, event: EventEnvelope, doc: Document | None) -> list[Change]:
        return [Set(event.entity_id, {"bidder": event.entity_id, "credit": event.payload["credit"]})]

    @handles("Bidder", "CreditHeld")
    def held(self, event: EventEnvelope, doc: Document | None) -> list[Change]:
        return [Set(event.entity_id, {path("held", event.payload["lot"]): event.payload["amount"]})]

    @handles("Bidder", "HoldReleased")
    def released(self, event: EventEnvelope, doc: Document | None) -> list[Change]:
        return [Unset(event.entity_id, (path("held", event.payload["lot"]),))]

    @handles("Bidder", "CreditSpent")
    def spent(self, event: EventEnvelope, doc: Document | None) -> list[Change]:
        return [Unset(event.entity_id, (path("held", event.payload["lot"]),)),
                Increment(event.entity_id, {"spent": event.payload["amount"], "credit": -event.payload["amount"]})]


PROJECTIONS = (AuctionBoard, BidderSummary)

__all__ = ["PROJECTIONS", "AuctionBoard", "BidderSummary"]
