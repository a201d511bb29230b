"""The sample projections (auction board, bidder summary) fed by what real entities stored
in the entity sandbox, checked against the entities' own state."""

from __future__ import annotations

from domain import EntityRef
from infrastructure.testkit import Sandbox
from projections.auction import AuctionBoard, BidderSummary
from projections.testkit import ProjectionSandbox
from tests.projections.auction_scenario import BIDDERS, CLOCK, RUG, VASE, run_auction


def project(kit: Sandbox, batch_size: int = 100) -> ProjectionSandbox:
    box = ProjectionSandbox(AuctionBoard(), BidderSummary())
    box.feed_from(kit, batch_size=batch_size)
    return box


def test_the_board_shows_every_lot_with_its_high_bid_and_bid_count() -> None:
    kit = run_auction()
    board = project(kit).documents("auction_board")
    assert set(board) == {"vase", "clock.1", "rug"}
    for ref in (VASE, CLOCK, RUG):
        lot = kit.state(ref)
        doc = board[ref.entity_id]
        assert (doc["title"], doc["status"], doc["high_amount"], doc["high_bidder"], doc["bid_count"], doc["winner"]) == \
            (lot.title, lot.status, lot.high_amount, lot.high_bidder, lot.bid_count, lot.winner)
    assert board["vase"]["recent_bids"] == [{"bidder": b, "amount": a} for b, a in
                                            (("cat", 20), ("bob", 25), ("bob", 30), ("dan.x", 40), ("cat", 45))]
    assert kit.state(VASE).bid_count == 6 and board["vase"]["final_amount"] == 45
    assert board["rug"]["bid_count"] == 0 and board["rug"]["winner"] is None and board["clock.1"]["status"] == "open"


def test_the_bidder_summary_aggregates_lots_and_accounts() -> None:
    kit = run_auction()
    summary = project(kit).documents("bidder_summary")
    assert set(summary) == set(BIDDERS)
    cat, bob, dan = summary["cat"], summary["bob"], summary["dan.x"]
    assert (cat["bids"], cat["best_bid"], cat["lots"]) == (2, 45, {"vase": 45})
    assert (bob["bids"], bob["best_bid"], bob["lots"]) == (4, 200, {"vase": 30, "clock%2E1": 200})  # IDs escaped as keys
    assert (dan["bids"], dan["lots"]) == (3, {"clock%2E1": 300, "vase": 40})
    assert cat["lots_won"] == 1 and cat["wins"] == [{"lot": "vase", "amount": 45}] and "lots_won" not in bob
    for name, doc in summary.items():  # the account side agrees with each Bidder entity
        account = kit.state(EntityRef("Bidder", name))
        held = {lot.replace("%2E", "."): amount for lot, amount in doc.get("held", {}).items()}
        assert doc["credit"] == account.credit and held == {lot: h[0] for lot, h in account.holds.items()}
        assert doc.get("spent", 0) == account.INITIAL_CREDIT - account.credit
    assert cat["spent"] == 45 and "vase" not in cat.get("held", {})


def test_documents_do_not_depend_on_batching_or_redelivery() -> None:
    kit = run_auction()
    whole, one_by_one = project(kit, batch_size=1000), project(kit, batch_size=1)
    for name in ("auction_board", "bidder_summary"):
        assert whole.documents(name) == one_by_one.documents(name)
    before = {name: whole.documents(name) for name in ("auction_board", "bidder_summary")}
    again = kit.journal.event_stream().read_all(limit=10_000)  # type: ignore[attr-defined]
    plans = whole.feed(*again)
    assert {name: whole.documents(name) for name in before} == before
    assert set(plans["auction_board"].outcomes) <= {"duplicate", "ignored"}


def test_live_feeding_follows_new_events() -> None:
    kit = run_auction()
    box = project(kit)
    assert box.feed_from(kit) == 0  # nothing new
    kit.client(CLOCK, "c-cat", {"type": "bid", "amount": 400})
    assert box.feed_from(kit) > 0
    assert box.document("clock.1", "auction_board")["high_bidder"] == "cat"
    assert box.document("cat", "bidder_summary")["lots"]["clock%2E1"] == 400
    assert box.parked("auction_board") == [] and box.parked("bidder_summary") == []
