"""What the edge refuses to trust, over real sockets: hostile token headers and claims, DNS
rebinding (a page that reaches a loopback edge under its own name), unsolicited heartbeat
PONGs, device requests msgpack cannot carry, and device names that would pass for users."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from domain.refs import EntityRef
from edge.config import parse_networks
from tests.edge.harness import (
    ROOM,
    Edge,
    assert_untouched,
    eventually,
    forge,
    good_claims,
    new_cid,
    run_edge,
    still_serving,
    token,
)

PATH = f"/ws/{ROOM.category}/{ROOM.entity_id}"
LOOPBACK_MEMBERS = parse_networks("127.0.0.0/8=member")


# ---------------------------------------------------------------------------- token header and claims
@pytest.mark.parametrize("kid", [5, {"k": 1}, ["rsa-1"], True])
def test_a_kid_that_is_not_a_string_is_401_malformed_not_a_500(tmp_path: Path, kid: Any) -> None:
    async def scenario(edge: Edge) -> None:
        tok = forge({"alg": "RS256", "typ": "JWT", "kid": kid}, good_claims(), b"not-a-signature")
        status, body = await edge.upgrade(f"{PATH}?cid={new_cid()}", {"Authorization": f"Bearer {tok}"})
        assert (status, body["error"]) == (401, "malformed")
        assert edge.metric("xplatform_edge_auth_failures_total", {"reason": "malformed"}) == 1
        assert_untouched(edge)
        await still_serving(edge)

    run_edge(tmp_path, scenario)


@pytest.mark.parametrize("claim, value", [("exp", "9999999999"), ("nbf", "0"), ("iat", "0"), ("nbf", True),
                                          ("exp", [9999999999])])
def test_time_claims_that_are_not_numbers_are_refused(tmp_path: Path, claim: str, value: Any) -> None:
    """A string ``exp`` passed PyJWT's check (it calls int() on it) and the edge, which only
    schedules the expiry of a number, then never ended the connection."""
    async def scenario(edge: Edge) -> None:
        tok = token("ann", **{claim: value})
        status, body = await edge.upgrade(f"{PATH}?cid={new_cid()}", {"Authorization": f"Bearer {tok}"})
        assert (status, body["error"]) == (401, "malformed")
        assert_untouched(edge)

    run_edge(tmp_path, scenario)


def test_a_token_cannot_claim_a_device_subject(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        tok = token("device:member:sensor-1")
        status, body = await edge.upgrade(f"{PATH}?cid={new_cid()}", {"Authorization": f"Bearer {tok}"})
        assert (status, body["error"]) == (401, "malformed") and "device:" in body["reason"]
        assert_untouched(edge)

    run_edge(tmp_path, scenario)


# ---------------------------------------------------------------------------- DNS rebinding
def test_origin_is_compared_with_loopback_origins_not_with_the_host_header(tmp_path: Path) -> None:
    """A DNS-rebinding page (evil.test resolving to 127.0.0.1) sends Origin and Host both
    naming evil.test: equal, so comparing the two let it in. With no allowed origins set,
    only loopback origins on the edge's own port are allowed."""
    async def scenario(edge: Edge) -> None:
        port = edge.base_url.rsplit(":", 1)[1]
        for origin in (f"http://evil.test:{port}", f"http://localhost.evil.test:{port}", "null"):
            status, body = await edge.upgrade(f"{PATH}?cid={new_cid()}", {
                "Authorization": f"Bearer {token()}", "Origin": origin, "Host": origin.partition("://")[2] or "x"})
            assert (status, body["error"]) == (403, "origin_not_allowed"), origin
        assert_untouched(edge)
        for origin in (f"http://localhost:{port}", f"http://127.0.0.1:{port}"):
            client = await edge.client(origin=origin)
            await client.close()

    run_edge(tmp_path, scenario)


