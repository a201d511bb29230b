"""The read port's position tokens (infrastructure/read_port.py) and the projections setting
(projections/loading.py ``load_projections``): what parses, what is refused and why."""

from __future__ import annotations

import pytest

from infrastructure.errors import BadReadQuery
from infrastructure.read_port import Consistency, Position
from projections.auction import AuctionBoard, BidderSummary
from projections.errors import ProjectionError
from projections.loading import load_projection, load_projections


def test_a_token_is_stream_at_version_and_round_trips() -> None:
    position = Position.parse("Lot-vase@7")
    assert position == Position("Lot-vase", 7) and position.category == "Lot" and position.token() == "Lot-vase@7"
    assert Position.parse("Lot-a@b@12") == Position("Lot-a@b", 12)  # an entity ID may hold '@': the last one counts


@pytest.mark.parametrize("token", ["", "Lot-vase", "Lot-vase@", "Lot-vase@0", "Lot-vase@-1", "Lot-vase@x", "vase@3",
                                   "Lot-@3", "-vase@3", "Lot-va/se@3", "Lot-vase@٣", "L" * 301 + "-x@1"])
def test_malformed_tokens_are_bad_queries(token: str) -> None:
    with pytest.raises(BadReadQuery):
        Position.parse(token)


def test_a_read_without_token_or_bound_is_eventual() -> None:
    assert Consistency().eventual
    assert not Consistency(after=(Position("Lot-a", 1),)).eventual and not Consistency(max_lag_ms=0).eventual


def test_projections_resolve_from_topics_once_each() -> None:
    found = load_projections("projections.auction:PROJECTIONS, projections.auction:AuctionBoard")
    assert [type(p) for p in found] == [AuctionBoard, BidderSummary]
    assert isinstance(load_projection("projections.auction:BidderSummary"), BidderSummary)
    for topic in ("projections.nothing:X", "projections.auction:Nothing", "projections.auction:RECENT_BIDS"):
        with pytest.raises(ProjectionError, match="XPLATFORM_PROJECTIONS topic"):
            load_projections(topic)
    with pytest.raises(ProjectionError, match="not one class"):
        load_projection("projections.auction:PROJECTIONS")
