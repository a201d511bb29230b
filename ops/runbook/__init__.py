"""Runbook commands: ``xplatform drain``, ``rolling-restart``, ``rebalance``, ``doctor`` and
``drill failover`` (ops/RUNBOOK.md documents each next to its prose).

They reach the cluster through ZooKeeper only, with the cluster's credentials
(``XPLATFORM_ZOOKEEPER_PASSWORD_FILE``): from any machine that reaches ZooKeeper, without SSH
or PIDs. A member is asked to drain by a request znode it watches
(infrastructure/cluster/requests.py). Each command that changes the cluster has
``--dry-run``; each has ``--json`` for scripts; waiting shows a live status line on stderr;
a command that cannot finish exits non-zero with one line saying why (:class:`RunbookError`).
"""

from infrastructure.errors import InfrastructureError


class RunbookError(InfrastructureError):
    """Raised when a runbook command cannot do what it was asked (the message says why and,
    where there is one, what to do)."""
