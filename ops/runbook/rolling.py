"""``xplatform rolling-restart``: every member in turn, for process managers that restart what
exits (systemd ``Restart=always``, a Kubernetes Deployment, ``--supervised`` under either).

Per member (state nodes first, then edges, each in node-ID order; or ``--nodes`` in the order
given): drain it (``xplatform drain``: it leaves and exits 0), wait for its replacement - a
member entry of the same node ID with a new incarnation - and, for a state node the layout
lets host shards, until the map gives it shards again; then check the cluster is healthy
(every member of before the restart registered, every category hosted, no shard unowned)
before the next. It stops at the first step that fails, with the member and the reason;
the members after it are untouched. ``--dry-run``: the order, and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from infrastructure.cluster.layout import Layout
from infrastructure.settings import Settings
from ops.runbook import RunbookError
from ops.runbook.doctor import check_layout
from ops.runbook.drain import DRAIN_TIMEOUT_S, drain_member
from ops.runbook.view import POLL_S, ClusterView, Member, StatusLine
from ops.wiring.cluster import layout_from


class RollingRestartStopped(RunbookError):
    """Raised when a step of a rolling restart failed; ``report`` holds the steps done and
    where it stopped (``--json`` prints it before the one-line reason)."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def rolling_restart(settings: Settings, *, nodes: list[str] | None = None, dry_run: bool = False,
                    timeout_s: float = DRAIN_TIMEOUT_S, line: StatusLine | None = None) -> dict[str, Any]:
    line = line or StatusLine(enabled=False)
    layout = layout_from(settings)
    with ClusterView(settings) as view:
        members = view.members()
        order = nodes or ([n for n, m in members.items() if m.role == "state"]
                          + [n for n, m in members.items() if m.role == "edge"])
        unknown = [n for n in order if n not in members]
        if unknown:
            raise RunbookError(f"not members of cluster {settings.cluster_name!r}: {', '.join(unknown)} "
                               "(see `xplatform status`)")
        report: dict[str, Any] = {"order": order, "dry_run": dry_run, "steps": [], "stopped_at": None, "reason": None}
        if dry_run:
            return report
        problem = _unhealthy(view, settings, set(members))
        if problem:
            raise RunbookError(f"not restarting: the cluster is not healthy before the first step ({problem}); "
                               "`xplatform doctor` says what to fix")
        for k, node_id in enumerate(order, 1):
            done = ", ".join(s["node"] for s in report["steps"]) or "none"
            try:
                report["steps"].append(_step(view, settings, layout, node_id, set(members), timeout_s, line))
            except RunbookError as exc:
                line.done()
                report.update(stopped_at=node_id, reason=str(exc))
                raise RollingRestartStopped(f"rolling restart stopped at {node_id} (step {k} of {len(order)}; done: "
                                            f"{done}): {exc}", report) from None
        line.done()
        return report


def _step(view: ClusterView, settings: Settings, layout: Layout, node_id: str, expected: set[str],
          timeout_s: float, line: StatusLine) -> dict[str, Any]:
    member = view.member(node_id)
    if member is None:
        raise RunbookError(f"{node_id} is no longer a member")
    started = time.monotonic()
    drained = drain_member(view, member, timeout_s, line)
    replacement = _wait(lambda: _replaced(view, member), timeout_s, line,
                        f"{node_id} left; waiting for its replacement to join",
                        f"no replacement of {node_id} joined within {timeout_s:g} s (does a process manager "
                        "restart it? start it by hand)")
    if member.role == "state" and any(layout.weight(replacement.group, c) for c in view.assignment()[0].shards):
        _wait(lambda: _owns(view, node_id), timeout_s, line, f"{node_id} rejoined; waiting for it to own shards",
              f"{node_id} rejoined but the map gave it no shard within {timeout_s:g} s (is an allocator running? "
              "see the state nodes' logs)")
    _wait(lambda: not _unhealthy(view, settings, expected), timeout_s, line, f"{node_id} back; checking health",
          lambda: f"cluster not healthy within {timeout_s:g} s after {node_id} came back: "
                  f"{_unhealthy(view, settings, expected)}")
    return {"node": node_id, "role": member.role, "incarnation": member.czxid, "replacement": replacement.czxid,
            "shards_moved_away": len(drained["shards"]), "took_s": round(time.monotonic() - started, 3), "healthy": True}


def _replaced(view: ClusterView, member: Member) -> Member | None:
    now = view.member(member.node_id)
    return now if now is not None and now.czxid != member.czxid else None


def _owns(view: ClusterView, node_id: str) -> bool:
    return any(o is not None and o.node == node_id for owners in view.assignment()[0].shards.values() for o in owners)


def _unhealthy(view: ClusterView, settings: Settings, expected: set[str]) -> str:
    """What is wrong (empty: healthy): a member missing, a category without a node, an unowned shard."""
    members = view.members()
    missing = sorted(expected - set(members))
    if missing:
        return f"not registered: {', '.join(missing)}"
    finding = check_layout(settings, members, view.assignment()[0].shards)
    return "" if finding.status == "ok" else finding.detail


def _wait(ready: Callable[[], Any], timeout_s: float, line: StatusLine, doing: str,
          failure: str | Callable[[], str]) -> Any:
    """Poll ``ready`` until it returns something true (returned); RunbookError(failure) after ``timeout_s``."""
    started = time.monotonic()
    while not (result := ready()):
        waited = time.monotonic() - started
        if waited > timeout_s:
            raise RunbookError(failure if isinstance(failure, str) else failure())
        line.show(doing, waited)
        time.sleep(POLL_S)
    return result


def print_rolling(report: dict[str, Any]) -> None:
    if report["dry_run"]:
        print("would restart, in this order: " + ", ".join(report["order"]))
        return
    for s in report["steps"]:
        print(f"  {s['role']:<5} {s['node']}: drained ({s['shards_moved_away']} shards moved), replaced and "
              f"healthy in {s['took_s']:.1f} s")
    if report["stopped_at"]:
        print(f"rolling restart STOPPED at {report['stopped_at']} after {len(report['steps'])} members")
    else:
        print(f"rolling restart done: {len(report['steps'])} members")
