"""The Projection base class: what a projection builder writes.

    class AuctionBoard(Projection):
        NAME = "auction_board"             # the read model: a MongoDB collection
        CATEGORIES = ("Lot",)              # the entity categories it reads

        @handles("Lot", "Opened")
        def opened(self, event: EventEnvelope, doc: Document | None) -> list[Change]:
            return [Set(event.entity_id, {"title": event.payload["title"], "status": "open"})]

A handler is a pure function of the event (:class:`~projections.events.EventEnvelope`) and
the current document it is keyed to (``key=``: a function of the event; default the event's
entity ID), returning the changes it declares (:mod:`projections.changes`). It never
writes, so it is tested with no server (:class:`projections.testkit.ProjectionSandbox`).
What the handler reads from ``doc`` may shape the changes to that same document; a change
to any other document must follow from the event alone (a redelivered event is applied to
each document at most once, and what a document already holds is no evidence about the others).

Policies (class attributes; ``projections/EVENTS.md`` "Failures"):

- ``ON_ERROR`` for an event whose handler raises, whose changes are invalid, or which cannot
  be decoded: ``"park"`` (default: kept with its error in the read model's parked list,
  counted, the projection goes on), ``"skip"`` (counted and logged only) or ``"stop"``
  (:class:`~projections.errors.HandlerFailed`: nothing of the batch is written, the runner stops loudly).
- ``ON_UNHANDLED`` for an event of a category it reads whose type no handler takes:
  ``"skip"`` (default, counted: a projection usually needs a few of a category's types)
  or ``"stop"`` (:class:`~projections.errors.UnhandledEvent`).
- ``PLATFORM_EVENTS``: also deliver the platform's own events (connections, timers,
  takeovers; claims removed). Default False.

Who may read it (the query API, ``GET /read/<NAME>[/<key>]`` on the edge, ``edge/PROTOCOL.md``
"Reading read models"): :meth:`Projection.read_filter` (the documents a caller's verified token
claims may see, as field equalities; the default ``None``: nobody - a read model is private
until its projection says who reads it) and :meth:`Projection.may_read` (per document; by
default, the same equalities).

Every event of the categories read is still tracked (its stream's version), handled or not,
so the read model knows exactly how far each stream is applied.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from domain.refs import CATEGORY_PATTERN
from projections.errors import ProjectionDefinitionError
from projections.events import EventEnvelope

Document = dict[str, Any]
KeyFunction = Callable[[EventEnvelope], str]
F = TypeVar("F", bound=Callable[..., Any])

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
ERROR_POLICIES = ("park", "skip", "stop")
UNHANDLED_POLICIES = ("skip", "stop")


def by_entity(event: EventEnvelope) -> str:
    """The default document key: the event's entity ID."""
    return event.entity_id


def handles(category: str, *event_types: str, key: KeyFunction | None = None) -> Callable[[F], F]:
    """Declare a handler for events of ``event_types`` of ``category``; ``key`` picks the
    document the handler is given (default: the event's entity ID)."""
    if not event_types:
        raise ProjectionDefinitionError(f"handles({category!r}) names no event type")

    def decorate(func: F) -> F:
        func._xp_projection_handles = (category, event_types, key or by_entity)  # type: ignore[attr-defined]
        return func

    return decorate


@dataclass(frozen=True, slots=True)
class Handler:
    func: Callable[[Any, EventEnvelope, Document | None], Any]
    key: KeyFunction


class Projection:
    """Base class of projections. See the module docstring."""

    NAME: ClassVar[str] = ""
    """The read model's name: its MongoDB collection (lower case, digits, ``_``; the writer
    adds ``<NAME>__tracking`` and ``<NAME>__parked`` beside it)."""

    CATEGORIES: ClassVar[tuple[str, ...]] = ()
    """The entity categories whose events it reads (every event of them is tracked)."""

    PLATFORM_EVENTS: ClassVar[bool] = False
    ON_ERROR: ClassVar[str] = "park"
    ON_UNHANDLED: ClassVar[str] = "skip"

    _handlers: ClassVar[dict[tuple[str, str], Handler]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__name__
        if not isinstance(cls.NAME, str) or not NAME_PATTERN.match(cls.NAME):
            raise ProjectionDefinitionError(f"{name}.NAME {cls.NAME!r} must match {NAME_PATTERN.pattern}")
        if isinstance(cls.CATEGORIES, str):
            cls.CATEGORIES = (cls.CATEGORIES,)
        if not cls.CATEGORIES or not all(isinstance(c, str) and CATEGORY_PATTERN.match(c) for c in cls.CATEGORIES):
            raise ProjectionDefinitionError(f"{name}.CATEGORIES {cls.CATEGORIES!r} must name entity categories")
        if cls.ON_ERROR not in ERROR_POLICIES:
            raise ProjectionDefinitionError(f"{name}.ON_ERROR {cls.ON_ERROR!r} is not one of {ERROR_POLICIES}")
        if cls.ON_UNHANDLED not in UNHANDLED_POLICIES:
            raise ProjectionDefinitionError(f"{name}.ON_UNHANDLED {cls.ON_UNHANDLED!r} is not one of {UNHANDLED_POLICIES}")
        handlers: dict[tuple[str, str], Handler] = {}
        for klass in reversed(cls.__mro__):
            for attribute, value in vars(klass).items():
                marked = getattr(value, "_xp_projection_handles", None)
                if marked is None:
                    continue
                category, event_types, key = marked
                if category not in cls.CATEGORIES:
                    raise ProjectionDefinitionError(f"{name}.{attribute} handles {category!r}, not in CATEGORIES")
                for event_type in event_types:
                    existing = handlers.get((category, event_type))
                    if existing is not None and existing.func.__name__ != attribute:
                        raise ProjectionDefinitionError(
                            f"{name}: {category}.{event_type} has two handlers ({existing.func.__name__}, {attribute})")
                    handlers[(category, event_type)] = Handler(value, key)
        cls._handlers = handlers

    def read_filter(self, claims: Mapping[str, Any]) -> dict[str, Any] | None:
        """The documents a caller may read through the query API, as equalities their fields
        must meet (``{}``: every document; ``{"_id": claims["sub"]}``: the caller's own), from
        the caller's verified token ``claims``; ``None`` (the default): none at all. Lists
        are narrowed by it in the database; single documents are checked with :meth:`may_read`."""
        return None

    def may_read(self, claims: Mapping[str, Any], document: Document) -> bool:
        """Whether the caller may read ``document`` (as readers see it, ``_id`` included).
        Default: :meth:`read_filter`'s equalities hold. Override both together: a list only
        returns documents both allow."""
        scope = self.read_filter(claims)
        return scope is not None and all(document.get(name) == value for name, value in scope.items())

    def handler(self, event: EventEnvelope) -> Handler | None:
        """The handler of ``event``'s category and type, if any."""
        return self._handlers.get((event.category, event.type))

    @property
    def name(self) -> str:
        return self.NAME


__all__ = ["Document", "Projection", "by_entity", "handles"]
