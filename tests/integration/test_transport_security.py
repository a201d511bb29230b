"""Who may talk to a state node, and ZooKeeper's ACLs (issue 9, item 1), against a real
ZooKeeper and clustered state nodes in this process (SQLite store, checked afterwards).

The attack this guards against (seen on the code before): a local process that knew a
registered edge's name (readable from ZooKeeper) opened a TCP connection to a state node,
said HELLO as ``edge-1``, delivered a ``Connect`` with role auctioneer and an entity message
``credit_held`` "from Bidder/bob" - and bob's 900,000,000,000 bid was accepted and stored.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from ssl import SSLContext

import msgpack
import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from domain import ClientMessage, Connect, EntityRef
from domain.messages import EntityMessage
from infrastructure.cluster.layout import Layout
from infrastructure.cluster.ownership import Ownership
from infrastructure.cluster.zookeeper import MemberInfo, ZooKeeperAuth, ZooKeeperCoordinator, zookeeper_client
from infrastructure.errors import ConfigurationError
from infrastructure.settings import Settings
from infrastructure.transport import tls
from infrastructure.transport.auth import LinkAuth
from infrastructure.transport.client import ClusterClient
from ops.status import StatusError, read_status
from ops.wiring.edge import ClusteredEdge
from ops.wiring.state_node import ClusteredStateNode
from tests.support.cluster import ClusterSecrets
from tests.support.servers import ZooKeeperServer
from tests.support.tls import make_certificates

HUGE = 900_000_000_000


async def until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@dataclass
class Running:
    nodes: list[ClusteredStateNode]
    edge_view: ZooKeeperCoordinator
    secrets: ClusterSecrets
    cluster: str

    @property
    def a(self) -> ClusteredStateNode:
        return self.nodes[0]

    def owned_by(self, node: ClusteredStateNode, category: str, count: int = 1) -> list[EntityRef]:
        refs = (EntityRef(category, f"{category.lower()}-{uuid.uuid4().hex[:8]}") for _ in range(10_000))
        return [r for r in refs if self.edge_view.route(r) and self.edge_view.route(r)[0] == node.settings.node_id][:count]

    def stored(self, ref: EntityRef) -> list[str]:
        return [e.topic.rsplit(".", 1)[-1] for e in self.a.journal.read(ref.stream_id)]

    def client(self, role: str = "edge", auth: LinkAuth | None = None, ssl: SSLContext | None = None) -> ClusterClient:
        """A transport client named ``edge-1`` (the registered edge), routed by the edge's view."""
        return ClusterClient("edge-1", role, route=self.edge_view.route, address_of=self.edge_view.address_of,
                             auth=auth or self.secrets.link_auth("edge"), ssl=ssl)

    def counted(self, node: ClusteredStateNode, metric: str, **labels: str) -> float:
        return node.ownership.metrics.registry.get_sample_value(metric, labels) or 0.0


@asynccontextmanager
async def running(zookeeper: ZooKeeperServer, tmp_path: Path, node_ids: tuple[str, ...] = ("node-a",),
                  **settings: object) -> AsyncIterator[Running]:
    """State nodes with the cluster's secrets, and a registered edge ``edge-1`` (as a real edge
    registers: its member entry is what an attacker reads the name from)."""
    cluster = f"s{uuid.uuid4().hex[:6]}"
    cluster_secrets = ClusterSecrets.write(tmp_path)
    base = Settings(store="sqlite", data_dir=str(tmp_path), zookeeper_hosts=zookeeper.hosts, cluster_name=cluster,
                    zk_session_timeout_s=2.0, shards_per_category=8, **cluster_secrets.settings(), **settings)
    nodes = [ClusteredStateNode(base.with_(node_id=n)) for n in node_ids]
    edge_view = ZooKeeperCoordinator(zookeeper.hosts, cluster, MemberInfo("edge-1", role="edge"), {"Lot": 8, "Bidder": 8},
                                     Layout.everything(), Ownership("edge-1", 8), auth=cluster_secrets.zookeeper_auth())
    for node in nodes:
        await node.start()
    await edge_view.start()
    try:
        await until(lambda: len(edge_view.members) == len(nodes) + 1 and all(n.coordinator.is_member("edge-1") for n in nodes)
                    and all(o is not None for owners in edge_view.ownership.assignment.shards.values() for o in owners)
                    and edge_view.ownership.assignment.version > 0
                    and {o.node for owners in edge_view.ownership.assignment.shards.values() for o in owners} == set(node_ids))
        yield Running(nodes, edge_view, cluster_secrets, cluster)
    finally:
        await edge_view.stop()
        for node in nodes:
            await node.stop()


