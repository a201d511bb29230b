"""The internal edge: devices push (POST) and pull (long-poll) over HTTP, admitted by network."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from edge.config import EdgeConfig, parse_networks
from edge.errors import EdgeConfigurationError
from tests.edge.harness import ROOM, Edge, eventually, run_edge

URL = "/internal/Room/r1/messages"
LOOPBACK = parse_networks("127.0.0.0/8=member")


async def _post(edge: Edge, body: Any, device: str = "sensor-1", raw: bytes | None = None,
                content_type: str = "application/json") -> tuple[int, Any]:
    data = raw if raw is not None else (msgpack.packb(body) if content_type == "application/msgpack"
                                        else __import__("json").dumps(body).encode())
    async with aiohttp.ClientSession() as session, session.post(
            f"{edge.base_url}{URL}", params={"device": device}, data=data,
            headers={"Content-Type": content_type}) as resp:
        payload = msgpack.unpackb(await resp.read()) if resp.content_type == "application/msgpack" else await resp.json()
        return resp.status, payload


async def _pull(edge: Edge, cursor: int = 0, wait: float = 0, device: str = "sensor-1") -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(
            f"{edge.base_url}{URL}", params={"device": device, "cursor": str(cursor), "wait": str(wait)}) as resp:
        return resp.status, await resp.json()


def test_device_push_is_answered_with_the_durable_reply(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        status, body = await _post(edge, {"message_id": "dev-m1", "payload": {"type": "set", "value": 4}})
        assert status == 200 and body == {"message_id": "dev-m1", "ok": True, "payload": 4}
        assert edge.event_types() == ["ConnectionAccepted", "Set"]
        claims = next(iter(edge.entity().live_connections().values()))
        assert claims == {"sub": "device:member:sensor-1", "role": "member", "device_class": "member", "auth": "network"}
        status, body = await _post(edge, {"message_id": "dev-m1", "payload": {"type": "set", "value": 4}})
        assert status == 200 and len(edge.event_types()) == 2  # same ID: applied once
        status, body = await _post(edge, {"message_id": "dev-m2", "payload": {"type": "nope"}},
                                   content_type="application/msgpack")
        assert status == 422 and body["error"]["code"] == "unknown_message_type"

    run_edge(tmp_path, scenario, internal_networks=LOOPBACK)


def test_device_pull_long_polls_outbound_messages_since_a_cursor(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        status, body = await _pull(edge)
        assert status == 200 and body["messages"] == [] and body["cursor"] == 0
        waiting = asyncio.create_task(_pull(edge, cursor=0, wait=5))
        await asyncio.sleep(0.05)
        ann = await edge.client("ann")
        await ann.request({"type": "say", "text": "hello devices"})
        status, body = await waiting
        assert status == 200 and [m["payload"] for m in body["messages"]] == [{"text": "hello devices"}]
        cursor = body["cursor"]
        for value in range(1, 6):
            await ann.request({"type": "set", "value": value})
        await asyncio.sleep(0.1)
        status, body = await _pull(edge, cursor=cursor)
        assert [m["payload"] for m in body["messages"]][-1] == {"value": 5}
        assert len(body["messages"]) < 5 or body["messages"] == sorted(body["messages"], key=lambda m: m["seq"])
        status, again = await _pull(edge, cursor=body["cursor"])
        assert again["messages"] == []
        await ann.close()

    run_edge(tmp_path, scenario, internal_networks=LOOPBACK)


def test_address_outside_the_device_networks_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        status, body = await _post(edge, {"message_id": "m1", "payload": {"type": "set", "value": 1}})
        assert status == 403 and body["error"]["code"] == "network_not_allowed"
        status, body = await _pull(edge)
        assert status == 403
        assert edge.entity() is None and edge.event_types() == []

    run_edge(tmp_path, scenario, internal_networks=parse_networks("10.0.0.0/8=member"))


@pytest.mark.parametrize("raw, content_type, device, status, error", [
    (b"{not json", "application/json", "sensor-1", 400, "malformed"),
    (b"\xc1", "application/msgpack", "sensor-1", 400, "malformed"),
    (b'{"payload": {"type": "set", "value": 1}}', "application/json", "sensor-1", 400, "bad_message_id"),
    (b'{"message_id": "m1"}', "application/json", "sensor-1", 400, "malformed"),
    (b'{"message_id": "m1", "payload": 1, "extra": 2}', "application/json", "sensor-1", 400, "malformed"),
    (b'{"message_id": "m1", "payload": 1}', "text/plain", "sensor-1", 415, "unsupported_media_type"),
    (b'{"message_id": "m1", "payload": 1}', "application/json", "bad device!", 400, "bad_device_id"),
])
def test_bad_device_requests_get_4xx_json_and_change_nothing(tmp_path: Path, raw: bytes, content_type: str,
                                                               device: str, status: int, error: str) -> None:
    async def scenario(edge: Edge) -> None:
        got, body = await _post(edge, None, device=device, raw=raw, content_type=content_type)
        assert (got, body["error"]["code"]) == (status, error)
        assert edge.entity() is None and edge.event_types() == []

    run_edge(tmp_path, scenario, internal_networks=LOOPBACK)


def test_idle_device_is_disconnected(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        await _post(edge, {"message_id": "m1", "payload": {"type": "get"}})
        [cid] = edge.entity().live_connections()
        await eventually(lambda: not edge.entity().is_live(cid), timeout=3, what="idle disconnect")

    run_edge(tmp_path, scenario, internal_networks=LOOPBACK, internal_idle_s=0.3)


def test_unknown_category_for_a_device_is_404(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        async with aiohttp.ClientSession() as session, session.post(
                f"{edge.base_url}/internal/Nope/x/messages?device=d1", json={"message_id": "m", "payload": {}}) as resp:
            assert resp.status == 404
        assert edge.platform.node.resident(ROOM) is None

    run_edge(tmp_path, scenario, internal_networks=LOOPBACK)


@pytest.mark.parametrize("device_class", ["bidder:bob", "a/b", "a b", "x" * 65])
def test_a_device_class_that_could_blur_device_subjects_stops_the_edge_at_start(device_class: str) -> None:
    """With a class ``bidder:bob``, device ``x`` would be ``device:bidder:bob:x`` - the subject
    of device ``bob:x`` of class ``bidder``. Such a class is refused when the edge is configured."""
    with pytest.raises(EdgeConfigurationError, match="XPLATFORM_EDGE_INTERNAL_NETWORKS"):
        EdgeConfig(dev_tokens=True, internal_networks=((ipaddress.ip_network("10.0.0.0/8"), device_class),))
    with pytest.raises(EdgeConfigurationError, match="XPLATFORM_EDGE_INTERNAL_NETWORKS"):
        EdgeConfig(dev_tokens=True, internal_networks=parse_networks(f"10.0.0.0/8={device_class}"))


def test_a_device_id_with_colons_keeps_one_subject(tmp_path: Path) -> None:
    """Classes hold no ':', so the class is what precedes the first one: the subject of device
    ``aa:bb:cc`` of class ``member`` is that device's only."""
    async def scenario(edge: Edge) -> None:
        status, _ = await _post(edge, {"message_id": "mac-1", "payload": {"type": "set", "value": 1}}, device="aa:bb:cc")
        assert status == 200
        (claims,) = edge.entity().live_connections().values()
        assert claims["sub"] == "device:member:aa:bb:cc"
        assert claims["sub"].removeprefix("device:").partition(":") == ("member", ":", "aa:bb:cc")

    run_edge(tmp_path, scenario, internal_networks=LOOPBACK)


