"""``xplatform rebalance``: the moves the allocator would make now, shown (``--dry-run``) or
applied.

The elected allocator recomputes the shard map when members join or leave; between those
the map stays as it is. It can be off balance when it was written by other rules - an
allocator of another version during a rolling upgrade, a layout changed since
(``XPLATFORM_CLUSTER_LAYOUT``; give this command the cluster's), a map edited by hand.
``rebalance`` computes what the allocator computes (:func:`~infrastructure.cluster.allocation.allocate`:
sticky, so only shards above their node's share move) from the live state members and the
current map, and writes it with a compare-and-set on the map's version, as the allocator
does: if the map changed meanwhile nothing is written (run it again). Each moved shard gets
the new map version as its epoch; its old owner stops serving it and its new owner takes
it over, as in any handoff.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from kazoo.exceptions import BadVersionError

from infrastructure.cluster.allocation import Assignment
from infrastructure.settings import Settings
from ops.runbook import RunbookError
from ops.runbook.view import ClusterView, moves_between, reallocated
from ops.wiring.cluster import layout_from


def _spread(assignment: Assignment) -> dict[str, dict[str, int]]:
    """category → node → shards owned (``UNOWNED`` for none)."""
    return {c: dict(sorted(Counter(o.node if o else "UNOWNED" for o in owners).items()))
            for c, owners in sorted(assignment.shards.items())}


def rebalance(settings: Settings, *, dry_run: bool = False) -> dict[str, Any]:
    with ClusterView(settings) as view:
        groups = {n: m.group for n, m in view.members().items() if m.role == "state"}
        if not groups:
            raise RunbookError(f"no state node is a member of cluster {settings.cluster_name!r}: nothing to balance onto")
        current, stat = view.assignment()
        target = reallocated(current, groups, layout_from(settings))
        moves = moves_between(current, target)
        report: dict[str, Any] = {"map_version": current.version, "dry_run": dry_run,
                                  "moves": [m.to_json() for m in moves], "before": _spread(current),
                                  "after": _spread(target), "applied_version": None}
        if dry_run or not moves:
            return report
        try:
            view.zk.set(f"{view.root}/assignment", json.dumps(target.to_json()).encode(), version=stat.version)
        except BadVersionError:
            raise RunbookError(f"the shard map changed while rebalance planned on v{current.version} (a member joined "
                               "or left): nothing written; run it again") from None
        report["applied_version"] = target.version
        return report


def print_rebalance(report: dict[str, Any]) -> None:
    verb = "would move" if report["dry_run"] else "moved"
    if not report["moves"]:
        print(f"shard map v{report['map_version']} is what the allocator makes: nothing to move")
        return
    print(f"{verb} {len(report['moves'])} shards (shard map v{report['map_version']}"
          + (f" -> v{report['applied_version']})" if report["applied_version"] else ")"))
    for m in report["moves"]:
        print(f"  {m['category']}/{m['shard']}: {m['from'] or 'UNOWNED'} -> {m['to'] or 'UNOWNED'}")
    for category, after in report["after"].items():
        before = report["before"].get(category, {})
        print(f"  {category}: {before} -> {after}")
