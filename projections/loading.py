"""Which projections a process runs: topics ``module:ATTRIBUTE`` (the ``projections`` setting,
like ``entities`` for entity classes), resolved to Projection instances.

A module of its own, free of any database driver: ``xplatform run`` names its read models
at start and loads pymongo only on the thread that brings them up.
"""

from __future__ import annotations

from projections.errors import ProjectionError
from projections.projection import Projection
from projections.topics import resolve_projections


def load_projection(topic: str) -> Projection:
    """``module:Class`` → an instance of that Projection subclass."""
    found = load_projections(topic)
    if len(found) != 1:
        raise ProjectionError(f"{topic!r} names {len(found)} projections, not one class")
    return found[0]


def load_projections(topics: str) -> list[Projection]:
    """Comma-separated ``module:ATTRIBUTE`` topics (the ``projections`` setting), each a
    Projection class or a list/tuple of them → one instance of each, in order
    (:func:`projections.topics.resolve_projections`: one resolution for every process)."""
    return resolve_projections(topics)


__all__ = ["load_projection", "load_projections"]
