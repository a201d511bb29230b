"""``--data-file`` persistence across emulator restarts."""

from __future__ import annotations

import json
from pathlib import Path

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState

from ops.local.emulator import launch_emulator


def test_events_and_subscription_groups_survive_restart(tmp_path: Path) -> None:
    """EventStoreDB docs, Persistence: appended events (with their revisions and
    positions) and persistent subscription definitions are durable across a
    server restart; each start writes a new ``$epoch-information`` event."""
    data_file = str(tmp_path / "emulator.jsonl")
    first = launch_emulator("--data-file", data_file)
    try:
        client = KurrentDBClient(first.uri)
        client.append_to_stream(
            "durable", events=[NewEvent(type="A", data=b"1"), NewEvent(type="B", data=b"2")],
            current_version=StreamState.NO_STREAM,
        )
        client.create_subscription_to_stream("group", "durable")
        before = client.get_stream("durable")
        client.close()
    finally:
        first.stop()
    second = launch_emulator("--data-file", data_file)
    try:
        client = KurrentDBClient(second.uri)
        after = client.get_stream("durable")
        assert [(e.id, e.stream_position, e.commit_position) for e in after] == [
            (e.id, e.stream_position, e.commit_position) for e in before
        ]
        position = client.append_to_stream("durable", events=[NewEvent(type="C", data=b"3")], current_version=1)
        assert position > before[-1].commit_position
        assert client.get_subscription_info("group", "durable").group_name == "group"
        # Like a node becoming leader again: one more epoch, the scavenger's first-start
        # event is not repeated.
        epochs = [json.loads(e.data)["epochNumber"] for e in client.get_stream("$epoch-information")]
        assert epochs == [0, 1]
        assert len(client.get_stream("$scavenges")) == 1
        client.close()
    finally:
        second.stop()
