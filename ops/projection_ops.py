"""Runbook commands for read models (``xplatform projection ...``; ops/RUNBOOK.md "Read models").

- ``status [--json]``: per projection of ``XPLATFORM_PROJECTIONS``, the live collection, the
  position reached, the lag (events and seconds, :mod:`projections.lag`), events parked in
  the read model, and on EventStoreDB its consumer group (consumers, in flight, parked on
  the server).
- ``rebuild NAME [--dry-run]``: :mod:`projections.rebuild`, with a progress line.
- ``replay-parked NAME``: apply the events parked in the read model again with the
  projection as it is now (:meth:`projections.mongo.MongoReadModel.replay_parked`), and on
  EventStoreDB have the server deliver its group's parked events again (to the running
  projectors).
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from infrastructure.errors import PersistenceError, SubscriptionGroupNotFound
from infrastructure.persistence import open_event_stream, open_subscriptions
from infrastructure.settings import Settings
from projections.lag import measure
from projections.mongo import MongoReadModel, connect
from projections.persistent import group_name, group_source
from projections.rebuild import rebuild
from projections.topics import resolve_projections, select


def status(settings: Settings, *, as_json: bool = False, out: TextIO = sys.stdout) -> list[dict[str, Any]]:
    """Print (and return) each projection's figures."""
    projections = resolve_projections(settings.projections)
    client = connect(settings.read_model_uri())
    stream = open_event_stream(settings)
    groups = open_subscriptions(settings) if settings.store == "eventstoredb" else None
    rows: list[dict[str, Any]] = []
    try:
        for projection in projections:
            model = MongoReadModel(projection, client[settings.mongo_database])
            row = measure(model, stream).to_dict()
            if groups is not None:
                try:
                    info = groups.group_info(group_name(projection, settings.eventstoredb_stream_prefix),
                                            group_source(projection))
                    row["group"] = {"name": info.group, "status": info.status, "consumers": info.consumers,
                                    "in_flight": info.in_flight, "parked": info.parked, "strategy": info.strategy}
                except SubscriptionGroupNotFound:
                    row["group"] = None  # no projector has started yet
            rows.append(row)
    finally:
        stream.close()
        if groups is not None:
            groups.close()
        client.close()
    if as_json:
        print(json.dumps(rows), file=out)
        return rows
    for row in rows:
        events = f"{row['events']}{'+' if row['capped'] else ''}"
        line = (f"{row['projection']:<24} collection={row['collection']} position={row['position']} head={row['head']} "
                f"lag={events} events/{row['seconds']:.1f}s parked={row['parked']}")
        group = row.get("group", "n/a")
        if group is None:
            line += " group=(not created: no projector started)"
        elif isinstance(group, dict):
            line += (f" group={group['name']} consumers={group['consumers']} in_flight={group['in_flight']} "
                     f"server_parked={group['parked']}")
        print(line, file=out)
    return rows


def rebuild_command(settings: Settings, name: str, *, dry_run: bool = False, out: TextIO = sys.stdout) -> int:
    """``xplatform projection rebuild NAME [--dry-run]``; 0 on success (a dry run: 0 when the
    rebuilt model equals the live one, 1 when they differ)."""
    projection = select(resolve_projections(settings.projections), name)
    client = connect(settings.read_model_uri())
    stream = open_event_stream(settings)
    interactive = out.isatty()

    def progress(events: int, position: int | None, head: int | None) -> None:
        done = f"{100 * position / head:5.1f}%" if head and position is not None else "  ?  "
        line = f"rebuild {name}: {events} events applied, position {position} of {head} ({done})"
        print(("\r" + line) if interactive else line, end="" if interactive else "\n", file=out, flush=True)

    try:
        result = rebuild(projection, stream, client[settings.mongo_database], dry_run=dry_run,
                         batch_size=settings.projector_batch_size, progress=progress)
    finally:
        stream.close()
        client.close()
    if interactive:
        print(file=out)
    if dry_run:
        same = not (result.only_live or result.only_rebuilt or result.different)
        print(f"dry run: rebuilt {result.documents} documents from {result.events} events (dropped again); compared "
              f"with the live {result.previous!r}: {len(result.only_live)} only live, {len(result.only_rebuilt)} only "
              f"rebuilt, {len(result.different)} different{' - identical' if same else ''}", file=out)
        for label, keys in (("only live", result.only_live), ("only rebuilt", result.only_rebuilt),
                            ("different", result.different)):
            if keys:
                print(f"  {label}: {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}", file=out)
        return 0 if same else 1
    print(f"rebuilt {name} into {result.collection!r} ({result.documents} documents, {result.events} events) and "
          f"switched readers to it; the previous collections ({result.previous!r}, with __tracking and __parked) are "
          f"kept: drop them when no longer needed", file=out)
    return 0


def replay_parked_command(settings: Settings, name: str, *, out: TextIO = sys.stdout) -> int:
    """``xplatform projection replay-parked NAME``: 0 when nothing is left parked in the read model."""
    projection = select(resolve_projections(settings.projections), name)
    client = connect(settings.read_model_uri())
    try:
        model = MongoReadModel(projection, client[settings.mongo_database])
        applied, left = model.replay_parked()
    finally:
        client.close()
    print(f"{name}: {applied} parked events applied, {len(left)} still parked", file=out)
    for parked in left[:20]:
        print(f"  {parked.stream_id}@{parked.version} ({parked.event_type}): {parked.error}", file=out)
    if settings.store == "eventstoredb":
        groups = open_subscriptions(settings)
        try:
            groups.replay_parked(group_name(projection, settings.eventstoredb_stream_prefix), group_source(projection))
            print(f"{name}: the server delivers the group's parked events again to the running projectors", file=out)
        except SubscriptionGroupNotFound:
            print(f"{name}: no consumer group yet (no projector has started)", file=out)
        except PersistenceError as exc:
            print(f"{name}: replaying the group's parked events failed: {exc}", file=out)
            return 2
        finally:
            groups.close()
    return 0 if not left else 1


__all__ = ["rebuild_command", "replay_parked_command", "status"]
