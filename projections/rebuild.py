"""Rebuilding a read model from scratch, then switching readers over atomically.

1. A fresh set of collections, ``<NAME>__r<stamp>`` (documents, tracking, parked), is filled
   by the catch-up projector from the start of the store up to its head (any store: it
   reads pages, no subscription), with a progress callback after each batch.
2. ``--dry-run``: compare it with the live read model (documents only in one, documents that
   differ), drop it, switch nothing.
3. Otherwise switch the pointer (:func:`projections.mongo.switch_live`, one atomic document
   write): every reader and runner that resolves it from then on uses the new collections.
   Running projectors notice at their next batch (:meth:`MongoReadModel.refresh`); after
   ``settle_s`` (longer than a batch takes) the rebuild catches the new collections up to
   the head again, so events a runner applied to the old collections around the switch
   reach the new ones too (the bookkeeping makes any overlap a duplicate).

The previous collections are kept (to compare, or to switch back with the pointer) and named
in the result; drop them when done.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from infrastructure.persistence.subscriptions import EventStream
from projections.catchup import BATCH_SIZE, CatchUpProjector
from projections.mongo import MongoReadModel, live_collection, switch_live
from projections.projection import Projection

Progress = Callable[[int, int | None, int | None], None]
"""``progress(events, position, head)`` after each batch."""


@dataclass
class RebuildResult:
    projection: str
    collection: str  # the rebuilt collections (dropped again on a dry run)
    previous: str  # the collections live before
    events: int  # events the rebuild applied
    documents: int  # live documents in the rebuilt model
    switched: bool
    only_live: list[str] = field(default_factory=list)  # dry run: keys only in the live model
    only_rebuilt: list[str] = field(default_factory=list)  # dry run: keys only in the rebuilt one
    different: list[str] = field(default_factory=list)  # dry run: keys whose documents differ


def rebuild(projection: Projection, stream: EventStream, database: Database[Any], *, dry_run: bool = False,
            batch_size: int = BATCH_SIZE, progress: Progress | None = None, settle_s: float = 2.0) -> RebuildResult:
    """See the module docstring."""
    name = f"{projection.NAME}__r{time.strftime('%Y%m%d%H%M%S', time.gmtime())}{secrets.token_hex(2)}"
    model = MongoReadModel(projection, database, collection=name)
    head = stream.head_position()

    def report(events: int, position: int | None) -> None:
        if progress is not None:
            progress(events, position, head)

    runner = CatchUpProjector(projection, stream, model, batch_size=batch_size, progress=report)
    if head is not None:
        runner.run(until=head)
    previous = live_collection(model.database, projection.NAME)
    result = RebuildResult(projection.NAME, name, previous, runner.events, 0, switched=False)
    if dry_run:
        live = MongoReadModel(projection, database, collection=previous).documents()
        rebuilt = model.documents()
        result.documents = len(rebuilt)
        result.only_live = sorted(set(live) - set(rebuilt))
        result.only_rebuilt = sorted(set(rebuilt) - set(live))
        result.different = sorted(key for key in set(live) & set(rebuilt) if live[key] != rebuilt[key])
        for collection in (model.collection, model.tracking, model.parked_collection):
            collection.drop()
        return result
    result.previous = switch_live(model.database, projection.NAME, name)
    result.switched = True
    time.sleep(settle_s)
    head = stream.head_position()
    if head is not None:
        runner.run(until=head)
    result.events = runner.events
    result.documents = len(model.documents())
    return result


__all__ = ["RebuildResult", "rebuild"]
