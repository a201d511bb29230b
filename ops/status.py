"""``xplatform status``: what the cluster looks like now, read from ZooKeeper (runbook tool).

Prints the members (role, group, address; a standby's mirror lag in events), the shard map
version, how many shards of each category every state node owns and stands by for (hot
mirrors), and each shard's owner and standby; shards without an owner are called out. Read-only:
safe to run at any time, from any machine that reaches ZooKeeper - with the cluster's
ZooKeeper credentials (XPLATFORM_ZOOKEEPER_PASSWORD_FILE): nobody else may read the map.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from kazoo.exceptions import KazooException, NoAuthError, NoNodeError

from infrastructure.cluster.allocation import Assignment, ShardOwner
from infrastructure.cluster.zookeeper import ZooKeeperAuth, zookeeper_client
from infrastructure.errors import ConfigurationError, InfrastructureError
from infrastructure.settings import Settings


class StatusError(InfrastructureError):
    """Raised when the cluster's state cannot be read from ZooKeeper."""


def read_status(settings: Settings) -> dict[str, Any]:
    """Members and shard ownership of ``settings.cluster_name`` (see the module docstring)."""
    if not settings.zookeeper_hosts:
        raise ConfigurationError("status needs XPLATFORM_ZOOKEEPER_HOSTS")
    root = f"/xplatform/{settings.cluster_name}"
    zk = zookeeper_client(settings.zookeeper_hosts, ZooKeeperAuth.from_settings(settings),
                          timeout=settings.zk_session_timeout_s)
    try:
        zk.start(10)
        members = {}
        for node in sorted(zk.get_children(f"{root}/members")):
            try:
                members[node] = json.loads(zk.get(f"{root}/members/{node}")[0])
            except NoNodeError:
                continue
        data, _ = zk.get(f"{root}/assignment")
    except NoAuthError:
        raise StatusError(f"ZooKeeper refused to show cluster {settings.cluster_name!r}: set "
                          "XPLATFORM_ZOOKEEPER_USER/_PASSWORD_FILE to the cluster's credentials") from None
    except NoNodeError:
        raise StatusError(f"no cluster named {settings.cluster_name!r} in ZooKeeper at {settings.zookeeper_hosts}") from None
    except (KazooException, TimeoutError) as exc:
        raise StatusError(f"cannot read ZooKeeper at {settings.zookeeper_hosts}: {exc}") from exc
    finally:
        zk.stop()
        zk.close()
    assignment = Assignment.from_json(json.loads(data)) if data else Assignment()
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
