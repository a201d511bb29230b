"""Running the runbook commands (``xplatform drain`` ...) against a local cluster, as an
operator would: a separate process with the cluster's settings and credentials."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid

from infrastructure.cluster.allocation import Assignment
from tests.support.chat_load import ChatLoad
from tests.support.cluster import Cluster


def xplatform(cluster: Cluster, *args: str, timeout: float = 120.0, **env: str) -> subprocess.CompletedProcess[str]:
    """``xplatform ARGS`` with the cluster's variables (``env`` overrides some)."""
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], env={**cluster.env("ops"), **env},
                          capture_output=True, text=True, timeout=timeout)


def report_of(done: subprocess.CompletedProcess[str]) -> dict:
    """The JSON report of a ``--json`` run that succeeded."""
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr}"
    return json.loads(done.stdout)


def shard_map(cluster: Cluster) -> Assignment:
    zk = cluster._zk()  # noqa: SLF001 - the test reads the map as the nodes do
    try:
        data, _ = zk.get(f"/xplatform/{cluster.name}/assignment")
    finally:
        zk.stop()
        zk.close()
    return Assignment.from_json(json.loads(data)) if data else Assignment()


def owned_by(assignment: Assignment, node: str) -> list[tuple[str, int]]:
    return sorted((c, i) for c, owners in assignment.shards.items() for i, o in enumerate(owners)
                  if o is not None and o.node == node)


def wait_for_map(cluster: Cluster, nodes: set[str], timeout: float = 15.0) -> Assignment:
    """Until the shard map gives shards to exactly ``nodes`` (no shard unowned)."""
    deadline = time.monotonic() + timeout
    while True:
        assignment = shard_map(cluster)
        owners = {o.node if o else None for owners in assignment.shards.values() for o in owners}
        if owners == nodes:
            return assignment
        assert time.monotonic() < deadline, f"map owners {owners}, expected {nodes}\n{cluster.logs()}"
        time.sleep(0.05)


def under_chat_load(cluster: Cluster, url: str, *args: str, lots: int = 4) -> tuple[ChatLoad, dict]:
    """``xplatform ARGS --json`` while a client per lot chats through the edge at ``url``
    (from half a second before to half a second after); what the clients saw and the report.
    The clients' lots are new (``chat-<random>-<n>``): check them with ``load.check_stored``."""
    names = [f"chat-{uuid.uuid4().hex[:6]}-{i}" for i in range(lots)]

    async def scenario() -> tuple[ChatLoad, dict]:
        load = ChatLoad([url], names)
        load.start()
        await asyncio.sleep(0.5)
        done = await asyncio.to_thread(xplatform, cluster, *args, "--json")
        await asyncio.sleep(0.5)
        await load.stop()
        return load, report_of(done)

    try:
        return asyncio.run(scenario())
    except BaseException:
        print(cluster.logs())
        raise
