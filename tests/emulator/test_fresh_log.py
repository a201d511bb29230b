"""What a fresh log holds before any client writes: the server's own ``$`` events.

Each test starts a private emulator (the session one has other tests' events).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import KurrentDBClientError

from ops.local.emulator import launch_emulator

DEADLINE = 10.0


@pytest.fixture
def fresh_client() -> Iterator[KurrentDBClient]:
    """A client of an emulator of this test's own, started on an empty log."""
    running = launch_emulator()
    client = KurrentDBClient(running.uri)
    try:
        yield client
    finally:
        client.close()
        running.stop()


def test_a_fresh_log_starts_with_system_events(fresh_client: KurrentDBClient) -> None:
    """KurrentDB ``EpochManager`` writes a ``$epoch-information`` event as the node
    becomes leader; ``StorageScavenger`` writes ``$scavengeIndexInitialized`` to
    ``$scavenges`` and sets its ``$maxAge`` (30 days). So ``$all`` is never empty:
    every record of a fresh log is in a ``$`` stream, and the client's default filter
    (which leaves out ``$`` event types) hides them all."""
    raw = list(fresh_client.read_all(filter_exclude=()))
    assert raw and all(e.stream_name.startswith("$") for e in raw)
    kinds = [(e.stream_name, e.type) for e in raw]
    assert kinds[0] == ("$epoch-information", "$epoch-information")
    assert ("$scavenges", "$scavengeIndexInitialized") in kinds
    assert fresh_client.get_stream_metadata("$scavenges")[0] == {"$maxAge": 2592000}
    assert list(fresh_client.read_all()) == []
    position = fresh_client.append_to_stream(
        "first", events=[NewEvent(type="Mine", data=b"{}")], current_version=StreamState.NO_STREAM
    )
    assert position > raw[-1].commit_position
    assert [e.type for e in fresh_client.read_all()] == ["Mine"]


def test_a_group_on_all_skips_epoch_information_and_its_own_checkpoints(fresh_client: KurrentDBClient) -> None:
    """KurrentDB ``EventFilter.DefaultAllFilter``, applied by persistent subscriptions to
    ``$all``: non-system events pass; of the system ones ``$epoch-information`` and the
    ``$all`` groups' ``-checkpoint``/``-parked`` streams are left out, the others (here
    the scavenger's) are delivered. Without it a group would be fed its own checkpoints."""
    client = fresh_client
    group = f"g-{uuid.uuid4().hex[:8]}"
    client.create_subscription_to_all(group, filter_exclude=(), min_checkpoint_count=1, checkpoint_after=0.1)
    client.append_to_stream("s", events=[NewEvent(type="A", data=b"{}")], current_version=StreamState.ANY)
    seen: list[tuple[str, str]] = []
    subscription = client.read_subscription_to_all(group, timeout=DEADLINE)
    try:
        for event in subscription:
            seen.append((event.stream_name, event.type))
            subscription.ack(event)
            if event.type == "A":
                break
        deadline = time.monotonic() + DEADLINE
        while not client.get_subscription_info(group).last_checkpointed_event_position:
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.05)
        client.append_to_stream("s", events=[NewEvent(type="B", data=b"{}")], current_version=StreamState.ANY)
        for event in subscription:
            seen.append((event.stream_name, event.type))
            subscription.ack(event)
            if event.type == "B":
                break
    finally:
        with contextlib.suppress(KurrentDBClientError):
            subscription.stop()
    assert ("$scavenges", "$scavengeIndexInitialized") in seen
    assert seen[-2:] == [("s", "A"), ("s", "B")]
    assert not [s for s, _ in seen if s == "$epoch-information" or s.startswith("$persistentsubscription-$all::")]
