"""The composition floor gives a state node its router and outbound sink, once: transports
never take them (issue 11 item 2)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from infrastructure.errors import WiringError
from infrastructure.settings import Settings
from infrastructure.transport import LocalTransport
from infrastructure.transport.auth import LinkAuth
from infrastructure.transport.server import NodeServer
from ops.wiring.dev import build_platform
from ops.wiring.node import build_node
from tests.support.entities import Counter


def test_a_node_starts_only_once_connected_and_is_connected_once(tmp_path: Path) -> None:
    node = build_node(Settings(store="sqlite", data_dir=str(tmp_path)), entities=[Counter])
    try:
        with pytest.raises(WiringError, match="connect"):
            asyncio.run(node.start())
        transport = LocalTransport(node, 1.0)
        assert node.router is None and node.outbound is None  # building a transport wires nothing
        node.connect(router=transport, outbound=transport)
        with pytest.raises(WiringError, match="already connected"):
            node.connect(router=transport, outbound=transport)
        assert node.router is transport and node.outbound is transport
    finally:
        node.journal.close()


def test_a_transport_server_does_not_take_the_nodes_outbound(tmp_path: Path) -> None:
    """Which sink a node publishes to is the wiring's choice: a server started on a node
    wired to the in-process transport leaves it there."""
    async def scenario() -> None:
        async with build_platform(Settings(store="sqlite", data_dir=str(tmp_path)), entities=[Counter]) as platform:
            server = NodeServer(platform.node, "n", is_member=lambda peer: True, auth=LinkAuth({"edge": b"x" * 32}),
                                may_speak_for=lambda ref, node: node == "n")
            await server.start()
            try:
                assert platform.node.outbound is platform.transport
                assert platform.node.router is platform.transport
            finally:
                await server.stop()

    asyncio.run(scenario())
