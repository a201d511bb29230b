"""Which projections a process runs: ``module:ATTRIBUTE`` topics (``XPLATFORM_PROJECTIONS``),
resolved once at start, like the entity modules (``XPLATFORM_ENTITIES``).

An attribute is a :class:`~projections.projection.Projection` subclass or a list/tuple of
them (``projections.auction:PROJECTIONS``); several topics are comma-separated. Why at
start: a wrong topic found later would be a read model that silently never fills; found
here it is one line naming the topic, and the process does not start.
"""

from __future__ import annotations

from infrastructure.topics import topic_members
from projections.errors import ProjectionTopicError
from projections.projection import Projection


def resolve_projections(topics: str, setting: str = "XPLATFORM_PROJECTIONS") -> list[Projection]:
    """One instance of each Projection class ``topics`` names, in order; raises
    :class:`ProjectionTopicError` (``setting`` names where the topics came from)."""
    names = [t.strip() for t in topics.split(",") if t.strip()]
    if not names:
        raise ProjectionTopicError(f"{setting} names no projection (e.g. projections.auction:PROJECTIONS)")
    found: dict[str, tuple[type[Projection], str]] = {}
    for topic in names:
        for cls in _classes_of(topic, setting):
            earlier = found.get(cls.NAME)
            if earlier is not None and earlier[0] is not cls:
                raise ProjectionTopicError(f"{setting}: read model {cls.NAME!r} is claimed by both "
                                           f"{earlier[0].__qualname__} (topic {earlier[1]!r}) and {cls.__qualname__} "
                                           f"(topic {topic!r})")
            found[cls.NAME] = (cls, topic)
    return [cls() for cls, _ in found.values()]


def select(projections: list[Projection], name: str) -> Projection:
    """The projection whose NAME is ``name``; raises ProjectionTopicError naming the choices."""
    for projection in projections:
        if projection.NAME == name:
            return projection
    raise ProjectionTopicError(f"no projection {name!r} in XPLATFORM_PROJECTIONS "
                               f"(it runs: {', '.join(p.NAME for p in projections) or 'none'})")


def _classes_of(topic: str, setting: str) -> list[type[Projection]]:
    classes: list[type[Projection]] = []
    for member in topic_members(topic, setting, "projections.auction:PROJECTIONS", ProjectionTopicError):
        if not (isinstance(member, type) and issubclass(member, Projection) and member is not Projection):
            raise ProjectionTopicError(f"{setting} topic {topic!r}: {member!r} is not a Projection class")
        classes.append(member)
    return classes


__all__ = ["resolve_projections", "select"]
