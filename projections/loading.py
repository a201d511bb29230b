"""Which projections a process runs: topics ``module:ATTRIBUTE`` (the ``projections`` setting,
like ``entities`` for entity classes), resolved to Projection instances.

A module of its own, free of any database driver: ``xplatform run`` names its read models
at start and loads pymongo only on the thread that brings them up.
"""

from __future__ import annotations

import importlib

from projections.errors import ProjectionError
from projections.projection import Projection


def load_projection(topic: str) -> Projection:
    """``module:Class`` → an instance of that Projection subclass."""
    found = load_projections(topic)
    if len(found) != 1:
        raise ProjectionError(f"{topic!r} names {len(found)} projections, not one class")
    return found[0]


def load_projections(topics: str) -> list[Projection]:
    """Comma-separated ``module:ATTRIBUTE`` topics (the ``projections`` setting), each a
    Projection class or a list/tuple of them → one instance of each, in order (a class named
    twice once). Raises ProjectionError naming the topic, or two projections with one NAME."""
    found: dict[str, Projection] = {}
    for topic in (t.strip() for t in topics.split(",") if t.strip()):
        module_name, _, attribute = topic.partition(":")
        try:
            value = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ProjectionError(f"projections topic {topic!r} does not resolve: {exc}") from None
        for member in value if isinstance(value, (list, tuple)) else (value,):
            if not (isinstance(member, type) and issubclass(member, Projection)):
                raise ProjectionError(f"projections topic {topic!r}: {member!r} is not a Projection class")
            earlier = found.get(member.NAME)
            if earlier is not None and type(earlier) is not member:
                raise ProjectionError(f"projections topic {topic!r}: two projections named {member.NAME!r}")
            found.setdefault(member.NAME, member())
    return list(found.values())


__all__ = ["load_projection", "load_projections"]
