"""Latency on all levels in cluster mode (issue 15, item 3).

A public edge on the network transport (``ClusterClient``) and a state node behind its
``NodeServer``, over real sockets with the real handshake, websocket clients on the edge:

- every MSG's round trip is recorded in every hop of ``xplatform_edge_hop_seconds`` (the
  node's queue/handler/append durations arrive in the REPLY envelope), the node records its
  own hops in ``xplatform_node_hop_seconds``, and the counts are the messages sent;
- a slow message (a handler that holds the node) is logged once, with every hop and its
  IDs, as a JSON line when the JSON format is chosen; sampling bounds the lines;
- ``xplatform run`` with ``XPLATFORM_LOG_FORMAT=json`` writes every log line as JSON, the
  slow-message line with its fields.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edge.app import build_edge_app, listen_public
from edge.client import connect
from edge.config import EdgeConfig
from edge.metrics import EDGE_HOPS
from edge.public import EDGE_KEY, PublicEdge
from infrastructure.logformat import JsonFormatter
from infrastructure.metrics import NODE_HOPS
from infrastructure.runtime.sharding import StaticShards
from infrastructure.settings import Settings
from infrastructure.transport import LocalTransport
from infrastructure.transport.auth import LinkAuth
from infrastructure.transport.client import ClusterClient
from infrastructure.transport.server import NodeServer
from ops.local.xplatform_run import XplatformRun
from ops.wiring.node import build_node, start_node, stop_node
from tests.edge.harness import AUDIENCE, ISSUER, KID, RSA_KEY, jwks_of, token
from tests.support.entities import Counter
from tests.support.monitoring import ROOT

SECRETS = {"edge": secrets.token_bytes(32), "state": secrets.token_bytes(32)}
SLOW_S = 0.05
"""How long the slow handler holds the node: over the tests' 20 ms threshold by construction."""


