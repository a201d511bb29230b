"""A state node's parts and lifecycle, as every process that hosts one builds them.

The node comes back unconnected: the caller chooses its router and outbound sink
(``StateNode.connect``) - the in-process transport in dev mode, the network server and a
local-first router in a cluster.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from domain.entity import Entity
from infrastructure.gc_tuning import GcTuning
from infrastructure.metrics import NodeMetrics
from infrastructure.persistence import EventJournal, new_mapper, open_journal
from infrastructure.runtime import AllShards, StateNode
from infrastructure.runtime.entity_modules import entity_types_from
from infrastructure.runtime.sharding import ShardOwnership
from infrastructure.settings import Settings


def build_node(settings: Settings, entities: Iterable[type[Entity]] | None = None, journal: EventJournal | None = None,
               ownership: ShardOwnership | None = None, metrics: NodeMetrics | None = None) -> StateNode:
    """A state node from ``settings``. ``entities``: the classes to serve (default: the
    ``XPLATFORM_ENTITIES`` setting's, resolved before anything opens, so a wrong topic is
    named first); ``journal``: the event store (default: opened from ``settings``);
    ``ownership``: its shards (default: all of them)."""
    types = entity_types_from(settings, entities)
    journal = journal or open_journal(settings)
    return StateNode(types, journal, new_mapper(), settings, ownership or AllShards(), metrics)


async def start_node(node: StateNode) -> None:
    """Start ``node`` with the process's collector tuning (released by :func:`stop_node`)."""
    settings = node.settings
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)  # the writer thread's GIL waits: see the setting
    GcTuning.acquire(settings.gc_gen0_threshold, settings.gc_reclaim_every_s, settings.gc_reclaim_growth)
    try:
        await node.start()
    except BaseException:
        GcTuning.release()
        raise


async def stop_node(node: StateNode) -> None:
    """Stop ``node`` (pending appends finish), close its journal, release the tuning."""
    try:
        await node.stop()
        node.journal.close()
    finally:
        GcTuning.release()
