"""Rebuilding an entity from the journal: latest snapshot, then the events after it.

One function for the state node's activation and the sandbox's reloads, so both rebuild
entities exactly the same way.
"""

from __future__ import annotations

from eventsourcing.persistence import Mapper

from domain.entity import Entity
from domain.refs import EntityRef
from infrastructure.persistence.port import EventJournal


def rehydrate(journal: EventJournal, mapper: Mapper[str], entity_class: type[Entity], ref: EntityRef) -> tuple[Entity, int]:
    """The entity as stored, and the version of the snapshot it started from (0: none)."""
    stored_snapshot = journal.latest_snapshot(ref.stream_id)
    if stored_snapshot is not None:
        entity = mapper.to_domain_event(stored_snapshot).mutate(None)  # type: ignore[attr-defined]
        snapshot_version = stored_snapshot.originator_version
    else:
        entity, snapshot_version = entity_class.blank(ref.entity_id), 0
    for stored in journal.read(ref.stream_id, after_version=entity.version):
        mapper.to_domain_event(stored).mutate(entity)  # type: ignore[attr-defined]
    return entity, snapshot_version