class Captured(logging.Handler):
    """Records of the slow-message logger, as the JSON formatter writes them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(JsonFormatter("edge-1"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@asynccontextmanager
async def cluster_edge(tmp_path: Path, **config: Any) -> AsyncIterator[tuple[PublicEdge, str, NodeServer, Captured]]:
    """A state node (Counters, SQLite) behind its NodeServer, and a public edge reaching it
    over the network transport; yields the edge, its URL, the server and the captured
    slow-message lines."""
    settings = Settings(store="sqlite", data_dir=str(tmp_path / "data"), node_id="node-a")
    node = build_node(settings, entities=[Counter], ownership=StaticShards(64, {"Counter": set(range(64))}, epoch=1))
    server = NodeServer(node, "node-a", is_member=lambda peer: peer == "edge-1", auth=LinkAuth(SECRETS),
                        may_speak_for=lambda ref, node: node == "node-a")
    node.connect(router=LocalTransport(node, settings.ask_timeout_s), outbound=server)
    await start_node(node)
    await server.start()
    client = ClusterClient("edge-1", "edge", route=lambda ref: ("node-a", 1), address_of=lambda n: server.address,
                           auth=LinkAuth({"edge": SECRETS["edge"]}))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_of(RSA_KEY, KID)))
    edge_config = EdgeConfig(port=0, jwt_jwks_file=str(jwks), jwt_issuer=ISSUER, jwt_audience=AUDIENCE,
                             heartbeat_s=30.0, close_timeout_s=0.5, **config)
    app = build_edge_app(client, {"Counter"}, edge_config, static_dir=None)
    runner = web.AppRunner(app, shutdown_timeout=2, access_log=None)
    await runner.setup()
    listener = await listen_public(runner, app, "127.0.0.1", 0)
    captured, logger = Captured(), logging.getLogger("edge.hops")
    level = logger.level
    logger.setLevel(logging.WARNING)  # whatever the root logger's level in this test run
    logger.addHandler(captured)
    try:
        yield app[EDGE_KEY], f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}", server, captured
    finally:
        logger.removeHandler(captured)
        logger.setLevel(level)
        listener.close()
        await runner.cleanup()
        await client.close()
        await server.stop()
        await stop_node(node)


def sample(registry: Any, name: str, hop: str) -> float:
    return registry.get_sample_value(name, {"hop": hop}) or 0.0


def test_every_hop_of_every_message_is_recorded_across_the_network_transport(tmp_path: Path) -> None:
    sent = 12

    async def scenario() -> None:
        async with cluster_edge(tmp_path) as (edge, url, server, _captured):
            client = await connect(url, "Counter", "c1", token("ann"), heartbeat_s=0, reconnect=False)
            try:
                for _ in range(sent // 2):  # one at a time, then a burst (replies of one group commit)
                    assert (await client.request({"type": "add", "n": 1})).ok
                replies = await asyncio.gather(*(client.request({"type": "add", "n": 1}) for _ in range(sent // 2)))
                assert all(r.ok for r in replies)
                edge_registry, node_registry = edge.metrics.registry, server.node.metrics.registry
                for hop in EDGE_HOPS:
                    assert sample(edge_registry, "xplatform_edge_hop_seconds_count", hop) == sent, hop
                assert edge_registry.get_sample_value(
                    "xplatform_edge_hop_seconds_bucket", {"hop": "handler", "le": "+Inf"}) == sent
                for hop in NODE_HOPS:  # the node counts the Connect too
                    assert sample(node_registry, "xplatform_node_hop_seconds_count", hop) == sent + 1, hop
                # The node's durations reached the edge: what the edge recorded of them is what the node measured
                # of the same messages (the node's sum also has the Connect's).
                for hop in NODE_HOPS:
                    at_edge = sample(edge_registry, "xplatform_edge_hop_seconds_sum", hop)
                    at_node = sample(node_registry, "xplatform_node_hop_seconds_sum", hop)
                    assert 0 < at_edge <= at_node, hop
                # transport = round trip - node time, so the four hops add up to the round trip
                round_trip = edge_registry.get_sample_value("xplatform_edge_round_trip_seconds_sum")
                parts = sum(sample(edge_registry, "xplatform_edge_hop_seconds_sum", hop) for hop in EDGE_HOPS[:4])
                assert parts == pytest.approx(round_trip, rel=1e-6)
                assert sample(edge_registry, "xplatform_edge_hop_seconds_sum", "transport") > 0
            finally:
                await client.close()

    asyncio.run(scenario())


def slow_lines(captured: Captured) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in captured.lines]  # each parses as JSON
    return [line for line in lines if line["msg"].startswith("slow message")]


def test_a_slow_message_is_logged_once_with_every_hop_and_its_ids(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster_edge(tmp_path, slow_message_ms=20.0, slow_log_interval_s=0.0) as (edge, url, _s, captured):
            client = await connect(url, "Counter", "slow-1", token("ann"), heartbeat_s=0, reconnect=False)
            try:
                ids = [f"slow-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
                for mid in ids:
                    reply = await client.request({"type": "slow_add", "n": 1, "seconds": SLOW_S}, message_id=mid)
                    assert reply.ok
                lines = slow_lines(captured)
                assert sorted(line["message_id"] for line in lines) == sorted(ids)  # each once
                for line in lines:
                    assert line["node"] == "edge-1" and line["level"] == "WARNING" and line["logger"] == "edge.hops"
                    assert line["entity"] == "Counter/slow-1" and line["connection_id"] == client.cid
                    assert line["state_node"] == "node-a" and line["skipped"] == 0
                    hops = line["hops_ms"]
                    assert list(hops) == list(EDGE_HOPS) and all(v is not None and v >= 0 for v in hops.values())
                    assert hops["handler"] >= SLOW_S * 1000  # the slow hop is the one that shows
                    assert line["round_trip_ms"] >= hops["handler"]
                    assert line["message_id"] in line["msg"] and "Counter/slow-1" in line["msg"]
                assert edge.metrics.registry.get_sample_value("xplatform_edge_slow_messages_total") == len(ids)
            finally:
                await client.close()

    asyncio.run(scenario())


def test_slow_message_lines_are_sampled(tmp_path: Path) -> None:
    """Many slow messages within one interval: every one counted, one line."""
    async def scenario() -> None:
        async with cluster_edge(tmp_path, slow_message_ms=20.0, slow_log_interval_s=3600.0) as (edge, url, _s, captured):
            client = await connect(url, "Counter", "slow-2", token("ann"), heartbeat_s=0, reconnect=False)
            try:
                for _ in range(5):
                    assert (await client.request({"type": "slow_add", "n": 1, "seconds": SLOW_S})).ok
                assert len(slow_lines(captured)) == 1
                assert edge.metrics.registry.get_sample_value("xplatform_edge_slow_messages_total") == 5
            finally:
                await client.close()

    asyncio.run(scenario())


TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")


def test_xplatform_run_writes_json_log_lines_with_the_ids(tmp_path: Path) -> None:
    """The real ``xplatform run`` process, JSON logs, every message slow (a 1 µs threshold):
    its slow-message lines parse as JSON with the node, entity and message IDs, and no log
    line is left in the text format."""
    env = {**os.environ, "XPLATFORM_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT),
           "XPLATFORM_LOG_FORMAT": "json", "XPLATFORM_NODE_ID": "dev-json", "XPLATFORM_EDGE_SLOW_MESSAGE_MS": "0.001",
           "XPLATFORM_EDGE_SLOW_LOG_INTERVAL_S": "0"}
    lot = f"lot-{uuid.uuid4().hex[:6]}"
    mid = f"json-{uuid.uuid4().hex[:6]}"

    async def traffic(url: str) -> None:
        async with aiohttp.ClientSession() as session, session.get(
                f"{url}/dev/token", params={"sub": "ann", "role": "auctioneer"}) as resp:
            dev_token = str((await resp.json())["token"])
        client = await connect(url, "Lot", lot, dev_token, heartbeat_s=0, reconnect=False)
        try:
            assert (await client.request({"type": "open", "title": "Vase"}, message_id=mid)).ok
        finally:
            await client.close()

    server = XplatformRun.start(("--port", "0"), cwd=tmp_path, env=env, log_path=tmp_path / "run.log")
    try:
        asyncio.run(traffic(server.url.rstrip("/")))
        assert server.stop(signal.SIGINT) == 0, server.log()
        log_text = server.log()
    finally:
        server.close()
    assert not [line for line in log_text.splitlines() if TEXT_LINE.match(line)]
    records = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    slow = [r for r in records if r.get("message_id") == mid]
    assert len(slow) == 1, records
    assert slow[0]["node"] == "dev-json" and slow[0]["entity"] == f"Lot/{lot}" and slow[0]["state_node"] == "dev-json"
    assert set(slow[0]["hops_ms"]) == set(EDGE_HOPS)
