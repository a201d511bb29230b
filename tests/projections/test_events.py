"""The public events topic (projections/EVENTS.md): envelopes decoded from what real entities
stored; platform internals never reach a projection."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from infrastructure.persistence.subscriptions import StreamEvent
from infrastructure.persistence.transcoder import MsgpackTranscoder
from infrastructure.testkit import Sandbox
from projections.errors import EventDecodeError
from projections.events import ENVELOPE_VERSION, EventEnvelope, decode_event
from tests.projections.auction_scenario import run_auction


def stored_events(kit: Sandbox) -> list[StreamEvent]:
    return kit.journal.event_stream().read_all(limit=10_000)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def events() -> list[StreamEvent]:
    return stored_events(run_auction())


def test_a_domain_event_becomes_an_envelope_with_every_contract_field(events: list[StreamEvent]) -> None:
    stored = next(e for e in events if e.topic.endswith("Lot.BidAccepted"))
    envelope = decode_event(stored)
    assert envelope is not None
    assert (envelope.schema, envelope.stream, envelope.category, envelope.entity_id, envelope.type) == \
        (ENVELOPE_VERSION, "Lot-vase", "Lot", "vase", "BidAccepted")
    assert (envelope.version, envelope.position, envelope.event_id) == (stored.version, stored.position, stored.event_id)
    assert dict(envelope.payload) == {"bid_id": envelope.payload["bid_id"], "bidder": "bob", "amount": 10, "sent_at": 0.0}
    assert envelope.platform is False
    assert isinstance(envelope.recorded_at, datetime) and envelope.recorded_at.tzinfo is not None
    assert envelope.to_dict()["payload"] == dict(envelope.payload)
    with pytest.raises(TypeError):
        envelope.payload["amount"] = 1  # type: ignore[index]  # read-only: a handler cannot alter what others see


def test_idempotency_records_never_reach_a_payload(events: list[StreamEvent]) -> None:
    transcoder = MsgpackTranscoder()
    raw_with_internals = [e for e in events if any(k.startswith("_xp_") for k in transcoder.decode(e.state))]
    assert raw_with_internals, "the scenario stores message IDs and replies (else this test proves nothing)"
    for stored in events:
        envelope = decode_event(stored, platform_events=True)
        assert envelope is not None
        assert not any(name.startswith("_") for name in envelope.payload), envelope
        assert "timestamp" not in envelope.payload


def test_platform_events_are_not_delivered_unless_asked_and_never_carry_claims(events: list[StreamEvent]) -> None:
    connects = [e for e in events if e.topic.endswith("ConnectionAccepted")]
    assert connects and all(b"role" in e.state for e in connects)  # the stored event does hold the claims
    assert all(decode_event(e) is None for e in connects)
    timers = [e for e in events if e.topic.endswith("TimerStarted")]
    assert timers and all(decode_event(e) is None for e in timers)
    for stored in connects:
        envelope = decode_event(stored, platform_events=True)
        assert envelope is not None and envelope.platform and envelope.type == "ConnectionAccepted"
        assert "claims" not in envelope.payload and "sub" not in str(dict(envelope.payload))
        assert envelope.payload["connection_id"].startswith("c-")


def test_the_store_recorded_time_wins_over_the_entity_timestamp(events: list[StreamEvent]) -> None:
    stored = next(e for e in events if e.topic.endswith("Lot.Opened"))
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    recorded = StreamEvent(stored.stream_id, stored.version, stored.position, stored.event_id, stored.topic, stored.state, at)
    envelope = decode_event(recorded)
    assert envelope is not None and envelope.recorded_at == at
    fallback = decode_event(stored)
    assert fallback is not None and fallback.recorded_at != at  # SQLite/PostgreSQL: the entity's timestamp


@pytest.mark.parametrize("state", [b"\xc1", b"\x92\x01\x02", b"\xd4\x63\x00"])
def test_an_undecodable_event_is_a_typed_error(state: bytes) -> None:
    stored = StreamEvent("Lot-vase", 1, 1, "e1", "domain.auction.lot:Lot.Opened", state)
    with pytest.raises(EventDecodeError, match="Lot-vase@1"):
        decode_event(stored)


def test_an_envelope_is_a_value() -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    one = EventEnvelope("Lot-a", "Lot", "a", 1, "Opened", {"title": "A"}, at, 7, "e")
    assert one == EventEnvelope("Lot-a", "Lot", "a", 1, "Opened", {"title": "A"}, at, 7, "e")
