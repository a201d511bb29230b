"""The composition floor: the one place that builds processes from settings.

It sits above ``edge`` and ``infrastructure``: only it constructs concrete adapters for a
process (journal, state node, transports, ZooKeeper coordinator, edges) and imports
``edge``; ``edge`` reaches the state side only through the transport port it is handed,
and ``infrastructure`` never imports ``edge`` or ``ops`` (README "How it fits together";
checked by the import-linter contracts in pyproject.toml).

- :mod:`ops.wiring.node`: a state node's parts and lifecycle (shared by every process with one)
- :mod:`ops.wiring.dev`: the one-process platform and its edge (``xplatform run``)
- :mod:`ops.wiring.readmodels`: the read side of ``xplatform run`` (secantusdb child, projectors, query API port)
- :mod:`ops.wiring.cluster`: cluster membership and routing (ZooKeeper + network client)
- :mod:`ops.wiring.state_node`: a clustered state node (``xplatform state-node``)
- :mod:`ops.wiring.edge`: a clustered public edge (``xplatform edge``)
- :mod:`ops.wiring.metrics`: ``/metrics``, served the same way by every process
- :mod:`ops.wiring.workers`: ``xplatform run --workers N`` (a state node and N edge worker processes on one port)
"""
