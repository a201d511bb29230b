"""``coalesce_hz`` 0 turns coalescing off: every coalescible update is its own frame, in order
(the "coalescing off" phase of ``loadtests.bench_hot_entity``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge.config import EdgeConfig
from edge.errors import EdgeConfigurationError
from tests.edge.harness import Edge, run_edge


def test_coalescing_off_delivers_every_update_as_a_frame(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        assert edge.config.coalesce_tick_s == 0.0 and not edge.public.fanout.coalescing
        ann = await edge.client("ann")
        bob = await edge.client("bob")
        replies = await asyncio.gather(*(ann.request({"type": "set", "value": i}) for i in range(1, 61)))
        assert all(r.ok for r in replies)
        seen = [(await bob.next_push(timeout=30))["value"] for _ in range(60)]
        assert seen == list(range(1, 61))  # none merged, none reordered
        assert edge.metric("xplatform_edge_coalesced_dropped_total") == 0
        await ann.close()
        await bob.close()

    run_edge(tmp_path, scenario, coalesce_hz=0.0)


def test_negative_coalesce_hz_is_refused() -> None:
    with pytest.raises(EdgeConfigurationError):
        EdgeConfig(coalesce_hz=-1.0)
