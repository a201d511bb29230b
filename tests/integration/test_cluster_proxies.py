"""State proxies and the internal device edge on a real cluster (ops/local/cluster.py: state
node and edge processes, ZooKeeper, PostgreSQL) with a real HTTP primary on a thread of the
test (tests/support/primary.py)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import secrets
import time
import urllib.parse
from pathlib import Path
from typing import Any

from edge.client import connect
from tests.support.cluster import Cluster, cluster_token
from tests.support.primary import warehouse_thread
from tests.support.serial_device import SerialDevice

ENTITIES = {"XPLATFORM_ENTITIES": "tests.support.proxies:ENTITIES"}


def _device_env(tmp_path: Path, networks: str) -> dict[str, str]:
    secret = tmp_path / "device.secret"
    if not secret.exists():
        secret.write_text(secrets.token_urlsafe(48))
        secret.chmod(0o600)
    return {**ENTITIES, "XPLATFORM_EDGE_INTERNAL_NETWORKS": networks, "XPLATFORM_EDGE_DEVICE_SECRET_FILE": str(secret)}


def _request(base_url: str, path: str, body: dict[str, Any] | None = None, device: str = "gw1",
             source: str = "127.0.0.1", query: str = "") -> tuple[int, dict[str, Any]]:
    """POST ``body`` (GET when None) from the loopback address ``source``: (status, JSON answer)."""
    url = urllib.parse.urlsplit(f"{base_url}{path}")
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30, source_address=(source, 0))
    try:
        data = None if body is None else json.dumps(body).encode()
        connection.request("GET" if body is None else "POST", f"{url.path}?device={device}{query}", body=data,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:  # e.g. aiohttp's own 404 page: no such route on this edge
        return response.status, {"body": raw.decode(errors="replace")}


def _post(base_url: str, path: str, body: dict[str, Any], device: str = "gw1") -> tuple[int, dict[str, Any]]:
    return _request(base_url, path, body, device)


def _push_until_served(base_url: str, path: str, body: dict[str, Any], device: str = "gw1") -> tuple[int, dict[str, Any]]:
    """POST until the shard map has an owner for the entity (503 retry while the node joins)."""
    deadline = time.monotonic() + 30
    while True:
        status, answer = _post(base_url, path, body, device)
        if status != 503 or time.monotonic() > deadline:
            return status, answer
        time.sleep(0.1)


async def _answered(client: Any, command: dict[str, Any]) -> Any:
    """Send ``command`` as message ``cmd-1`` until it is answered other than ``retry`` (no owner
    yet, or the owner was just lost), as a client does."""
    deadline = time.monotonic() + 60
    while True:
        reply = await client.request(command, message_id="cmd-1", timeout=30)
        if reply.ok or not reply.retryable or time.monotonic() > deadline:
            return reply
        await asyncio.sleep(0.05)


def _events(cluster: Cluster, stream: str) -> list[str]:
    journal = cluster.journal()
    try:
        return [e.topic.rsplit(".", 1)[-1] for e in journal.read(stream)]
    finally:
        journal.close()


def test_clustered_edge_serves_the_internal_device_edge_with_its_allow_list(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start("state-node", "node-a", **ENTITIES)
    allowed = cluster.start("edge", "edge-in", **_device_env(tmp_path, "127.0.0.0/8=warehouse"))
    elsewhere = cluster.start("edge", "edge-out", **_device_env(tmp_path, "10.0.0.0/8=warehouse"))
    path = "/internal/StockLevel/sku-7/messages"
    push = {"message_id": "p-1", "payload": {"type": "push", "state": {"on_hand": 7, "reserved": 0}, "version": 3}}
    try:
        refused_status, refused = _post(elsewhere.ready_line.split("ready on ")[1].rstrip("/"), path, push)
        assert refused_status == 403 and refused["error"]["code"] == "network_not_allowed"
        assert _events(cluster, "StockLevel-sku-7") == []  # nothing reached the entity

        base_url = allowed.ready_line.split("ready on ")[1].rstrip("/")
        status, answer = _push_until_served(base_url, path, push)
        assert status == 200 and answer["ok"] and answer["payload"]["applied"] is True, answer
        status, answer = _post(base_url, path, {**push, "message_id": "p-2"})  # a duplicate push: nothing changes
        assert status == 200 and answer["payload"]["applied"] is False
        assert [e for e in _events(cluster, "StockLevel-sku-7") if e != "OwnerChanged"] == [
            "ConnectionAccepted", "RemoteStateReceived"]

        async def read() -> dict[str, Any]:  # a user reads what the device pushed, through the same edge
            async with await connect(base_url, "StockLevel", "sku-7", cluster_token("vic", "viewer")) as client:
                reply = await client.request({"type": "read"}, timeout=10)
                assert reply.ok, reply
                return reply.payload  # type: ignore[no-any-return]

        known = asyncio.run(read())["last_known"]
        assert known["state"] == {"on_hand": 7, "reserved": 0} and known["version"] == 3
    except AssertionError:
        print(cluster.logs())
        raise


def test_command_retried_across_kill9_of_the_proxys_node_is_applied_once(cluster: Cluster, tmp_path: Path) -> None:
    """The primary applies the command, its answer is held back, the proxy's node is killed
    (kill -9); the other node takes the shard over, the client resends its message (same ID),
    the proxy's deadline timer re-sends the command with the same key: the primary sees the
    key twice and applies it once; the client gets the pulled state pushed."""
    with warehouse_thread(honour_keys=True) as primary:
        primary.level("sku-1", 10)
        primary.hold_after_apply = asyncio.Event()  # never set here: the primary's stop releases it
        env = {**ENTITIES, "XPLATFORM_PROXY_PRIMARIES": f"FailoverStock={primary.url}"}
        nodes = {name: cluster.start("state-node", name, **env) for name in ("node-a", "node-b")}
        edge = cluster.start("edge", "edge-1", **env)
        base_url = edge.ready_line.split("ready on ")[1].rstrip("/")
        probes = [f"p{i}" for i in range(16)]
        deadline = time.monotonic() + 30
        while set(cluster.owners("FailoverStock", probes).values()) != set(nodes):  # both nodes in the map
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.1)
        token = cluster_token("carl", "clerk")
        command = {"type": "command", "command": {"op": "reserve", "qty": 4}}

        async def scenario() -> dict[str, Any]:
            async with await connect(base_url, "FailoverStock", "sku-1", token) as client:
                reply = await _answered(client, command)
                assert reply.ok and reply.payload["status"] == "pending", reply
                deadline = time.monotonic() + 30
                while not primary.applied:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.01)
                owner = cluster.owners("FailoverStock", ["sku-1"])["sku-1"]
                nodes[owner].kill9()  # mid-call: the primary applied the command, its answer is held
                primary.hold_after_apply = None  # the re-sent command is answered
                again = await _answered(client, command)  # the same message, until the new owner answers it
                assert again.ok and again.payload["status"] == "pending", again
                while True:
                    pushed = await client.next_push(timeout=60)
                    if isinstance(pushed, dict) and pushed.get("type") == "proxy_result":
                        return pushed

        try:
            answer = asyncio.run(scenario())
        except BaseException:
            print(cluster.logs())
            raise
        assert answer["ok"], answer
        assert answer["ok"] and answer["last_known"]["state"] == {"on_hand": 10, "reserved": 4}
        posts = [key for method, _sku, key in primary.log if method == "POST"]
        assert len(posts) == 2 and posts[0] == posts[1], primary.log
        assert primary.applied == [posts[0]] and primary.levels["sku-1"]["reserved"] == 4


def test_clustered_edge_serves_devices_on_a_port_of_their_own(cluster: Cluster, tmp_path: Path) -> None:
    """XPLATFORM_EDGE_INTERNAL_PORT=0: the device routes move to their own listener (printed as
    "(devices: <url>)" in the ready line); the public port answers 404 for them; an address
    outside the allow-list is refused there and nothing reaches the entity."""
    entities = {"XPLATFORM_ENTITIES": "tests.edge.entities:Room"}
    cluster.start("state-node", "node-a", **entities)
    edge = cluster.start("edge", "edge-1", **{**_device_env(tmp_path, "127.0.0.1/32=member"), **entities,
                                               "XPLATFORM_EDGE_INTERNAL_PORT": "0",
                                               "XPLATFORM_EDGE_INTERNAL_HOST": "127.0.0.1"})
    assert edge.ready_line.index("(devices: ") < edge.ready_line.index("ready on ")  # the public URL stays last
    devices = edge.devices_url.rstrip("/")
    assert devices.endswith("/internal") and devices != edge.base_url + "/internal"
    push = {"message_id": "d-1", "payload": {"type": "set", "value": 4}}
    try:
        status, refused = _request(devices, "/Room/r1/messages", push, source="127.0.0.2")  # not 127.0.0.1/32
        assert status == 403 and refused["error"]["code"] == "network_not_allowed", refused
        status, _ = _request(edge.base_url, "/internal/Room/r1/messages", push)  # the public port: no device routes
        assert status == 404
        status, _ = _request(edge.base_url, "/internal/Room/r1/messages", None, query="&cursor=0")
        assert status == 404
        assert _events(cluster, "Room-r1") == []  # nothing reached the entity

        status, answer = _push_until_served(devices, "/Room/r1/messages", push, device="sensor-1")
        assert status == 200 and answer == {"message_id": "d-1", "ok": True, "payload": 4}, answer
        status, pulled = _request(devices, "/Room/r1/messages", None, device="sensor-1", query="&cursor=0&wait=10")
        assert status == 200 and [m["payload"] for m in pulled["messages"]] == [{"value": 4}], pulled
        assert [e for e in _events(cluster, "Room-r1") if e != "OwnerChanged"] == ["ConnectionAccepted", "Set"]
    except AssertionError:
        print(cluster.logs())
        raise


def test_clustered_edge_serves_a_device_on_a_serial_line(cluster: Cluster, tmp_path: Path) -> None:
    """XPLATFORM_EDGE_SERIAL_PORTS on `xplatform edge`: the edge process opens the slave side
    of a pseudo-terminal pair, the test is the device on the master side; the push reaches the
    entity on its state node as the configured device, and a pull brings back its broadcast."""
    master, slave = os.openpty()
    entities = {"XPLATFORM_ENTITIES": "tests.edge.entities:Room"}
    try:
        cluster.start("state-node", "node-a", **entities)
        cluster.start("edge", "edge-1", **{**_device_env(tmp_path, ""), **entities,
                                            "XPLATFORM_EDGE_SERIAL_PORTS": f"{os.ttyname(slave)}=member:uart-9"})
        push = {"type": "push", "category": "Room", "entity_id": "r9", "message_id": "u-1",
                "payload": {"type": "set", "value": 9}}

        async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
            device = SerialDevice(master)
            deadline = time.monotonic() + 30
            while True:  # retryable until the shard map has an owner for Room/r9
                answer = await device.ask(push)
                if not answer.get("error", {}).get("retryable") or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            pulled: dict[str, Any] = {}
            while time.monotonic() < deadline and not pulled.get("messages"):
                pulled = await device.ask({"type": "pull", "category": "Room", "entity_id": "r9"})
                await asyncio.sleep(0.02 if not pulled.get("messages") else 0)
            return answer, pulled

        answer, pulled = asyncio.run(scenario())
        assert answer == {"type": "reply", "message_id": "u-1", "ok": True, "payload": 9}, answer
        assert [m["payload"] for m in pulled["messages"]] == [{"value": 9}], pulled
        assert [e for e in _events(cluster, "Room-r9") if e != "OwnerChanged"] == ["ConnectionAccepted", "Set"]
    except AssertionError:
        print(cluster.logs())
        raise
    finally:
        os.close(master)
        os.close(slave)
