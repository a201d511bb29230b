"""Operator requests to members through ZooKeeper (infrastructure/cluster/requests.py), on a
real ZooKeeper: a request is taken only by the member incarnation it names, only from
holders of the cluster's ZooKeeper credentials, and ``kill`` only where drills are enabled."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from infrastructure.cluster.requests import MemberRequest, RequestWatch
from infrastructure.cluster.zookeeper import ZooKeeperAuth, zookeeper_client
from tests.support.servers import ZooKeeperServer


def _answer(zk: KazooClient, path: str, timeout: float = 10.0) -> dict:
    """The request's data once the member answered it."""
    deadline = time.monotonic() + timeout
    while True:
        raw = json.loads(zk.get(path)[0])
        if "state" in raw:
            return raw
        assert time.monotonic() < deadline, f"no answer to {raw}"
        time.sleep(0.02)


def test_a_request_is_taken_only_by_its_incarnation_from_credential_holders(zookeeper: ZooKeeperServer) -> None:
    auth = ZooKeeperAuth("xplatform", secrets.token_urlsafe(24))
    root = f"/xplatform/req{uuid.uuid4().hex[:6]}"
    member, operator = zookeeper_client(zookeeper.hosts, auth), zookeeper_client(zookeeper.hosts, auth)
    anonymous = KazooClient(hosts=zookeeper.hosts)
    for zk in (member, operator, anonymous):
        zk.start(10)
    taken: list[str] = []
    drilled: list[str] = []

    async def scenario() -> None:
        if not member.exists("/xplatform"):  # as a cluster's first member makes it: others may add their roots
            member.create("/xplatform", acl=auth.parent_acl)
        member.ensure_path(f"{root}/members")
        for node in ("node-a", "node-b"):
            member.create(f"{root}/members/{node}", b"{}", ephemeral=True)
        await RequestWatch(member, root, "node-a", auth, taken.append).start()
        await RequestWatch(member, root, "node-b", auth, drilled.append, drills_enabled=True).start()
        a_path, b_path = f"{root}/requests/node-a", f"{root}/requests/node-b"
        incarnation = operator.exists(f"{root}/members/node-a").czxid

        with pytest.raises(NoAuthError):  # no credentials, no request
            anonymous.create(a_path, MemberRequest("drain", incarnation).to_bytes(), ephemeral=True)

        # A request naming another incarnation (the process a replacement took over from): ignored.
        operator.create(a_path, MemberRequest("drain", incarnation - 1, "stale").to_bytes(), ephemeral=True)
        await asyncio.sleep(0.3)
        assert "state" not in json.loads(operator.get(a_path)[0])
        operator.delete(a_path)

        # kill without drills: refused with the reason; nothing handed to the process.
        operator.create(a_path, MemberRequest("kill", incarnation, "k").to_bytes(), ephemeral=True)
        refused = await asyncio.to_thread(_answer, operator, a_path)
        assert refused["state"] == "refused" and "XPLATFORM_DRILLS_ENABLED=1" in refused["reason"]
        operator.delete(a_path)

        # The right incarnation: accepted once, handed to the process on its loop.
        operator.create(a_path, MemberRequest("drain", incarnation, "d").to_bytes(), ephemeral=True)
        accepted = await asyncio.to_thread(_answer, operator, a_path)
        assert accepted["state"] == "accepted" and accepted["id"] == "d"
        for _ in range(100):
            if taken:
                break
            await asyncio.sleep(0.01)

        # A member that allows drills takes a kill.
        b_incarnation = operator.exists(f"{root}/members/node-b").czxid
        operator.create(b_path, MemberRequest("kill", b_incarnation, "x").to_bytes(), ephemeral=True)
        assert (await asyncio.to_thread(_answer, operator, b_path))["state"] == "accepted"
        for _ in range(100):
            if drilled:
                break
            await asyncio.sleep(0.01)

    try:
        asyncio.run(scenario())
        assert taken == ["drain"] and drilled == ["kill"]
        acl, _ = operator.get_acls(f"{root}/requests")
        assert [(a.id.scheme, a.perms) for a in acl] == [("digest", 31)]  # the cluster's user only
    finally:
        for zk in (member, operator, anonymous):
            zk.stop()
            zk.close()
