"""Cluster discovery through ``Gossip.Read``."""

from __future__ import annotations

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.gossip import NODE_STATE_LEADER

from ops.local.emulator import EmulatorProcess


def test_read_gossip_returns_the_emulator_as_leader(client: KurrentDBClient, emulator: EmulatorProcess) -> None:
    """EventStoreDB docs, Cluster / gossip: gossip lists the cluster members with
    their state and HTTP endpoint; a single node is the leader."""
    members = client.read_gossip()
    assert len(members) == 1
    assert members[0].state == NODE_STATE_LEADER
    assert (members[0].address, members[0].port) == (emulator.host, emulator.port)


def test_discover_scheme_connects_through_gossip(emulator: EmulatorProcess, stream_name: str) -> None:
    """EventStoreDB docs, Connection string / ``+discover``: the client reads gossip
    from the seed and connects to the leader (here the seed itself)."""
    discovering = KurrentDBClient(f"kurrentdb+discover://{emulator.host}:{emulator.port}?tls=false")
    try:
        discovering.append_to_stream(
            stream_name, events=[NewEvent(type="A", data=b"{}")], current_version=StreamState.NO_STREAM
        )
        assert discovering.get_current_version(stream_name) == 0
    finally:
        discovering.close()
