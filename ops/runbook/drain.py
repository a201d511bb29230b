"""``xplatform drain NODE``: drain a state node or an edge from any machine that reaches
ZooKeeper, wait until it has left, and say how long each of its shards was unavailable.

How: the command writes a drain request the member watches (ephemeral, naming the member
entry's incarnation: infrastructure/cluster/requests.py); the member accepts it and stops as
on SIGTERM - a state node refuses new messages (callers resend to the next owner), flushes
its pending appends, withdraws its member entry and closes its session, and the allocator
hands its shards to the others; an edge closes its clients with GOING_AWAY (they reconnect to
another edge) and leaves. The process exits 0: a process manager that restarts what exits
(systemd ``Restart=always``, Kubernetes) starts its replacement.

Each shard's unavailability is measured on ZooKeeper's clock, from the member's acceptance
(when it stopped taking messages) to the first shard map, as this command saw it (it reads
every 20 ms), naming another owner; the new owner then loads entities on demand, which this
does not include (``xplatform_node_activation_duration_seconds``).

Refused before anything changes: an unknown member, a drain that would leave a category
without any node the layout allows (``--force`` to drain anyway), another request in
progress. ``--dry-run``: the moves the allocator would make, and nothing else.
"""

from __future__ import annotations

import time
from typing import Any

from infrastructure.settings import Settings
from ops.runbook import RunbookError
from ops.runbook.view import POLL_S, ClusterView, Member, StatusLine, moves_between, reallocated
from ops.wiring.cluster import layout_from

DRAIN_TIMEOUT_S = 60.0
"""Default wait for a member to answer and leave: a drain takes well under a second (pending
appends are flushed, then the session closes); a minute covers a loaded store."""


def plan_drain(view: ClusterView, node_id: str, force: bool = False) -> tuple[Member, dict[str, Any]]:
    """The member and what draining it would do (no change). RunbookError if it must not."""
    members = view.members()
    member = members.get(node_id)
    if member is None:
        raise RunbookError(f"no member named {node_id!r} in cluster {view.settings.cluster_name!r} "
                           f"(members: {', '.join(members) or 'none'}; see `xplatform status`)")
    current, _stat = view.assignment()
    moves = []
    if member.role == "state":
        groups = {n: m.group for n, m in members.items() if m.role == "state" and n != node_id}
        moves = moves_between(current, reallocated(current, groups, layout_from(view.settings)))
        orphaned = sorted({m.category for m in moves if m.target is None})
        if orphaned and not force:
            raise RunbookError(f"draining {node_id} would leave {', '.join(orphaned)} without a node (no other live "
                               "member may host it under XPLATFORM_CLUSTER_LAYOUT): start one first, or --force")
    return member, {"node": node_id, "role": member.role, "map_version": current.version,
                    "moves": [m.to_json() for m in moves]}


def drain(settings: Settings, node_id: str, *, dry_run: bool = False, force: bool = False,
          timeout_s: float = DRAIN_TIMEOUT_S, line: StatusLine | None = None) -> dict[str, Any]:
    """Drain ``node_id`` (see the module docstring); the report (``--json`` prints it)."""
    line = line or StatusLine(enabled=False)
    with ClusterView(settings) as view:
        member, report = plan_drain(view, node_id, force)
        report["dry_run"] = dry_run
        if dry_run:
            return report
        return {**report, **drain_member(view, member, timeout_s, line)}


def drain_member(view: ClusterView, member: Member, timeout_s: float, line: StatusLine) -> dict[str, Any]:
    """Ask ``member`` to drain, wait until it has left and its shards have other owners (or
    no member is left to take them); each shard's unavailability."""
    node_id = member.node_id
    current, _stat = view.assignment()
    pending = {(c, i) for c, owners in current.shards.items() for i, o in enumerate(owners)
               if o is not None and o.node == node_id}
    owned = len(pending)
    started = time.monotonic()
    accepted_ms = view.ask(member, "drain", timeout_s, line)
    shards: list[dict[str, Any]] = []
    left_s: float | None = None
    while True:
        assignment, stat = view.assignment()
        for category, shard in sorted(pending):
            owner = assignment.owner(category, shard)
            if owner is None or owner.node != node_id:
                pending.discard((category, shard))
                shards.append({"category": category, "shard": shard, "to": None if owner is None else owner.node,
                               "unavailable_s": round(max(0, stat.mtime - accepted_ms) / 1000, 3)})
        now = view.member(node_id)
        if left_s is None and (now is None or now.czxid != member.czxid):
            left_s = round(time.monotonic() - started, 3)
        others = [m for m in view.members().values() if m.role == "state" and m.node_id != node_id]
        if left_s is not None and (not pending or not others):
            break
        waited = time.monotonic() - started
        if waited > timeout_s:
            raise RunbookError(f"{node_id} accepted the drain but {'has not left' if left_s is None else 'left'} "
                               f"within {timeout_s:g} s with {len(pending)} of its {owned} shards not handed over "
                               "(see `xplatform status` and its log)")
        line.show(f"draining {node_id}: {owned - len(pending)}/{owned} shards handed over, "
                  f"{'left' if left_s is not None else 'still a member'}", waited)
        time.sleep(POLL_S)
    line.done()
    view.withdraw(node_id)
    shards += [{"category": c, "shard": i, "to": None, "unavailable_s": None} for c, i in sorted(pending)]
    return {"left_s": left_s, "shards": sorted(shards, key=lambda s: (s["category"], s["shard"])),
            "unowned": sum(1 for s in shards if s["to"] is None)}


def print_drain(report: dict[str, Any]) -> None:
    node, role = report["node"], report["role"]
    if report["dry_run"]:
        print(f"would drain {role} {node} (shard map v{report['map_version']}); moves:")
        for m in report["moves"]:
            print(f"  {m['category']}/{m['shard']}: {m['from']} -> {m['to'] or 'UNOWNED'}")
        if not report["moves"]:
            print("  none")
        return
    print(f"drained {role} {node}: left after {report['left_s']:.2f} s")
    for s in report["shards"]:
        unavailable = "-" if s["unavailable_s"] is None else f"{s['unavailable_s'] * 1000:.0f} ms"
        print(f"  {s['category']}/{s['shard']} -> {s['to'] or 'UNOWNED'}: unavailable {unavailable}")
