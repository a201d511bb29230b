"""Entity references: the address of an entity is its category plus its ID.

Why a dedicated type: the same pair names the routing key (shard function), the stream
name in the event store (``<category>-<id>``, which EventStoreDB's ``$ce-<category>``
category projection understands) and the target of entity-to-entity messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from domain.errors import InvalidEntityId, UnknownCategory

CATEGORY_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_ENTITY_ID_LENGTH = 200


@dataclass(frozen=True, slots=True)
class EntityRef:
    """Address of one entity: ``category`` (e.g. ``"Lot"``) and ``entity_id``."""

    category: str
    entity_id: str

    def __post_init__(self) -> None:
        if not isinstance(self.category, str) or not CATEGORY_PATTERN.match(self.category):
            raise UnknownCategory(f"invalid category {self.category!r}")
        check_entity_id(self.entity_id)

    @property
    def stream_id(self) -> str:
        """The event-store stream (and aggregate ID) of this entity."""
        return f"{self.category}-{self.entity_id}"

    @classmethod
    def from_stream_id(cls, stream_id: str) -> EntityRef:
        category, _, entity_id = stream_id.partition("-")
        return cls(category, entity_id)

    def __str__(self) -> str:
        return f"{self.category}/{self.entity_id}"


def check_entity_id(entity_id: object) -> None:
    """Raise InvalidEntityId unless ``entity_id`` is a short printable string."""
    if not isinstance(entity_id, str) or not entity_id:
        raise InvalidEntityId("entity ID must be a non-empty string")
    if len(entity_id) > MAX_ENTITY_ID_LENGTH:
        raise InvalidEntityId(f"entity ID longer than {MAX_ENTITY_ID_LENGTH} characters")
    if not entity_id.isprintable() or "/" in entity_id:
        raise InvalidEntityId("entity ID has control characters or '/'")
