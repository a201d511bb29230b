"""An in-process platform + edge on a real socket (free port), with tiny timeouts, for edge tests.

Tokens: an RSA key (kid ``rsa-1``) published in a JWKS file the edge reads, issuer
``https://idp.test``, audience ``xplatform``. ``forge`` builds hostile tokens by hand
(``alg: none``, HS256 signed with the RSA public key as the secret).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from domain.auction import Bidder, Lot
from domain.refs import EntityRef
from edge.app import listen_public
from edge.client import Client, connect
from edge.config import EdgeConfig
from edge.public import EDGE_KEY, PublicEdge
from infrastructure.persistence import new_mapper
from infrastructure.read_port import ReadPort
from infrastructure.settings import Settings
from ops.wiring.dev import Platform, build_platform, dev_app
from tests.edge.entities import Room

ISSUER = "https://idp.test"
AUDIENCE = "xplatform"
KID = "rsa-1"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ROOM = EntityRef("Room", "r1")


def jwks_of(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {"keys": [{**public, "kid": kid, "alg": "RS256", "use": "sig"}]}


def token(sub: str = "ann", role: str = "member", ttl: float = 60, *, key: Any = RSA_KEY, kid: str = KID,
          alg: str = "RS256", iss: str = ISSUER, aud: str = AUDIENCE, **claims: Any) -> str:
    now = time.time()
    body = {"sub": sub, "role": role, "iat": int(now), "exp": now + ttl, "iss": iss, "aud": aud, **claims}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A token built by hand: ``secret`` None gives an empty signature (``alg: none``)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def good_claims(sub: str = "mallory", role: str = "member") -> dict[str, Any]:
    return {"sub": sub, "role": role, "exp": time.time() + 60, "iss": ISSUER, "aud": AUDIENCE}


def public_pem() -> bytes:
    return RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class Edge:
    platform: Platform
    app: web.Application
    base_url: str
    config: EdgeConfig

    @property
    def public(self) -> PublicEdge:
        return self.app[EDGE_KEY]

    async def client(self, sub: str = "ann", role: str = "member", ref: EntityRef = ROOM, **options: Any) -> Client:
        options.setdefault("heartbeat_s", 0)
        options.setdefault("reconnect", False)
        options.setdefault("request_timeout_s", 5)
        tok = options.pop("token", None) or token(sub, role)
        return await connect(self.base_url, ref.category, ref.entity_id, tok, **options)

    def event_types(self, ref: EntityRef = ROOM) -> list[str]:
        mapper = new_mapper()
        return [type(mapper.to_domain_event(e)).__name__ for e in self.platform.journal.read(ref.stream_id)]

    def entity(self, ref: EntityRef = ROOM) -> Any:
        return self.platform.node.resident(ref)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.public.metrics.registry.get_sample_value(name, labels or {}) or 0.0

    async def upgrade(self, path: str, headers: dict[str, str] | None = None,
                      protocols: str | None = "xplatform.v1") -> tuple[int, dict[str, Any]]:
        """A raw websocket upgrade request; returns (status, JSON body) of a refusal."""
        sent = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
        if protocols is not None:
            sent["Sec-WebSocket-Protocol"] = protocols
        sent.update(headers or {})
        async with aiohttp.ClientSession() as session, session.get(self.base_url + path, headers=sent) as resp:
            body = await resp.json(content_type=None) if resp.status != 101 else {}
            return resp.status, body


@asynccontextmanager
async def running_edge(tmp_path: Path, *, reads: ReadPort | None = None, platform: Platform | None = None,
                       **overrides: Any) -> AsyncIterator[Edge]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks_of(RSA_KEY, KID)))
    settings = Settings(store="sqlite", data_dir=str(tmp_path / "data"), ask_timeout_s=5.0)
    platform = platform or build_platform(settings, entities=(Room, Lot, Bidder))
    device_secret = tmp_path / "device.secret"
    device_secret.write_bytes(os.urandom(32).hex().encode())
    values: dict[str, Any] = dict(port=0, jwt_jwks_file=str(jwks_file), jwt_issuer=ISSUER, jwt_audience=AUDIENCE,
                                  heartbeat_s=30.0, close_timeout_s=0.5, jwks_refetch_s=0.2,
                                  device_secret_file=str(device_secret))
    values.update(overrides)
    config = EdgeConfig(**values)
    app = dev_app(platform, config, static_dir=None, reads=reads)
    runner = web.AppRunner(app, shutdown_timeout=2, access_log=None)
    try:
        await runner.setup()
        server = await listen_public(runner, app, "127.0.0.1", 0)
    except BaseException:
        await runner.cleanup()  # the platform started by the app's first start hook stops again
        raise
    port = server.sockets[0].getsockname()[1]
    try:
        yield Edge(platform, app, f"http://127.0.0.1:{port}", config)
    finally:
        server.close()
        await runner.cleanup()


def run_edge(tmp_path: Path, scenario: Callable[[Edge], Awaitable[None]], **overrides: Any) -> None:
    """Run ``scenario`` against a fresh edge (one event loop per test, like the runtime tests)."""
    async def main() -> None:
        async with running_edge(tmp_path, **overrides) as edge:
            await asyncio.wait_for(scenario(edge), 20)

    asyncio.run(main())


def assert_untouched(edge: Edge) -> None:
    """Nothing reached the entity: not activated, nothing stored (a refusal before the 101)."""
    assert edge.entity() is None, "the entity was activated by a refused request"
    assert edge.event_types() == []


async def still_serving(edge: Edge) -> None:
    """A normal client still connects and gets a message applied."""
    client = await edge.client("ann")
    try:
        assert (await client.request({"type": "set", "value": 1})).ok
    finally:
        await client.close()


async def eventually(check: Callable[[], Any], timeout: float = 3.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@contextmanager
def gated_journal(edge: Edge) -> Iterator[threading.Event]:
    """The store stops answering: every append waits until the yielded event is set (set
    on exit at the latest, so the writer thread never hangs past the test)."""
    journal = edge.platform.journal
    gate = threading.Event()
    append = journal.append

    def gated(writes: Any) -> Any:
        gate.wait(30)
        return append(writes)

    journal.append = gated  # type: ignore[method-assign]
    try:
        yield gate
    finally:
        gate.set()
        journal.append = append  # type: ignore[method-assign]


def new_cid() -> str:
    return str(uuid.uuid4())


class RawSocket:
    """A websocket client written by hand over a plain TCP socket: it sends what a test
    wants (any frame, any number of them) and reads only when told, so it can be the client
    that never reads. ``rcvbuf`` shrinks its receive buffer (the kernel then takes less of
    what the edge sends)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, base_url: str, rcvbuf: int | None = None) -> RawSocket:
        host, port = base_url.removeprefix("http://").split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    @classmethod
    async def upgraded(cls, base_url: str, sub: str, ref: EntityRef = ROOM, rcvbuf: int | None = None) -> RawSocket:
        """Open and upgrade (reads the 101 response, nothing after it)."""
        raw = await cls.open(base_url, rcvbuf)
        key = base64.b64encode(os.urandom(16)).decode()
        raw.writer.write((f"GET /ws/{ref.category}/{ref.entity_id}?cid={new_cid()} HTTP/1.1\r\n"
                          f"Host: {base_url.removeprefix('http://')}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                          f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
                          f"Sec-WebSocket-Protocol: xplatform.v1\r\nAuthorization: Bearer {token(sub)}\r\n\r\n").encode())
        head = await raw.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return raw

    @staticmethod
    def frame(opcode: int, payload: bytes) -> bytes:
        """One masked client frame (RFC 6455 5.2), FIN set."""
        mask = os.urandom(4)
        n = len(payload)
        head = bytes((0x80 | opcode,)) + (bytes((0x80 | n,)) if n < 126 else struct.pack("!BH", 0x80 | 126, n))
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def next_frame(self) -> tuple[int, bytes]:
        """The next frame the edge sent (server frames are unmasked): ``(opcode, payload)``;
        IncompleteReadError or ConnectionError once the socket is closed."""
        head = await self.reader.readexactly(2)
        n = head[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return head[0] & 0x0F, await self.reader.readexactly(n)

    async def frames_until_closed(self) -> list[tuple[int, bytes]]:
        """Read every frame the edge sends until it closes the socket: ``(opcode, payload)``
        in order; a reset ends the list too."""
        frames: list[tuple[int, bytes]] = []
        try:
            while True:
                frames.append(await self.next_frame())
        except (asyncio.IncompleteReadError, ConnectionError):
            return frames

    async def closed_by_server(self) -> bool:
        """Read (and discard) until the edge closes the socket: EOF or a reset."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        self.writer.transport.abort()
