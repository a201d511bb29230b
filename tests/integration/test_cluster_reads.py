"""The query API on a clustered ``xplatform edge`` (``XPLATFORM_MONGO_URI``): a state node,
an ``xplatform projector`` and an edge as processes (ZooKeeper, PostgreSQL, a MongoDB-wire
server): a bid read through the edge with its reply's position token is on the board; the
projection decides who reads what; reads are refused with 503 while the database is away,
and the websockets are served all the while."""

from __future__ import annotations

import asyncio
import uuid

from edge.client import ClientError, connect, read
from tests.support.chat_load import token
from tests.support.cluster import Cluster
from tests.support.servers import MongoWireServer


def test_a_clustered_edge_serves_read_your_writes_over_the_projectors_read_models(cluster: Cluster) -> None:
    mongo = MongoWireServer.start()
    try:
        cluster.start("state-node", "node-a")
        cluster.start("projector", "projector-1", XPLATFORM_MONGO_URI=mongo.uri, XPLATFORM_METRICS_PORT="0")
        edge = cluster.start("edge", "edge-1", XPLATFORM_MONGO_URI=mongo.uri)
        url = edge.ready_line.split("ready on ")[1].strip()
        lot = f"lot-{uuid.uuid4().hex[:6]}"
        bob, ann = token("bob", "bidder"), token("ann", "auctioneer")

        async def scenario() -> None:
            auctioneer, bidder = await connect(url, "Lot", lot, ann), await connect(url, "Lot", lot, bob)
            try:
                assert (await auctioneer.request({"type": "open", "title": "Vase", "increment": 5})).ok
                reply = await bidder.request({"type": "register", "limit": 1000})
                while reply.payload.get("status") != "registered":
                    await asyncio.sleep(0.05)
                    reply = await bidder.request({"type": "register", "limit": 1000})
                bid = await bidder.request({"type": "bid", "amount": 50})
                assert bid.ok and bid.position is not None, bid
                for _ in range(600):  # 503 until the edge reached the database (it retries every 2 s)
                    try:
                        board = await read(url, "auction_board", bob, key=lot, after=bid.position, wait_ms=5000)
                        break
                    except ClientError as refused:
                        assert (refused.status, refused.error) in ((503, "read_models_unavailable"),
                                                                   (504, "consistency_timeout")), refused
                        await asyncio.sleep(0.1)
                else:
                    raise AssertionError("the edge never served the read")
                assert (board["high_amount"], board["high_bidder"], board["bid_count"]) == (50, "bob", 1), board
                mine = await read(url, "bidder_summary", bob, key="bob", after=bid.position, wait_ms=5000)
                assert mine["bids"] >= 1 and mine["best_bid"] >= 50
                try:  # another bidder's summary: the projection says no
                    await read(url, "bidder_summary", ann, key="bob")
                    raise AssertionError("ann read bob's summary")
                except ClientError as refused:
                    assert refused.status == 403 and refused.error == "forbidden", refused
                try:  # no token, no read
                    await read(url, "auction_board", "not-a-token", key=lot)
                    raise AssertionError("read without a valid token")
                except ClientError as refused:
                    assert refused.status == 401, refused
            finally:
                await auctioneer.close()
                await bidder.close()

        try:
            asyncio.run(scenario())
        except BaseException:
            print(cluster.logs())
            raise
        mongo.stop()  # the database goes away: reads answer 503, the websocket edge serves on

        async def without_database() -> None:
            bidder = await connect(url, "Lot", lot, bob)
            try:
                assert (await bidder.request({"type": "bid", "amount": 60})).ok
                try:
                    await read(url, "auction_board", bob, key=lot)
                    raise AssertionError("read served with its database gone")
                except ClientError as refused:
                    assert refused.status == 503 and refused.error == "read_models_unavailable", refused
            finally:
                await bidder.close()

        asyncio.run(without_database())
    finally:
        cluster.stop_all()
        mongo.stop()
