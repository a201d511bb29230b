"""A small auction run by the real entities in the sandbox: two lots, three bidders, bids
above and within credit lines, a chat line, a close with a winner and one without bids."""

from __future__ import annotations

from domain import EntityRef
from domain.auction import Bidder, Lot
from infrastructure.testkit import Sandbox

VASE, CLOCK, RUG = EntityRef("Lot", "vase"), EntityRef("Lot", "clock.1"), EntityRef("Lot", "rug")
ANN = {"sub": "ann", "role": "auctioneer"}
BIDDERS = {"bob": {"sub": "bob", "role": "bidder"}, "cat": {"sub": "cat", "role": "bidder"},
           "dan.x": {"sub": "dan.x", "role": "bidder"}}


def run_auction(kit: Sandbox | None = None) -> Sandbox:
    """Play the scenario; returns the sandbox holding what the entities stored."""
    kit = kit or Sandbox(Lot, Bidder)
    for lot, title in ((VASE, "Ming vase"), (CLOCK, "Clock"), (RUG, "Rug")):
        kit.connect(lot, "c-ann", ANN)
        assert kit.client(lot, "c-ann", {"type": "open", "title": title, "increment": 5}).ok
    for name, claims in BIDDERS.items():
        for lot in (VASE, CLOCK):
            kit.connect(lot, f"c-{name}", claims)
    bids = [(VASE, "bob", 10), (VASE, "cat", 20), (VASE, "bob", 25), (VASE, "bob", 30), (CLOCK, "dan.x", 100), (VASE, "dan.x", 40),
            (CLOCK, "bob", 200), (VASE, "cat", 45), (CLOCK, "dan.x", 300)]
    for lot, name, amount in bids:
        result = kit.client(lot, f"c-{name}", {"type": "bid", "amount": amount})
        assert result.ok, result.reply
    assert kit.client(VASE, "c-bob", {"type": "chat", "text": "nice vase"}).ok
    kit.disconnect(VASE, "c-cat")
    assert kit.client(VASE, "c-ann", {"type": "close"}).ok
    assert kit.client(RUG, "c-ann", {"type": "close"}).ok
    return kit
