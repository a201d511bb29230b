"""Which entity classes a process serves: the ``XPLATFORM_ENTITIES`` setting, resolved once.

A topic is ``module:ATTRIBUTE`` (as eventsourcing names its persistence module), the
attribute an :class:`~domain.entity.Entity` subclass or a list/tuple of them; several topics
are comma-separated. Every process resolves the setting through :func:`entity_types_from`:
a state node (and ``xplatform run``) to serve the classes, an edge only to learn their
categories - so no process is wired to one domain by an import, and all of them agree.

Why everything is checked here: a wrong topic found at the first message would be a
``not_found`` for every user of that category; found at start, it is one line naming the
topic and the process does not start.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from domain.entity import Entity
from infrastructure.errors import ConfigurationError
from infrastructure.runtime.registry import EntityTypes
from infrastructure.settings import Settings
from infrastructure.topics import topic_members


class EntityTopicError(ConfigurationError):
    """Raised at start when ``XPLATFORM_ENTITIES`` cannot be resolved: a malformed topic, a
    module or attribute that does not exist (or fails to import), a value that is not an
    Entity class (or a list/tuple of them), a class without a CATEGORY, or two classes
    claiming one category. The message names the topic."""


def entity_types_from(settings: Settings, classes: Iterable[type[Entity]] | None = None) -> EntityTypes:
    """The entity classes ``settings.entities`` names (see the module docstring), or
    ``classes`` when given (tests and benchmarks pass theirs; the setting is then unused)."""
    return EntityTypes(classes) if classes is not None else resolve_entities(settings.entities)


def resolve_entities(topics: str) -> EntityTypes:
    """Resolve comma-separated ``module:ATTRIBUTE`` topics; raises :class:`EntityTopicError`."""
    names = [t.strip() for t in topics.split(",") if t.strip()]
    if not names:
        raise EntityTopicError("XPLATFORM_ENTITIES names no entity module (e.g. domain.auction:ENTITIES)")
    types = EntityTypes()
    claimed: dict[str, tuple[type[Entity], str]] = {}  # category -> (class, topic)
    for topic in names:
        for cls in _classes_of(topic):
            earlier = claimed.get(cls.CATEGORY)
            if earlier is not None and earlier[0] is not cls:
                raise EntityTopicError(f"XPLATFORM_ENTITIES: category {cls.CATEGORY!r} is claimed by both "
                                       f"{_name(earlier[0])} (topic {earlier[1]!r}) and {_name(cls)} (topic {topic!r})")
            claimed[cls.CATEGORY] = (cls, topic)
            types.register(cls)
    return types


def _classes_of(topic: str) -> Iterator[type[Entity]]:
    members = topic_members(topic, "XPLATFORM_ENTITIES", "domain.auction:ENTITIES", EntityTopicError)
    for member in members:
        if not (isinstance(member, type) and issubclass(member, Entity)):
            raise EntityTopicError(f"XPLATFORM_ENTITIES topic {topic!r}: {member!r} is not an Entity subclass "
                                   "(an attribute must be one, or a list/tuple of them)")
        if not member.CATEGORY:
            raise EntityTopicError(f"XPLATFORM_ENTITIES topic {topic!r}: {_name(member)} has no CATEGORY "
                                   "(only Entity subclasses get one: the class name unless set)")
        yield member


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
