"""The query API of read models on the edge (``GET /read/...``, edge/reads.py) over the MongoDB
read port (projections/query.py), against a real secantusdb and the real sample entities:
authentication and the projections' read rules, bounded lists, the three consistency modes,
the position token every reply carries, and read-your-writes.

The projectors are run by hand here (``project()``), so a test controls whether the read
model is behind: a read-your-writes read is started while the model lags, is seen waiting
(the port's ``waiting`` count, no timing), and answers with the change once the projector ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from pymongo.database import Database

from domain.auction import Bidder, Lot
from domain.refs import EntityRef
from edge.client import Client
from infrastructure.persistence import EventStream, open_event_stream
from infrastructure.settings import Settings
from ops.wiring.dev import build_platform
from projections.auction import AuctionBoard, BidderSummary
from projections.catchup import CatchUpProjector
from projections.changes import Change, Set
from projections.events import EventEnvelope
from projections.mongo import MongoReadModel
from projections.projection import Document, Projection, handles
from projections.query import MongoQueries
from tests.edge.entities import Room
from tests.edge.harness import Edge, eventually, forge, good_claims, running_edge, token

AUCTIONEER = {"role": "auctioneer"}


class PrivateLots(Projection):
    """A read model without read rules: nobody may read it through the API (the default)."""

    NAME = "private_lots"
    CATEGORIES = ("Lot",)

    @handles("Lot", "Opened")
    def opened(self, event: EventEnvelope, doc: Document | None) -> list[Change]:
        return [Set(event.entity_id, {"title": event.payload["title"]})]


@dataclass
class Reading:
    edge: Edge
    queries: MongoQueries
    stream: EventStream
    database: Database[Any]

    async def project(self) -> None:
        """Bring every read model up to the store's head (what a live projector does)."""
        head = self.stream.head_position()

        def run() -> None:
            for model in self.queries.models.values():
                CatchUpProjector(model.projection, self.stream, MongoReadModel(model.projection, self.database)).run(until=head)

        await asyncio.to_thread(run)

    async def get(self, path: str, tok: str | None = None, **params: Any) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {tok}"} if tok is not None else {}
        query = [(k, str(v)) for k, vs in params.items() for v in (vs if isinstance(vs, list) else [vs])]
        async with aiohttp.ClientSession() as session, \
                session.get(self.edge.base_url + path, params=query, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    async def client(self, lot: str, sub: str, role: str) -> Client:
        return await self.edge.client(sub, role, ref=EntityRef("Lot", lot))

    async def open_lot(self, lot: str, title: str = "Vase") -> tuple[Client, str]:
        """The lot opened by its auctioneer; the auctioneer's client and the reply's token."""
        ann = await self.client(lot, "ann", "auctioneer")
        reply = await ann.request({"type": "open", "title": title, "increment": 5})
        assert reply.ok and reply.position is not None
        return ann, reply.position


async def accepted(r: Reading, lot: str, bids: int) -> None:
    """Wait until ``bids`` bids on ``lot`` are stored (a first bid is accepted once the
    bidder's account has raised the credit line: after its reply)."""
    await eventually(lambda: r.edge.event_types(EntityRef("Lot", lot)).count("BidAccepted") == bids,
                     what=f"{bids} accepted bids on {lot}")


def run_reading(tmp_path: Path, mongo_db: Database[Any], scenario: Callable[[Reading], Awaitable[None]],
                projections: tuple[Projection, ...] = (AuctionBoard(), BidderSummary(), PrivateLots()),
                **overrides: Any) -> None:
    async def main() -> None:
        async with reading(tmp_path, mongo_db, projections, **overrides) as r:
            await asyncio.wait_for(scenario(r), 30)

    asyncio.run(main())


@asynccontextmanager
async def reading(tmp_path: Path, mongo_db: Database[Any], projections: tuple[Projection, ...],
                  **overrides: Any) -> AsyncIterator[Reading]:
    settings = Settings(store="sqlite", data_dir=str(tmp_path / "data"), ask_timeout_s=5.0)
    platform = build_platform(settings, entities=(Room, Lot, Bidder))
    stream = open_event_stream(settings, platform.journal)
    queries = MongoQueries(projections, mongo_db, stream)
    try:
        async with running_edge(tmp_path, reads=queries, platform=platform, **overrides) as edge:
            yield Reading(edge, queries, stream, mongo_db)
    finally:
        queries.close()
        stream.close()


# ---------------------------------------------------------------------- the position token
def test_every_reply_carries_the_entitys_position_token(tmp_path: Path, mongo_db: Database[Any]) -> None:
    async def scenario(r: Reading) -> None:
        ann, first = await r.open_lot("vase")
        versions = len(r.edge.platform.journal.read("Lot-vase"))
        assert first == f"Lot-vase@{versions}"
        refused = await ann.request({"type": "open", "title": "again", "increment": 5})  # a domain refusal
        assert not refused.ok and refused.position == first  # nothing stored since: the same position
        bob = await r.client("vase", "bob", "bidder")  # (his connect is stored too)
        chat = await bob.request({"type": "chat", "text": "hello"})
        assert chat.ok and chat.position is not None
        assert int(chat.position.rpartition("@")[2]) == len(r.edge.platform.journal.read("Lot-vase")) > versions

    run_reading(tmp_path, mongo_db, scenario)


# ---------------------------------------------------------------------- consistency
def test_read_your_writes_waits_until_the_model_has_applied_the_token(tmp_path: Path, mongo_db: Database[Any]) -> None:
    async def scenario(r: Reading) -> None:
        _, position = await r.open_lot("vase", "Ming vase")
        tok = token("ann", "auctioneer")
        assert (await r.get("/read/auction_board/vase", tok))[0] == 404  # eventual: the model has not applied it
        read = asyncio.create_task(r.get("/read/auction_board/vase", tok, after=position))
        await eventually(lambda: r.queries.waiting == 1, what="the read to wait for the token")
        assert not read.done()
        await r.project()
        status, body = await read
        assert status == 200, body
        assert body["document"]["title"] == "Ming vase" and body["document"]["status"] == "open"
        assert r.queries.waiting == 0

    run_reading(tmp_path, mongo_db, scenario)


def test_a_token_the_model_does_not_reach_in_time_is_a_timeout(tmp_path: Path, mongo_db: Database[Any]) -> None:
    async def scenario(r: Reading) -> None:
        _, position = await r.open_lot("vase")
        await r.project()
        tok = token("ann")
        status, body = await r.get("/read/auction_board/vase", tok, after="Lot-vase@999", wait_ms=50)
        assert (status, body["error"], body["retryable"]) == (504, "consistency_timeout", True)
        assert (await r.get("/read/auction_board/vase", tok, after=position))[0] == 200  # reached: at once
        # a token of a category the read model does not read holds at once
        assert (await r.get("/read/auction_board/vase", tok, after="Bidder-bob@999", wait_ms=50))[0] == 200
        assert r.edge.metric("xplatform_edge_reads_total", {"outcome": "consistency_timeout"}) == 1

    run_reading(tmp_path, mongo_db, scenario)


def test_bounded_staleness_waits_for_events_older_than_the_bound(tmp_path: Path, mongo_db: Database[Any]) -> None:
    async def scenario(r: Reading) -> None:
        await r.open_lot("vase")
        tok = token("ann")
        # stored, not applied: lag > 0, so a bound of 0 is not met...
        status, body = await r.get("/read/auction_board/vase", tok, max_lag_ms=0, wait_ms=50)
        assert (status, body["error"]) == (504, "consistency_timeout")
        # ...while an hour's bound is (the event is younger): answered at once, from what the model holds
        assert (await r.get("/read/auction_board/vase", tok, max_lag_ms=3_600_000))[1]["error"] == "not_found"
        await r.project()
        status, body = await r.get("/read/auction_board/vase", tok, max_lag_ms=0)
        assert status == 200 and body["document"]["status"] == "open"
        assert (await r.get("/read/auction_board/vase", tok))[0] == 200  # eventual, the default

    run_reading(tmp_path, mongo_db, scenario)


# ---------------------------------------------------------------------- who reads what
def test_reads_need_a_valid_token(tmp_path: Path, mongo_db: Database[Any]) -> None:
    async def scenario(r: Reading) -> None:
        await r.open_lot("vase")
        await r.project()
        path = "/read/auction_board/vase"
        assert await r.get(path) == (401, {"error": "missing", "reason": "no bearer token"})
        status, body = await r.get(path, forge({"alg": "none", "kid": "rsa-1"}, good_claims(), None))
        assert (status, body["error"]) == (401, "alg_not_allowed")
        status, body = await r.get(path, token("ann", ttl=-120))
        assert (status, body["error"]) == (401, "expired")
        status, body = await r.get(path, token("ann", iss="https://other.idp"))
        assert (status, body["error"]) == (401, "wrong_issuer")
        assert (await r.get(path, access_token=token("ann")))[0] == 401  # never from the query string
        assert (await r.get(path, token("ann")))[0] == 200

    run_reading(tmp_path, mongo_db, scenario)


def test_the_projection_decides_which_documents_a_caller_reads(tmp_path: Path, mongo_db: Database[Any]) -> None:
    async def scenario(r: Reading) -> None:
        await r.open_lot("vase")
        for name, amount in (("bob", 10), ("cat", 20)):
            bidder = await r.client("vase", name, "bidder")
            assert (await bidder.request({"type": "bid", "amount": amount})).ok
        await accepted(r, "vase", 2)
        await r.project()
        bob = token("bob", "bidder")
        status, body = await r.get("/read/bidder_summary/bob", bob)
        assert status == 200 and body["document"]["_id"] == "bob"
        assert (await r.get("/read/bidder_summary/cat", bob))[1]["error"] == "forbidden"
        assert (await r.get("/read/bidder_summary/nobody", bob))[0] == 403  # not even whether it exists
        assert (await r.get("/read/bidder_summary/nobody", token("nobody")))[1]["error"] == "not_found"
        status, body = await r.get("/read/bidder_summary", bob)  # a list: only his own
        assert status == 200 and [d["_id"] for d in body["documents"]] == ["bob"]
        # a projection without read rules: nobody reads it, not even a list
        assert (await r.get("/read/private_lots/vase", bob))[0] == 403
        assert (await r.get("/read/private_lots", token("ann", "auctioneer")))[0] == 403
        assert r.queries.models["private_lots"].get("vase") is not None  # (it is there)

    run_reading(tmp_path, mongo_db, scenario)


def test_unknown_read_models_and_bad_parameters_are_refused(tmp_path: Path, mongo_db: Database[Any]) -> None:
    async def scenario(r: Reading) -> None:
        tok = token("ann")
        assert (await r.get("/read/nothing_here", tok))[1]["error"] == "unknown_projection"
        assert (await r.get("/read/Auction-Board/x", tok))[0] == 404
        bad = [{"limit": 0}, {"limit": 201}, {"limit": "ten"}, {"limit": [1, 2]}, {"max_lag_ms": -1},
               {"wait_ms": 999_999}, {"after": "not a token"}, {"after": "Lot-vase@x"}, {"after": "Lot-vase@0"},
               {"after": "lot@3"}, {"after": ["Lot-a@1"] * 9}, {"_applied": 1}, {"$where": "1"},
               {"status": ["open", "closed"]}, {"a..b": 1}, {"status": "x" * 201}]
        for params in bad:
            status, body = await r.get("/read/auction_board", tok, **params)
            assert (status, body["error"]) == (400, "bad_request"), params
        status, body = await r.get("/read/auction_board/vase", tok, after="Lot-vase@x")
        assert (status, body["error"]) == (400, "bad_request")
        assert r.edge.metric("xplatform_edge_reads_total", {"outcome": "bad_request"}) == len(bad) + 1

    run_reading(tmp_path, mongo_db, scenario)


def test_lists_are_bounded_ordered_and_filtered(tmp_path: Path, mongo_db: Database[Any]) -> None:
    async def scenario(r: Reading) -> None:
        for n in range(5):
            ann, _ = await r.open_lot(f"lot-{n}", f"Lot {n}")
            if n % 2:
                assert (await ann.request({"type": "close"})).ok
        bob = await r.client("lot-0", "bob", "bidder")
        assert (await bob.request({"type": "bid", "amount": 10})).ok
        await accepted(r, "lot-0", 1)
        await r.project()
        tok = token("ann")
        status, body = await r.get("/read/auction_board", tok, limit=2)
        assert status == 200 and [d["lot"] for d in body["documents"]] == ["lot-0", "lot-1"] and body["more"]
        body = (await r.get("/read/auction_board", tok))[1]
        assert len(body["documents"]) == 5 and not body["more"]
        assert [d["lot"] for d in (await r.get("/read/auction_board", tok, status="closed"))[1]["documents"]] == \
            ["lot-1", "lot-3"]
        assert [d["lot"] for d in (await r.get("/read/auction_board", tok, bid_count=1))[1]["documents"]] == ["lot-0"]
        both = (await r.get("/read/auction_board", tok, status="open", high_bidder="bob"))[1]["documents"]
        assert [d["lot"] for d in both] == ["lot-0"]
        assert all(not any(k.startswith("_") and k != "_id" for k in d) for d in body["documents"])  # no bookkeeping

    run_reading(tmp_path, mongo_db, scenario)


def test_waiting_reads_are_capped(tmp_path: Path, mongo_db: Database[Any]) -> None:
    async def scenario(r: Reading) -> None:
        tok = token("ann")
        first = asyncio.create_task(r.get("/read/auction_board/vase", tok, after="Lot-vase@5", wait_ms=2000))
        await eventually(lambda: r.queries.waiting == 1, what="the first read to wait")
        status, body = await r.get("/read/auction_board/vase", tok, after="Lot-vase@5")
        assert (status, body["error"], body["retryable"]) == (503, "busy", True)
        assert (await r.get("/read/auction_board", tok))[0] == 200  # an eventual read never waits: not capped
        assert (await first)[0] == 504

    run_reading(tmp_path, mongo_db, scenario, read_max_waiting=1)