def test_dev_tokens_are_served_to_loopback_host_names_only(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        port = edge.base_url.rsplit(":", 1)[1]
        async with aiohttp.ClientSession() as session:
            for host, status in ((f"evil.test:{port}", 403), (f"127.0.0.1.nip.io:{port}", 403), ("", 403),
                                 (f"localhost:{port}", 200), (f"127.0.0.1:{port}", 200), (f"[::1]:{port}", 200)):
                async with session.get(f"{edge.base_url}/dev/token", params={"sub": "ann"},
                                       headers={"Host": host}) as resp:
                    body = await resp.json()
                    assert resp.status == status, (host, body)
                    assert ("token" in body) == (status == 200)
                    if status == 403:
                        assert body["error"] == "host_not_allowed"

    run_edge(tmp_path, scenario, dev_tokens=True)


# ---------------------------------------------------------------------------- heartbeat
def test_only_the_pong_of_the_outstanding_ping_is_recorded_as_a_heartbeat_rtt(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        rtt = "xplatform_edge_heartbeat_rtt_seconds_count"
        headers = {"Authorization": f"Bearer {token()}"}
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"{edge.base_url}{PATH}?cid={new_cid()}", protocols=("xplatform.v1",), headers=headers,
                autoping=True) as ws:
            assert (await ws.receive()).data[1] == 10  # WELCOME
            for sent_ns in (0, 1, -5, 2**62):  # unsolicited, claiming pings sent whenever it likes
                await ws.pong(struct.pack("!q", sent_ns))
            await ws.pong(b"")
            await ws.send_bytes(b"\x92\x02\x01")  # [PING, 1]: its PONG comes after the pongs were read
            assert (await ws.receive()).data[1] == 13
            assert edge.metric(rtt) == 0
            [conn] = [c for c in edge.public.registry]
            conn.send_ping()  # the edge's heartbeat; aiohttp's client answers it by itself
            await ws.send_bytes(b"\x92\x02\x02")
            assert (await ws.receive()).data[1] == 13
            await eventually(lambda: edge.metric(rtt) == 1, what="the answered ping's RTT")
            await ws.pong(struct.pack("!q", 0))  # the same ping answered twice counts once
            await ws.send_bytes(b"\x92\x02\x03")
            assert (await ws.receive()).data[1] == 13
            assert edge.metric(rtt) == 1

    run_edge(tmp_path, scenario)


# ---------------------------------------------------------------------------- internal edge
async def _device_post(edge: Edge, raw: bytes, device: str = "sensor-1", category: str = "Room",
                       entity_id: str = "r1") -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            f"{edge.base_url}/internal/{category}/{entity_id}/messages", params={"device": device}, data=raw,
            headers={"Content-Type": "application/json"}) as resp:
        return resp.status, json.loads(await resp.read())


@pytest.mark.parametrize("payload, error", [
    ("[" * 20000 + "]" * 20000, "malformed"),       # deeper than Python's JSON parser goes
    (str(2**64), "bad_payload"),
    (str(-(2**63) - 1), "bad_payload"),
    ("{\"a\": [1, " + str(2**70) + "]}", "bad_payload"),
    ("NaN", "malformed"),
], ids=["deep-json", "2**64", "-2**63-1", "nested-2**70", "NaN"])
def test_device_payloads_msgpack_cannot_carry_are_400_not_500(tmp_path: Path, payload: str, error: str) -> None:
    async def scenario(edge: Edge) -> None:
        raw = f'{{"message_id": "m1", "payload": {payload}}}'.encode()
        status, body = await _device_post(edge, raw)
        assert (status, body["error"]["code"]) == (400, error)
        assert_untouched(edge)
        status, body = await _device_post(edge, b'{"message_id": "m2", "payload": {"type": "set", "value": 1}}')
        assert status == 200 and body["ok"]

    run_edge(tmp_path, scenario, internal_networks=LOOPBACK_MEMBERS)


def test_a_device_named_like_a_user_does_not_act_as_that_user(tmp_path: Path) -> None:
    """A device ``bob`` of class ``bidder`` used to connect with ``sub: bob``: its bid was
    held against user bob's credit. Devices are ``device:<class>:<id>`` now."""
    lot = EntityRef("Lot", "l1")

    async def scenario(edge: Edge) -> None:
        ann = await edge.client("ann", "auctioneer", ref=lot)
        assert (await ann.request({"type": "open", "title": "Vase", "increment": 10})).ok
        status, body = await _device_post(edge, b'{"message_id": "b1", "payload": {"type": "bid", "amount": 100}}',
                                          device="bob", category="Lot", entity_id="l1")
        assert status == 200 and body["ok"], body
        own_account = EntityRef("Bidder", "device:bidder:bob")
        await eventually(lambda: edge.event_types(own_account), what="the device's own account's hold")
        assert edge.event_types(EntityRef("Bidder", "bob")) == []  # user bob's credit untouched
        subs = {claims["sub"] for claims in edge.entity(lot).live_connections().values()}
        assert subs == {"ann", "device:bidder:bob"}
        await ann.close()

    run_edge(tmp_path, scenario, internal_networks=parse_networks("127.0.0.0/8=bidder"))


def test_device_connection_ids_are_keyed_by_the_device_secret(tmp_path: Path) -> None:
    """The same secret on two edges: the same connection ID (a device may move between
    edges); another secret: another ID (nobody without the secret can compute one)."""
    secrets = {"a": b"A" * 40, "b": b"B" * 40}
    seen: dict[str, str] = {}

    def run(name: str, secret: bytes) -> None:
        (tmp_path / name).mkdir()
        secret_file = tmp_path / name / "shared.secret"
        secret_file.write_bytes(secret)

        async def scenario(edge: Edge) -> None:
            status, _ = await _device_post(edge, b'{"message_id": "m1", "payload": {"type": "get"}}')
            assert status == 200
            [cid] = edge.entity().live_connections()
            seen[name] = cid

        run_edge(tmp_path / name, scenario, internal_networks=LOOPBACK_MEMBERS, device_secret_file=str(secret_file))

    run("edge-1", secrets["a"])
    run("edge-2", secrets["a"])
    run("edge-3", secrets["b"])
    assert seen["edge-1"] == seen["edge-2"] != seen["edge-3"]