def test_device_connect_refused_for_a_transient_reason_is_503_retryable_not_403(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        status, body = await _post(edge, {"message_id": "dev-m1", "payload": {"type": "set", "value": 1}})
        assert status == 503 and body["error"] == {"code": "retry", "reason": "come back in a moment",
                                                   "retryable": True}
        assert edge.event_types() == []

    run_edge(tmp_path, scenario, internal_networks=parse_networks("127.0.0.0/8=later"))


def test_device_edge_on_its_own_port_leaves_the_public_port_without_device_routes(tmp_path: Path) -> None:
    """``internal_port`` 0: devices reach the entity through their own listener, with the same
    allow-list (127.0.0.2 is outside 127.0.0.1/32: refused, nothing changes); the public port 404s."""
    from edge.internal_listener import INTERNAL_LISTENER_KEY

    async def scenario(edge: Edge) -> None:
        devices = edge.app[INTERNAL_LISTENER_KEY].url.rstrip("/")
        body = {"message_id": "own-1", "payload": {"type": "set", "value": 6}}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as session, \
                session.post(f"{devices}/Room/r1/messages", params={"device": "s1"}, json=body) as resp:
            assert resp.status == 403 and (await resp.json())["error"]["code"] == "network_not_allowed"
        async with aiohttp.ClientSession() as session, session.post(f"{edge.base_url}{URL}", json=body) as resp:
            assert resp.status == 404  # the public port
        assert edge.entity() is None and edge.event_types() == []
        async with aiohttp.ClientSession() as session, \
                session.post(f"{devices}/Room/r1/messages", params={"device": "s1"}, json=body) as resp:
            assert resp.status == 200 and (await resp.json())["payload"] == 6
        assert edge.event_types() == ["ConnectionAccepted", "Set"]

    run_edge(tmp_path, scenario, internal_networks=parse_networks("127.0.0.1/32=member"), internal_port=0)


def test_an_internal_port_out_of_range_stops_the_edge_at_start() -> None:
    with pytest.raises(EdgeConfigurationError, match="XPLATFORM_EDGE_INTERNAL_PORT"):
        EdgeConfig(dev_tokens=True, internal_port=-2)
