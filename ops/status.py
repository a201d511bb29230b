"""``xplatform status``: what the cluster looks like now, read from ZooKeeper (runbook tool).

Prints the members (role, group, address; a standby's mirror lag in events), the shard map
version, how many shards of each category every state node owns and stands by for (hot
mirrors), and each shard's owner and standby; shards without an owner are called out. Read-only:
safe to run at any time, from any machine that reaches ZooKeeper - with the cluster's
ZooKeeper credentials (XPLATFORM_ZOOKEEPER_PASSWORD_FILE): nobody else may read the map.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from infrastructure.cluster.allocation import ShardOwner
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
    standing = {c: dict(Counter(s.node for s in standbys if s is not None)) for c, standbys in assignment.standbys.items()}
    shards = {c: [[None if o is None else o.node, _node(assignment.standby(c, i))] for i, o in enumerate(owners)]
              for c, owners in assignment.shards.items()}
    return {"cluster": settings.cluster_name, "map_version": assignment.version, "members": members,
            "owned": {c: dict(n) for c, n in owned.items()}, "unowned": unowned, "standby": standing,
            "shards": shards}


def _node(owner: ShardOwner | None) -> str | None:
    return None if owner is None else owner.node


def print_status(settings: Settings) -> None:
    status = read_status(settings)
    print(f"cluster {status['cluster']}: shard map v{status['map_version']}")
    for node, info in status["members"].items():
        lag = info.get("mirror_lag")
        print(f"  {node:<16} {info.get('role', '?'):<6} group={info.get('group', '-'):<10} {info.get('address', '')}"
              + ("" if lag is None else f"  standby lag={lag} events"))
    for category, per_node in sorted(status["owned"].items()):
        spread = ", ".join(f"{node}={count}" for node, count in sorted(per_node.items())) or "-"
        missing = status["unowned"].get(category, 0)
        standing = status["standby"].get(category)
        print(f"  {category}: {spread}" + (f"  UNOWNED: {missing}" if missing else "")
              + ("" if standing is None else "  standby: " + (", ".join(f"{n}={c}" for n, c in sorted(standing.items())) or "-")))
    for category, shards in sorted(status["shards"].items()):
        if category in status["standby"]:
            print(f"  {category} shards (owner/standby): "
                  + " ".join(f"{i}:{owner or '-'}/{standby or '-'}" for i, (owner, standby) in enumerate(shards)))