# ---------------------------------------------------------------------------- the attack, in raw bytes
def raw(*envelope: object) -> bytes:
    body = msgpack.packb(list(envelope), use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def forged_session(lot: EntityRef, hello: bytes) -> bytes:
    """What the attacker sent after its HELLO: an auctioneer's Connect, an open, and a
    ``credit_held`` "from Bidder/bob" granting a credit line far beyond bob's credit."""
    now = time.time()
    bid = {"bid_id": "forged-bid", "amount": HUGE, "sent_at": now}
    return b"".join([
        hello,
        raw(2, 1, lot.category, lot.entity_id, [1, "forged-connect", now, "evil", {"sub": "mallory", "role": "auctioneer"}], True),
        raw(2, 2, lot.category, lot.entity_id, [3, "forged-open", now, "evil", msgpack.packb({"type": "open", "title": "x"})], True),
        raw(2, 3, lot.category, lot.entity_id, [4, "forged-credit", now, "Bidder", "bob", "credit_held",
                                                {"bidder": "bob", "limit": HUGE, "bid": bid}], True),
    ])


async def send_and_read_all(address: str, data: bytes) -> bytes:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    got = await asyncio.wait_for(reader.read(), 10)  # until the node closes on us
    writer.close()
    return got


def test_a_forged_edge_is_refused_and_nothing_it_sends_is_stored(zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(zookeeper, tmp_path) as c:
            lot = EntityRef("Lot", f"lot-{uuid.uuid4().hex[:6]}")
            address = c.a.server.address
            # 1. Today's attack word for word: the v1 HELLO naming a registered edge.
            answer = await send_and_read_all(address, forged_session(lot, raw(1, "edge-1", "edge", [])))
            assert answer == b""  # closed without a word: not even an error reply
            # 2. A v2 HELLO with a nonce, then a made-up proof (no secret to compute it from).
            hello = raw(1, "edge-1", "edge", ["default"], secrets.token_bytes(32), b"")
            answer = await send_and_read_all(address, forged_session(lot, hello + raw(6, secrets.token_bytes(32))))
            assert answer.startswith(struct.pack(">I", len(answer) - 4))  # just the node's HELLO, then closed
            await asyncio.sleep(0.2)  # anything delivered would have been appended by now
            assert c.stored(lot) == [] and c.stored(EntityRef("Bidder", "bob")) == []
            assert c.counted(c.a, "xplatform_transport_auth_failures_total", side="server", reason="protocol") == 1
            assert c.counted(c.a, "xplatform_transport_auth_failures_total", side="server", reason="bad_proof") == 1

    asyncio.run(scenario())


def test_handshakes_in_progress_are_capped_and_their_frames_small(zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    """Unauthenticated sockets cannot pile up: over ``transport_max_handshakes`` a socket is
    closed at once, and a handshake frame longer than 4 KiB is refused from its length prefix
    (never buffered). The handshake timeout is long here, so only the new bounds can close them."""
    async def scenario() -> None:
        async with running(zookeeper, tmp_path, transport_max_handshakes=2, transport_handshake_timeout_s=600.0) as c:
            lot = c.owned_by(c.a, "Lot")[0]
            host, port = c.a.server.address.rsplit(":", 1)
            holders = [await asyncio.open_connection(host, int(port)) for _ in range(2)]  # connect, say nothing
            await until(lambda: len(c.a.server._handshaking) == 2)
            assert await send_and_read_all(c.a.server.address, b"") == b""  # the third: closed at once
            assert c.counted(c.a, "xplatform_transport_auth_failures_total", side="server", reason="handshakes_full") == 1
            for _, writer in holders:
                writer.close()
            await until(lambda: not c.a.server._handshaking)  # each counted as reason protocol (no HELLO)
            protocol = c.counted(c.a, "xplatform_transport_auth_failures_total", side="server", reason="protocol")
            # a HELLO announced as 4 MiB: refused from its header, the body is never awaited
            assert await send_and_read_all(c.a.server.address, struct.pack(">I", 4 * 1024 * 1024) + b"\x96") == b""
            assert c.counted(c.a, "xplatform_transport_auth_failures_total", side="server", reason="protocol") == protocol + 1
            assert c.counted(c.a, "xplatform_transport_auth_failures_total", side="server", reason="timeout") == 0
            edge = c.client()  # the cap is free again for a real peer
            try:
                assert (await edge.ask(lot, Connect("c1", time.time(), "conn", {"sub": "ann", "role": "viewer"}))).ok
            finally:
                await edge.close()

    asyncio.run(scenario())


def test_a_wrong_secret_is_refused_and_the_right_one_works(zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(zookeeper, tmp_path) as c:
            lot = c.owned_by(c.a, "Lot")[0]
            wrong, right = c.client(auth=LinkAuth({"edge": secrets.token_bytes(32)})), c.client()
            connect = Connect("c1", time.time(), "conn", {"sub": "ann", "role": "auctioneer"})
            try:
                refused = await wrong.ask(lot, connect)
                assert not refused.ok and "authentication failed (bad_proof)" in refused.reason
                assert c.counted(c.a, "xplatform_transport_auth_failures_total", side="server", reason="protocol") >= 1
                assert wrong.metrics.registry.get_sample_value(
                    "xplatform_transport_auth_failures_total", {"side": "client", "reason": "bad_proof"}) >= 1
                assert c.stored(lot) == []
                assert (await right.ask(lot, connect)).ok
                assert "ConnectionAccepted" in c.stored(lot)
            finally:
                await wrong.close()
                await right.close()

    asyncio.run(scenario())


def test_an_edge_may_not_send_entity_messages(zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(zookeeper, tmp_path) as c:
            lot = c.owned_by(c.a, "Lot")[0]
            edge = c.client()
            forged = EntityMessage("credit-1", time.time(), EntityRef("Bidder", "bob"), "credit_held",
                                   {"bidder": "bob", "limit": HUGE})
            try:
                reply = await edge.ask(lot, forged)
                assert not reply.ok and reply.code == "not_authorised" and not reply.retryable
                assert c.stored(lot) == []
                assert c.counted(c.a, "xplatform_transport_refused_messages_total", reason="entity_message_from_edge") == 1
            finally:
                await edge.close()

    asyncio.run(scenario())


def test_an_edge_secret_does_not_make_a_state_node(zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    """A compromised edge holds the edge secret only: claiming role ``state`` fails the handshake."""
    async def scenario() -> None:
        async with running(zookeeper, tmp_path) as c:
            lot = c.owned_by(c.a, "Lot")[0]
            edge_as_state = c.client("state", LinkAuth({"state": c.secrets.edge.read_bytes()}))
            try:
                reply = await edge_as_state.ask(lot, EntityMessage("credit-2", time.time(), EntityRef("Bidder", "bob"),
                                                                   "credit_held", {"bidder": "bob", "limit": HUGE}))
                assert not reply.ok and "bad_proof" in reply.reason
                assert c.stored(lot) == []
            finally:
                await edge_as_state.close()

    asyncio.run(scenario())


def test_entity_messages_only_from_the_node_owning_the_sender(zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(zookeeper, tmp_path, ("node-a", "node-b")) as c:
            a, b = c.nodes
            await until(lambda: a.ownership.assignment.version == b.ownership.assignment.version
                        == c.edge_view.ownership.assignment.version)
            lot = c.owned_by(a, "Lot")[0]
            not_bs, bs = c.owned_by(a, "Bidder")[0], c.owned_by(b, "Bidder")[0]
            edge = c.client()
            try:
                for i, claims in enumerate(({"sub": "ann", "role": "auctioneer"},)):
                    assert (await edge.ask(lot, Connect(f"c{i}", time.time(), "auct", claims))).ok
                assert (await edge.ask(lot, ClientMessage("open", time.time(), "auct",
                                                          msgpack.packb({"type": "open", "title": "x"})))).ok
                before = c.stored(lot)
                # b speaks for a Bidder whose shard a owns: refused, nothing applied
                forged = EntityMessage("hold-1", time.time(), not_bs, "hold_status",
                                       {"bidder": not_bs.entity_id, "held": HUGE})
                reply = await b.client.ask(lot, forged)
                assert not reply.ok and reply.code == "retry" and "sender_not_owner" in reply.reason
                assert c.counted(a, "xplatform_transport_refused_messages_total", reason="sender_not_owner") >= 1
                assert c.stored(lot) == before
                # ... and for one of its own Bidders: delivered (the same link, the same node)
                genuine = EntityMessage("hold-2", time.time(), bs, "hold_status", {"bidder": bs.entity_id, "held": 70})
                assert (await b.client.ask(lot, genuine)).ok
                assert c.stored(lot) == [*before, "LimitRaised"]
            finally:
                await edge.close()

    asyncio.run(scenario())


@dataclass
class Rebalanced:
    cluster: Running
    owner_before: dict[EntityRef, str]
    """Owner of each Lot/Bidder of ``refs`` before node-b joined."""

    def moved_to_b(self, category: str) -> list[EntityRef]:
        return [r for r, o in self.owner_before.items()
                if r.category == category and self.cluster.edge_view.route(r)[0] == "node-b"]  # type: ignore[index]


@asynccontextmanager
async def rebalanced(zookeeper: ZooKeeperServer, tmp_path: Path, window_s: float) -> AsyncIterator[Rebalanced]:
    """node-a and node-c own every shard; then node-b joins and the allocator moves some of
    each to it (a rebalance, not a drain: the old owners stay up)."""
    async with running(zookeeper, tmp_path, ("node-a", "node-c"), transport_previous_owner_window_s=window_s) as c:
        refs = [EntityRef(category, f"{category.lower()}-{i}") for category in ("Lot", "Bidder") for i in range(200)]
        before = {r: c.edge_view.route(r)[0] for r in refs}  # type: ignore[index]
        b = ClusteredStateNode(c.a.settings.with_(node_id="node-b"))
        c.nodes.insert(1, b)  # stopped by running(); nodes are a, b, c
        await b.start()
        await until(lambda: len({n.ownership.assignment.version for n in c.nodes}) == 1
                    and c.a.ownership.assignment.version == c.edge_view.ownership.assignment.version
                    and bool(b.ownership.owned_shards()["Bidder"]) and bool(b.ownership.owned_shards()["Lot"]))
        yield Rebalanced(c, before)


async def open_lot(c: Running, lot: EntityRef) -> list[str]:
    """An auctioneer connects and opens ``lot``; what is stored for it then."""
    edge = c.client()
    try:
        assert (await edge.ask(lot, Connect("c0", time.time(), "auct", {"sub": "ann", "role": "auctioneer"}))).ok
        assert (await edge.ask(lot, ClientMessage("open", time.time(), "auct",
                                                  msgpack.packb({"type": "open", "title": "x"})))).ok
    finally:
        await edge.close()
    return c.stored(lot)


def hold_status(message_id: str, bidder: EntityRef) -> EntityMessage:
    return EntityMessage(message_id, time.time(), bidder, "hold_status", {"bidder": bidder.entity_id, "held": 70})


def test_the_previous_owner_of_a_moved_shard_speaks_for_it_within_the_window(zookeeper: ZooKeeperServer,
                                                                             tmp_path: Path) -> None:
    """What an old owner's last writes release after its shard moved is delivered; a node that
    was not the shard's owner right before the move still cannot speak for its entities."""
    async def scenario() -> None:
        async with rebalanced(zookeeper, tmp_path, window_s=600.0) as r:
            c = r.cluster
            nodes = {n.settings.node_id: n for n in c.nodes}
            b = nodes["node-b"]
            lot = r.moved_to_b("Lot")[0]  # b receives
            moved = r.moved_to_b("Bidder")[0]
            previous = nodes[r.owner_before[moved]]
            other = nodes[({"node-a", "node-c"} - {previous.settings.node_id}).pop()]
            stayed = next(x for x, o in r.owner_before.items() if x.category == "Bidder" and c.edge_view.route(x)[0] == o
                          and o != "node-b")  # b never owned its shard
            before = await open_lot(c, lot)
            assert (await previous.client.ask(lot, hold_status("from-previous-owner", moved))).ok
            assert c.stored(lot) == [*before, "LimitRaised"]
            for sender, claimed in ((other, moved), (b, stayed)):
                reply = await sender.client.ask(lot, hold_status(f"from-{sender.settings.node_id}", claimed))
                assert not reply.ok and reply.code == "retry" and "sender_not_owner" in reply.reason
            assert c.stored(lot) == [*before, "LimitRaised"]
            assert c.counted(b, "xplatform_transport_refused_messages_total", reason="sender_not_owner") >= 2

    asyncio.run(scenario())


def test_the_previous_owner_of_a_moved_shard_is_refused_after_the_window(zookeeper: ZooKeeperServer,
                                                                         tmp_path: Path) -> None:
    window_s = 0.2

    async def scenario() -> None:
        async with rebalanced(zookeeper, tmp_path, window_s=window_s) as r:
            c = r.cluster
            nodes = {n.settings.node_id: n for n in c.nodes}
            lot, moved = r.moved_to_b("Lot")[0], r.moved_to_b("Bidder")[0]
            before = await open_lot(c, lot)
            await asyncio.sleep(window_s)  # the window counts from b applying the map, before until() saw it
            reply = await nodes[r.owner_before[moved]].client.ask(lot, hold_status("from-previous-owner-late", moved))
            assert not reply.ok and reply.code == "retry" and "sender_not_owner" in reply.reason
            assert c.stored(lot) == before
            assert c.counted(nodes["node-b"], "xplatform_transport_refused_messages_total", reason="sender_not_owner") >= 1

    asyncio.run(scenario())


def test_transport_tls_serves_members_that_trust_the_ca_and_nobody_else(zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    ca = make_certificates(tmp_path / "tls")
    stranger = make_certificates(tmp_path / "other", "some other CA")
    tls_settings = {"transport_tls_ca_file": str(ca.ca_file), "transport_tls_cert_file": str(ca.cert_file),
                    "transport_tls_key_file": str(ca.key_file)}

    async def scenario() -> None:
        async with running(zookeeper, tmp_path, **tls_settings) as c:
            lot = c.owned_by(c.a, "Lot")[0]
            trusting = c.client(ssl=tls.client_context(c.a.settings))
            plain = c.client()
            wrong_ca = c.client(ssl=tls.client_context(c.a.settings.with_(transport_tls_ca_file=str(stranger.ca_file))))
            connect = Connect("c1", time.time(), "conn", {"sub": "ann", "role": "viewer"})
            try:
                for refused in (plain, wrong_ca):
                    reply = await refused.ask(lot, connect)
                    assert not reply.ok and reply.code == "retry"
                assert wrong_ca.metrics.registry.get_sample_value(
                    "xplatform_transport_auth_failures_total", {"side": "client", "reason": "tls"}) >= 1
                assert c.stored(lot) == []
                assert (await trusting.ask(lot, connect)).ok  # TLS, then the HMAC handshake inside it
                assert "ConnectionAccepted" in c.stored(lot)
            finally:
                for client in (trusting, plain, wrong_ca):
                    await client.close()

    asyncio.run(scenario())


# ---------------------------------------------------------------------------- ZooKeeper ACLs
def test_zookeeper_without_the_credentials_can_neither_read_nor_write(zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(zookeeper, tmp_path) as c:
            root = f"/xplatform/{c.cluster}"
            anonymous = KazooClient(zookeeper.hosts)
            impostor = zookeeper_client(zookeeper.hosts, ZooKeeperAuth("xplatform", "not-the-password"))
            for zk in (anonymous, impostor):
                zk.start(5)
                try:
                    for attempt in (lambda: zk.get_children(f"{root}/members"), lambda: zk.get(f"{root}/assignment"),
                                    lambda: zk.get(f"{root}/members/edge-1"),
                                    lambda: zk.set(f"{root}/assignment", b"{}"),
                                    lambda: zk.create(f"{root}/members/intruder", b"{}", ephemeral=True),
                                    lambda: zk.delete(f"{root}/members/edge-1"), lambda: zk.get_children("/xplatform")):
                        with pytest.raises(NoAuthError):
                            attempt()
                finally:
                    zk.stop()
                    zk.close()
            owner = zookeeper_client(zookeeper.hosts, c.secrets.zookeeper_auth())
            owner.start(5)
            try:
                assert sorted(owner.get_children(f"{root}/members")) == ["edge-1", "node-a"]
                election = [f"{root}/allocator/{n}" for n in owner.get_children(f"{root}/allocator")]
                assert election  # node-a's candidacy
                for path in (root, f"{root}/members", f"{root}/assignment", f"{root}/members/node-a",
                             f"{root}/members/edge-1", f"{root}/allocator", *election):
                    acl, _ = owner.get_acls(path)
                    assert [(a.id.scheme, a.perms) for a in acl] == [("digest", 31)], path  # ALL, digest only
            finally:
                owner.stop()
                owner.close()
            wrong = tmp_path / "wrong.password"
            wrong.write_text(secrets.token_urlsafe(40))
            ops = Settings(zookeeper_hosts=zookeeper.hosts, cluster_name=c.cluster, zookeeper_password_file=str(wrong))
            with pytest.raises(StatusError, match="refused"):  # `xplatform status` needs the credentials too
                await asyncio.to_thread(read_status, ops)
            shown = await asyncio.to_thread(read_status, ops.with_(zookeeper_password_file=str(c.secrets.zookeeper)))
            assert set(shown["members"]) == {"edge-1", "node-a"}

    asyncio.run(scenario())


def test_a_cluster_created_open_is_closed_by_its_first_authenticated_node(zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    """An existing cluster from before ACLs: its root, member list and map were created open."""
    cluster = f"o{uuid.uuid4().hex[:6]}"
    root = f"/xplatform/{cluster}"
    anonymous = KazooClient(zookeeper.hosts)
    anonymous.start(5)
    try:
        for path in ("members", "assignment"):
            anonymous.ensure_path(f"{root}/{path}")
        cluster_secrets = ClusterSecrets.write(tmp_path)
        node = ClusteredStateNode(Settings(store="sqlite", data_dir=str(tmp_path), zookeeper_hosts=zookeeper.hosts,
                                           cluster_name=cluster, node_id="node-a", shards_per_category=8,
                                           **cluster_secrets.settings()))

        async def start_stop() -> None:
            await node.start()
            await node.stop()

        asyncio.run(start_stop())
        for path in (root, f"{root}/members", f"{root}/assignment"):
            with pytest.raises(NoAuthError):
                anonymous.get(path)
    finally:
        anonymous.stop()
        anonymous.close()


def test_a_clustered_process_without_its_secrets_does_not_start(tmp_path: Path) -> None:
    cluster_secrets = ClusterSecrets.write(tmp_path)
    base = Settings(store="memory", zookeeper_hosts="127.0.0.1:1", **cluster_secrets.settings())
    for missing, variable in (("cluster_secret_file", "XPLATFORM_CLUSTER_SECRET_FILE"),
                              ("cluster_edge_secret_file", "XPLATFORM_CLUSTER_EDGE_SECRET_FILE"),
                              ("zookeeper_password_file", "XPLATFORM_ZOOKEEPER_PASSWORD_FILE")):
        with pytest.raises(ConfigurationError, match=variable):
            ClusteredStateNode(base.with_(**{missing: ""}))
    short = tmp_path / "short.secret"
    short.write_text("too-short")
    with pytest.raises(ConfigurationError, match="at least 32"):
        ClusteredStateNode(base.with_(cluster_secret_file=str(short)))
    with pytest.raises(ConfigurationError, match="same secret"):
        ClusteredStateNode(base.with_(cluster_secret_file=str(cluster_secrets.edge)))
    edge_settings = base.with_(cluster_secret_file="", jwt_hs256_secret="x" * 40,  # an edge needs no state secret
                              jwt_issuer="https://idp.test/", jwt_audience="xplatform")
    assert ClusteredEdge(edge_settings, ["Lot"]).client.auth.keys.keys() == {"edge"}
    with pytest.raises(ConfigurationError, match="XPLATFORM_CLUSTER_EDGE_SECRET_FILE"):
        ClusteredEdge(edge_settings.with_(cluster_edge_secret_file=""), ["Lot"])
    assert ClusteredStateNode(base.with_(cluster_insecure=1, cluster_secret_file="", cluster_edge_secret_file="",
                                         zookeeper_password_file="")).server.auth.insecure  # the explicit opt-out
