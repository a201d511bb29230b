"""Event IDs derived from the event itself (no grpc import: every store uses them).

EventStoreDB stores them as the events' IDs (a re-sent append carries the same IDs, so the
server drops it as a duplicate); the recorder stores have no event ID column, and their
event stream hands out the same derivation, so a consumer deduplicating by
:attr:`~infrastructure.persistence.subscriptions.StreamEvent.event_id` sees the same ID for
the same event on every store (with an empty stream prefix, as in production).
"""

from __future__ import annotations

import hashlib
import uuid

EVENT_ID_NAMESPACE = uuid.UUID("5b0c6a8e-3f5e-5d1e-9a51-0f7d2a7c1e01")  # fixed forever: IDs must not change


def event_id(stream_name: str, position: int, topic: str, state: bytes) -> uuid.UUID:
    """The ID of the event at ``position`` (0-based stream revision) of ``stream_name``:
    a pure function of the event."""
    digest = hashlib.sha256(state).hexdigest()
    return uuid.uuid5(EVENT_ID_NAMESPACE, f"{stream_name}\x00{position}\x00{topic}\x00{digest}")
