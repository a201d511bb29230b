"""The public events topic: what projections (and any downstream consumer) see of the events
entities store. The contract, field by field, is ``projections/EVENTS.md``.

A stored event (:class:`~infrastructure.persistence.subscriptions.StreamEvent`, as the
subscription ports deliver it) carries the platform's internals next to the domain's
data: the message ID, sender and reply record kept in an entity's last event of a message
for idempotency (fields ``_xp_*``), and the connection bookkeeping events with the JWT claims
a category keeps. :func:`decode_event` turns it into an :class:`EventEnvelope` that carries
only what a consumer may rely on:

- fields whose name starts with ``_`` never appear in a payload (platform-internal by rule);
- platform events (the classes ``domain.entity`` defines: connections, timers, takeover
  markers) are not delivered at all unless asked for (``platform_events=True``), and even
  then a connection's ``claims`` are removed.

Decoding needs no entity class: the state is read with the platform's msgpack transcoder,
so a projection process imports no domain module it does not want.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from domain.entity import Entity
from infrastructure.errors import CodecError
from infrastructure.persistence.subscriptions import StreamEvent
from infrastructure.persistence.transcoder import MsgpackTranscoder
from projections.errors import EventDecodeError

ENVELOPE_VERSION = 1
"""Version of the envelope contract (``EVENTS.md``). Raised only for a change a consumer
could notice (a field removed or changing meaning); new optional fields keep it."""

PLATFORM_TOPIC_PREFIX = f"{Entity.__module__}:"
"""Topics of the events the platform itself defines (``domain.entity:Entity.*``)."""

HIDDEN_PLATFORM_FIELDS = frozenset({"claims"})
"""Fields removed from platform events even when a projection asks for them: the JWT
claims a connection's category keeps (personal data, and nothing to build a view on)."""

@dataclass(frozen=True, slots=True)
class EventEnvelope:
    """One event on the public topic (contract: ``projections/EVENTS.md``)."""

    stream: str  # "Lot-vase": the entity's stream
    category: str  # "Lot"
    entity_id: str  # "vase"
    version: int  # the event's place in its stream, from 1, contiguous
    type: str  # "BidAccepted": the event class's name
    payload: Mapping[str, Any]  # the event's fields, internals removed (read-only)
    recorded_at: datetime  # see EVENTS.md
    position: int  # the store's global order: increasing, not contiguous
    event_id: str  # unique per event, stable across deliveries
    platform: bool = False  # an event the platform defines (connections, timers, takeovers)
    schema: int = ENVELOPE_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The envelope as a plain map (e.g. to hand on as JSON or msgpack; ``recorded_at``
        stays a datetime)."""
        return {"schema": self.schema, "stream": self.stream, "category": self.category, "entity_id": self.entity_id,
                "version": self.version, "type": self.type, "payload": dict(self.payload),
                "recorded_at": self.recorded_at, "position": self.position, "event_id": self.event_id,
                "platform": self.platform}


def event_type(topic: str) -> str:
    """``BidAccepted`` for ``domain.auction.lot:Lot.BidAccepted``."""
    return topic.rpartition(":")[2].rpartition(".")[2]


def is_platform_topic(topic: str) -> bool:
    return topic.startswith(PLATFORM_TOPIC_PREFIX)


_TRANSCODER = MsgpackTranscoder()


def decode_event(event: StreamEvent, *, platform_events: bool = False,
                 transcoder: MsgpackTranscoder | None = None) -> EventEnvelope | None:
    """The public envelope of ``event``, or None for a platform event when
    ``platform_events`` is false. Raises EventDecodeError when the state cannot be read
    (the event changes nothing; the caller's policy decides). ``transcoder``: one with the
    domain's custom ``Transcoding`` registrations, if its events use any."""
    platform = is_platform_topic(event.topic)
    if platform and not platform_events:
        return None
    try:
        state = (transcoder or _TRANSCODER).decode(event.state)
    except CodecError as exc:
        raise EventDecodeError(f"{event.stream_id}@{event.version} ({event.topic}): {exc}") from None
    if not isinstance(state, dict):
        raise EventDecodeError(f"{event.stream_id}@{event.version} ({event.topic}): state is not a map")
    occurred = state.get("timestamp")
    payload = {name: value for name, value in state.items()
               if isinstance(name, str) and not name.startswith("_") and name != "timestamp"
               and not (platform and name in HIDDEN_PLATFORM_FIELDS)}
    recorded_at = event.recorded_at or (occurred if isinstance(occurred, datetime) else None)
    if recorded_at is None:
        raise EventDecodeError(f"{event.stream_id}@{event.version} ({event.topic}): no recorded time and no timestamp")
    category, _, entity_id = event.stream_id.partition("-")
    return EventEnvelope(stream=event.stream_id, category=category, entity_id=entity_id, version=event.version,
                         type=event_type(event.topic), payload=MappingProxyType(payload), recorded_at=recorded_at,
                         position=event.position, event_id=event.event_id, platform=platform)


__all__ = ["ENVELOPE_VERSION", "EventEnvelope", "decode_event", "event_type", "is_platform_topic"]
