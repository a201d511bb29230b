"""Translation between emulator records and the protobuf messages shipped in kurrentdbclient.

The streams and persistent-subscriptions APIs each define their own (identical
in shape) ``RecordedEvent`` message, so the field filling lives here once.
"""

from __future__ import annotations

import uuid
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import Message
from kurrentdbclient.protos.v1 import persistent_pb2, shared_pb2, streams_pb2

from .store import (
    EXPECTED_ANY,
    EXPECTED_NO_STREAM,
    EXPECTED_STREAM_EXISTS,
    EventRecord,
    ProposedEvent,
)


def stream_name_of(identifier: shared_pb2.StreamIdentifier) -> str:
    """Decode a ``StreamIdentifier`` (stream names travel as UTF-8 bytes)."""
    return identifier.stream_name.decode("utf8")


def identifier(stream_name: str) -> shared_pb2.StreamIdentifier:
    """Encode a stream name as a ``StreamIdentifier``."""
    return shared_pb2.StreamIdentifier(stream_name=stream_name.encode("utf8"))


def uuid_text(value: shared_pb2.UUID) -> str:
    """Canonical lower-case text of a protobuf UUID given as string or structured."""
    if value.WhichOneof("value") == "structured":
        most = value.structured.most_significant_bits & 0xFFFFFFFFFFFFFFFF
        least = value.structured.least_significant_bits & 0xFFFFFFFFFFFFFFFF
        return str(uuid.UUID(int=(most << 64) | least))
    return value.string.lower()


def expected_from_oneof(message: Message, oneof: str, revision_field: str) -> int:
    """Map an ``expected_stream_revision`` style oneof to the server's int encoding."""
    which = message.WhichOneof(oneof)
    if which == revision_field:
        return int(getattr(message, revision_field))
    if which == "no_stream":
        return EXPECTED_NO_STREAM
    if which == "stream_exists":
        return EXPECTED_STREAM_EXISTS
    return EXPECTED_ANY


def proposed_event(message: Any) -> ProposedEvent:
    """Build a :class:`ProposedEvent` from an Append/BatchAppend ``ProposedMessage``."""
    return ProposedEvent(
        event_id=uuid_text(message.id),
        event_type=message.metadata.get("type", ""),
        content_type=message.metadata.get("content-type", "application/octet-stream"),
        data=bytes(message.data),
        metadata=bytes(message.custom_metadata),
    )


def _fill_recorded_event(target: Any, record: EventRecord) -> None:
    target.id.string = record.event_id
    target.stream_identifier.stream_name = record.stream_name.encode("utf8")
    target.stream_revision = record.revision
    target.commit_position = record.position
    target.prepare_position = record.position
    target.data = record.data
    target.custom_metadata = record.metadata
    target.metadata["type"] = record.event_type
    target.metadata["content-type"] = record.content_type
    target.metadata["created"] = str(record.created)


def streams_read_event(record: EventRecord) -> streams_pb2.ReadResp:
    """A ``streams.ReadResp`` carrying ``record`` (no link resolution)."""
    response = streams_pb2.ReadResp()
    _fill_recorded_event(response.event.event, record)
    response.event.commit_position = record.position
    return response


def persistent_read_event(
    event: EventRecord, link: EventRecord | None, retry_count: int
) -> persistent_pb2.ReadResp:
    """A ``persistent_subscriptions.ReadResp`` for a delivered (maybe resolved) event.

    When the event was reached through a link (replayed parked message), the
    link is sent too and its position is the "original" position, as on the
    real server; the client then acks by the link's ID.
    """
    response = persistent_pb2.ReadResp()
    _fill_recorded_event(response.event.event, event)
    if link is not None:
        _fill_recorded_event(response.event.link, link)
    original = link if link is not None else event
    response.event.commit_position = original.position
    response.event.retry_count = retry_count
    return response


def pack_any(message: Message) -> any_pb2.Any:
    """Pack a message into ``google.protobuf.Any`` (status details)."""
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
