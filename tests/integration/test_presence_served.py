"""The presence sample served by setting alone (issue 11 item 5): ``xplatform run`` with
``XPLATFORM_ENTITIES=domain.presence:ENTITIES`` and a two-node cluster with the same, talked
to over websockets; in the cluster, users' ``UserState`` entities tell a ``Room`` on another
node (entity messages across the transport)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from edge.client import ClientError, connect
from tests.support.cluster import Cluster, cluster_token
from tests.support.xplatform_run import served

ROOT = Path(__file__).resolve().parents[2]
PRESENCE = {"XPLATFORM_ENTITIES": "domain.presence:ENTITIES"}


def test_run_serves_presence_alone_over_websockets(tmp_path: Path) -> None:
    env = {**os.environ, **PRESENCE, "XPLATFORM_DATA_DIR": str(tmp_path / "data")}
    with served(tmp_path, env) as url:
        asyncio.run(_presence_round(url))


async def _presence_round(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async def token(sub: str) -> str:
            async with session.get(f"{url}dev/token", params={"sub": sub}) as resp:
                return str((await resp.json())["token"])

        ann = await connect(url, "UserState", "ann", await token("ann"))
        bob = await connect(url, "UserState", "ann", await token("bob"))  # bob watches ann
        vic = await connect(url, "Room", "lobby", await token("vic"))  # vic watches the room
        try:
            assert ann.welcome["status"] == "online" and ann.welcome["settings"] == {}
            assert bob.welcome["devices"] == 1 and "settings" not in bob.welcome
            assert vic.welcome == {"type": "roster", "room": "lobby", "members": {}}
            assert (await ann.request({"type": "join_room", "room": "lobby"})).payload == {"rooms": ["lobby"]}
            assert await vic.next_push(10) == {"type": "member", "user": "ann", "status": "online", "text": "",
                                               "last_seen": 0.0}
            busy = await ann.request({"type": "set_status", "status": "busy", "text": "focus"})
            assert busy.ok and busy.payload["status"] == "busy"
            assert (await bob.next_push(10))["status"] == "busy"
            assert (await vic.next_push(10))["text"] == "focus"
            forged = await bob.request({"type": "set_status", "status": "away"})
            assert not forged.ok and forged.code == "not_authorised"
        finally:
            for client in (ann, bob, vic):
                await client.close()
        with pytest.raises(ClientError):  # only the presence sample is served: no Lot
            await connect(url, "Lot", "vase", await token("ann"))


def test_a_two_node_cluster_serves_presence_with_rooms_across_nodes(cluster: Cluster) -> None:
    nodes = ("node-a", "node-b")
    for node in nodes:
        cluster.start("state-node", node, **PRESENCE)
    edge = cluster.start("edge", "edge-1", **PRESENCE)
    base_url = edge.ready_line.split("ready on ")[1].rstrip("/")
    room = f"r{uuid.uuid4().hex[:8]}"
    users = [f"u{uuid.uuid4().hex[:6]}{i}" for i in range(12)]
    deadline = time.monotonic() + 30
    while True:  # until the map has both nodes and some users live on another node than the room
        try:
            owners = cluster.owners("UserState", users)
            room_owner = cluster.owners("Room", [room])[room]
        except Exception:  # noqa: BLE001 - no assignment written yet
            owners, room_owner = {}, ""
        if room_owner and set(owners.values()) == set(nodes):
            break
        assert time.monotonic() < deadline, f"the shard map never spread the users over both nodes\n{cluster.logs()}"
        time.sleep(0.1)
    assert any(owner != room_owner for owner in owners.values())

    async def scenario() -> dict[str, object]:
        clients = []
        try:
            for user in users:
                client = await connect(base_url, "UserState", user, cluster_token(user, "member"))
                clients.append(client)
                while True:  # a shard still moving answers retry: resend the same message ID
                    reply = await client.request({"type": "join_room", "room": room}, message_id=f"join-{user}")
                    if reply.ok or not reply.retryable:
                        break
                    await asyncio.sleep(0.05)
                assert reply.ok and reply.payload == {"rooms": [room]}, reply
            roster: dict[str, object] = {}
            give_up = time.monotonic() + 30
            while set(roster) != set(users) and time.monotonic() < give_up:  # the tells arrive after the replies
                watcher = await connect(base_url, "Room", room, cluster_token("vic", "member"))
                roster = watcher.welcome["members"]
                await watcher.close()
                await asyncio.sleep(0.1)
            return roster
        finally:
            for client in clients:
                await client.close()

    try:
        roster = asyncio.run(scenario())
    except BaseException:
        print(cluster.logs())
        raise
    assert set(roster) == set(users), cluster.logs()
    assert all(line == {"status": "online", "text": "", "last_seen": 0.0} for line in roster.values())
