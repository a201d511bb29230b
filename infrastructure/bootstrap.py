"""Composition root: the one place where the platform's parts are chosen and wired.

Defaults are the embedded dev mode (SQLite file, one node owning every shard, in-process
transport); every part can be overridden (a journal, the entity classes, the ownership),
as in eventsourcing's ``Application.construct_*`` and cosmicpython's ``bootstrap``.
There are no module-level singletons: build as many platforms as a test needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from domain.entity import Entity
from infrastructure.gc_tuning import GcTuning
from infrastructure.metrics import NodeMetrics
from infrastructure.persistence import EventJournal, new_mapper, open_journal
from infrastructure.runtime import AllShards, StateNode
from infrastructure.runtime.entity_modules import entity_types_from
from infrastructure.runtime.sharding import ShardOwnership
from infrastructure.settings import Settings
from infrastructure.transport import LocalTransport


@dataclass
class Platform:
    """A wired, one-process platform. ``async with`` starts and stops it."""

    settings: Settings
    journal: EventJournal
    node: StateNode
    transport: LocalTransport

    async def start(self) -> None:
        GcTuning.acquire(self.settings.gc_gen0_threshold, self.settings.gc_reclaim_every_s,
                         self.settings.gc_reclaim_growth)
        await self.node.start()

    async def stop(self) -> None:
        try:
            await self.node.stop()
            self.journal.close()
        finally:
            GcTuning.release()

    async def __aenter__(self) -> Platform:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def build_platform(
    settings: Settings | None = None,
    entities: Iterable[type[Entity]] | None = None,
    journal: EventJournal | None = None,
    ownership: ShardOwnership | None = None,
    metrics: NodeMetrics | None = None,
) -> Platform:
    """Wire a platform from ``settings`` (default: from ``XPLATFORM_*`` environment).
    ``entities``: the classes to serve (default: the ``XPLATFORM_ENTITIES`` setting's,
    resolved before anything opens)."""
    settings = settings or Settings.from_env()
    types = entity_types_from(settings, entities)
    journal = journal or open_journal(settings)
    node = StateNode(types, journal, new_mapper(), settings, ownership or AllShards(), metrics)
    transport = LocalTransport(node, settings.ask_timeout_s)
    return Platform(settings, journal, node, transport)
