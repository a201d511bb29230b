"""README guarantee "never half-applied", in the sandbox: a handler that fails after
triggering an event leaves the entity's state and stream as they were, and the next
message sees the old state. (The runtime's twin: tests/integration/test_runtime.py.)"""

from __future__ import annotations

from domain import EntityRef
from infrastructure.testkit import Sandbox
from tests.support.entities import Counter


def test_handler_failing_after_an_event_leaves_state_and_stream_as_before() -> None:
    kit = Sandbox(Counter)
    ref = EntityRef("Counter", "half")
    assert kit.connect(ref, "c", {"sub": "ann"}).ok
    assert kit.client(ref, "c", {"type": "add", "n": 2}).reply.payload == 2
    events_before, version_before = kit.event_names(ref), kit.state(ref).version

    failed = kit.client(ref, "c", {"type": "add_then_fail", "n": 50})

    assert (failed.ok, failed.reply.code, failed.events) == (False, "handler_failed", [])
    assert kit.event_names(ref) == events_before  # nothing of it stored
    assert (kit.state(ref).total, kit.state(ref).version) == (2, version_before)  # nor kept in memory
    assert kit.client(ref, "c", {"type": "peek"}).reply.payload == 2  # the next message sees the old state
    assert kit.client(ref, "c", {"type": "add", "n": 1}).reply.payload == 3  # and appends after it
    assert kit.event_names(ref) == [*events_before, "Added"]
