"""``/metrics`` of ``xplatform edge`` and ``xplatform state-node`` is on the internal listener
(XPLATFORM_METRICS_HOST, loopback by default), never on the public edge port nor on the
transport's address. Real processes: ZooKeeper, PostgreSQL, a state node and an edge, with
their public/transport addresses on 127.0.0.2 so the metrics address (127.0.0.1) differs."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
import uuid

import pytest

from edge.client import connect
from tests.support.chat_load import token
from tests.support.cluster import Cluster

OTHER_LOOPBACK = "127.0.0.2"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_edge_and_state_node_serve_metrics_only_on_the_internal_listener(cluster: Cluster) -> None:
    node = cluster.start("state-node", "node-a", XPLATFORM_TRANSPORT_HOST=OTHER_LOOPBACK)
    edge = cluster.start("edge", "edge-1", XPLATFORM_EDGE_HOST=OTHER_LOOPBACK)
    public = edge.ready_line.split("ready on ")[1].rstrip("/")
    assert public.startswith(f"http://{OTHER_LOOPBACK}:")

    async def chat() -> None:
        client = await connect(public, "Lot", f"lot-{uuid.uuid4().hex[:6]}", token("ann", "viewer"))
        try:
            assert (await client.request({"type": "chat", "text": "hello"})).ok
        finally:
            await client.close()

    asyncio.run(chat())
    assert _get(f"{public}/metrics")[0] == 404  # the public port has no metrics
    for process, expected in ((edge, "xplatform_edge_round_trip_seconds_count 1.0"),
                              (node, "xplatform_node_messages_total")):
        assert process.metrics_url.startswith("http://127.0.0.1:"), process.ready_line
        status, text = _get(process.metrics_url)
        assert status == 200 and expected in text, (process.name, text[:500])
        assert 'xplatform_cluster_ownership_state{state="serving"} 1.0' in text
        port = process.metrics_url.rsplit(":", 1)[1]
        with pytest.raises(urllib.error.URLError):  # not on the transport's / public address
            urllib.request.urlopen(f"http://{OTHER_LOOPBACK}:{port}", timeout=5)
