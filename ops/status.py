"""``xplatform status``: what the cluster looks like now, read from ZooKeeper (runbook tool).

Prints the members (role, group, address), the shard map version, and how many shards of
each category every state node owns; shards without an owner are called out. Read-only:
safe to run at any time, from any machine that reaches ZooKeeper - with the cluster's
ZooKeeper credentials (XPLATFORM_ZOOKEEPER_PASSWORD_FILE): nobody else may read the map.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from infrastructure.errors import InfrastructureError
from infrastructure.settings import Settings
from ops.runbook.view import ClusterView


class StatusError(InfrastructureError):
    """Raised when the cluster's state cannot be read from ZooKeeper."""


def read_status(settings: Settings) -> dict[str, Any]:
    """Members and shard ownership of ``settings.cluster_name`` (see the module docstring)."""
    with ClusterView(settings, StatusError) as view:
        members = {node: member.info for node, member in view.members().items()}
        assignment, _stat = view.assignment()
    owned: dict[str, Counter[str]] = {}
    unowned: dict[str, int] = {}
    for category, owners in assignment.shards.items():
        owned[category] = Counter(o.node for o in owners if o is not None)
        unowned[category] = sum(1 for o in owners if o is None)
    return {"cluster": settings.cluster_name, "map_version": assignment.version, "members": members,
            "owned": {c: dict(n) for c, n in owned.items()}, "unowned": unowned}


def print_status(settings: Settings) -> None:
    status = read_status(settings)
    print(f"cluster {status['cluster']}: shard map v{status['map_version']}")
    for node, info in status["members"].items():
        print(f"  {node:<16} {info.get('role', '?'):<6} group={info.get('group', '-'):<10} {info.get('address', '')}")
    for category, per_node in sorted(status["owned"].items()):
        spread = ", ".join(f"{node}={count}" for node, count in sorted(per_node.items())) or "-"
        missing = status["unowned"].get(category, 0)
        print(f"  {category}: {spread}" + (f"  UNOWNED: {missing}" if missing else ""))
