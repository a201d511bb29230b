"""Set-up of ``bench_failover --heavy``: lots whose cold load is slow, written in bulk.

A heavy lot is a :class:`~loadtests.entities.HeavyLot` with ``events`` events since its last
snapshot (it has none). Playing 50,000 messages to each of 20 lots through a cluster would
take minutes, so the events are made once by the entity itself - its own handlers, in the
sandbox (``infrastructure/testkit.py``: the state node's dispatch core and codec): an
auctioneer connects, opens the lot, posts ``events`` chat messages, disconnects, and the
grace timer lets the connection go - and that stream is written under every heavy lot's ID
with PostgreSQL ``COPY`` (an event's stored state does not hold its stream's ID: every lot
of the batch is exactly what the entity produces for those messages). Small lots (the
auction's ``Lot``) are written the same way from a short history. :func:`check_seeded`
replays one lot of each kind from the store and compares its state digest with the
sandbox's entity.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from eventsourcing.persistence import StoredEvent

from domain import EntityRef
from domain.auction.lot import Lot
from infrastructure.persistence import RecorderJournal, new_mapper
from infrastructure.persistence.rehydrate import rehydrate
from infrastructure.runtime.mirrors import state_digest
from infrastructure.testkit import Sandbox
from loadtests.entities import HeavyLot
from ops.local.servers import PostgresServer

SMALL_CHATS = 3
"""Chat messages in a small lot's history (with connect, open, leave: ~10 events)."""


@dataclass(frozen=True)
class History:
    """One lot's stream as its entity wrote it, and the digest of the state it gives."""

    category: type[Lot]
    events: list[StoredEvent]
    digest: str
    state_bytes: int
    """The lot's encoded state (what a snapshot stores, and a mirror's size estimate of it)."""


def history(category: type[Lot], chats: int) -> History:
    """The stream a lot of ``category`` writes for: connect, open, ``chats`` messages, leave."""
    kit = Sandbox(category, start_time=time.time())
    ref = EntityRef(category.CATEGORY, "template")
    claims = {"sub": "setup", "role": "auctioneer"}
    kit.connect(ref, "c-setup", claims)
    kit.client(ref, "c-setup", {"type": "open", "title": "Heavy" if category is HeavyLot else "Small"})
    for i in range(chats):
        kit.client(ref, "c-setup", {"type": "chat", "text": f"set-up message {i}"}, message_id=f"setup-{i}")
    kit.disconnect(ref, "c-setup")
    kit.advance(category.GRACE_PERIOD + 1)  # the grace timer: the connection leaves, nothing pending
    entity = kit.state(ref)
    size = len(kit.mapper.to_stored_event(type(entity).Snapshot.take(entity)).state)
    return History(category, kit.journal.read(ref.stream_id), state_digest(entity, kit.mapper), size)


def _renamed(event: StoredEvent, stream_id: str) -> StoredEvent:
    return StoredEvent(originator_id=stream_id, originator_version=event.originator_version, topic=event.topic,
                       state=event.state)


def write(postgres: PostgresServer, streams: list[tuple[History, list[str]]]) -> int:
    """COPY each history under each of its entity IDs into the store's events table (created by
    the state nodes' journal if it is not there yet); returns the number of events written."""
    RecorderJournal(_env(postgres, create=True)).close()
    written = 0
    with psycopg.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, dbname=postgres.dbname) as conn:
        with conn.cursor() as cursor, cursor.copy(
                "COPY stored_events (originator_id, originator_version, topic, state) FROM STDIN") as copy:
            for lot_history, entity_ids in streams:
                for entity_id in entity_ids:
                    stream_id = EntityRef(lot_history.category.CATEGORY, entity_id).stream_id
                    for event in lot_history.events:
                        copy.write_row((stream_id, event.originator_version, event.topic, event.state))
                    written += len(lot_history.events)
        conn.commit()
    return written


def check_seeded(postgres: PostgresServer, lot_history: History, entity_id: str) -> float:
    """Replay ``entity_id`` from the store: its state digest must be the sandbox's (raises
    otherwise); returns how long the cold load took (read + replay), in seconds."""
    journal = RecorderJournal(_env(postgres, create=False))
    try:
        started = time.perf_counter()
        entity, _ = rehydrate(journal, new_mapper(), lot_history.category, EntityRef(lot_history.category.CATEGORY, entity_id))
        took = time.perf_counter() - started
        if state_digest(entity, new_mapper()) != lot_history.digest or entity.version != len(lot_history.events):
            raise RuntimeError(f"{lot_history.category.CATEGORY}/{entity_id} as stored is not the entity's own state")
        return took
    finally:
        journal.close()


def _env(postgres: PostgresServer, create: bool) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(postgres.port), "POSTGRES_USER": postgres.user, "POSTGRES_PASSWORD": "trust",
            "POSTGRES_DBNAME": postgres.dbname, "ORIGINATOR_ID_TYPE": "text", "CREATE_TABLE": str(create).lower()}
