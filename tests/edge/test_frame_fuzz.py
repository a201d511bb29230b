"""Property-based fuzzing of the client frame decoder (``edge.protocol.unpack_client_frame``)
and of what the edge does with each frame over a real socket (``edge.connection``).

The properties (PROTOCOL.md "Frames" and "Close codes"):

- decoding arbitrary bytes either gives a msgpack array starting with a known kind, equal
  to what msgpack itself decodes, or raises ``FrameError`` with close code 1008 - nothing else;
- on a live connection, any frame gets the documented outcome: undecodable / unknown kind →
  close 1008; a ``MSG`` of the wrong shape → ``ERROR bad_frame`` and the socket stays open;
  ``PING`` → ``PONG`` echoing its first argument; ``LATENCY`` → nothing; ``BYE`` → close 1000;
  a well-formed ``MSG`` → its ``REPLY``. The edge never crashes, the entity's state never
  changes (no event but the connections' own), and the edge serves normally afterwards.

Bounded (``max_examples=300``, no deadline: CI is shared and slow; ~5 s here); no example
database is kept (``database=None``): every run draws fresh examples, plus one frame of each
outcome given explicitly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from hypothesis import example, given, settings, strategies as st

from edge import protocol
from edge.errors import FrameError
from tests.edge.harness import ROOM, Edge, new_cid, running_edge, token

FUZZ = settings(max_examples=300, deadline=None, database=None)
KINDS = (protocol.MSG, protocol.PING, protocol.LATENCY, protocol.BYE)

# msgpack-able values of every type the format has (ints across the whole 64-bit range)
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=True)
           | st.text(max_size=20) | st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
kinds = st.sampled_from(KINDS) | st.sampled_from((0, 5, 10, 15, -1, 2**40)) | st.booleans() | st.floats() | st.text(max_size=3)
shaped = st.builds(lambda kind, rest: [kind, *rest], kinds, st.lists(values, max_size=9))
known = st.builds(lambda kind, rest: [kind, *rest], st.sampled_from(KINDS), st.lists(values, max_size=3))
messages = st.builds(lambda mid, payload: [protocol.MSG, mid, payload], st.text(max_size=70), st.binary(max_size=30))
frames = (st.binary(max_size=120)                                       # arbitrary bytes
          | values.map(lambda v: msgpack.packb(v, use_bin_type=True))   # valid msgpack, any shape
          | shaped.map(lambda f: msgpack.packb(f, use_bin_type=True))   # arrays that start like frames
          | known.map(lambda f: msgpack.packb(f, use_bin_type=True))    # known kinds, any arguments
          | messages.map(lambda f: msgpack.packb(f, use_bin_type=True)))  # MSG with ids of any length


def examples(cases: list[bytes]) -> Any:
    """``@example`` for each of ``cases``."""
    def decorate(test: Any) -> Any:
        for case in cases:
            test = example(case)(test)
        return test

    return decorate


def _msgpack_view(data: bytes) -> Any:
    """What msgpack alone makes of ``data`` (no limits), or a sentinel when it cannot."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:
        return _UNDECODABLE


_UNDECODABLE = object()


@FUZZ
@given(frames)
def test_the_decoder_returns_a_known_frame_or_raises_1008(data: bytes) -> None:
    try:
        frame = protocol.unpack_client_frame(data)
    except FrameError as exc:
        assert exc.close_code == protocol.POLICY
        return
    assert isinstance(frame, list) and frame and frame[0] in KINDS and not isinstance(frame[0], bool)
    assert msgpack.packb(frame) == msgpack.packb(_msgpack_view(data))  # nothing added, dropped or reinterpreted


# ---------------------------------------------------------------------------- over a real socket
def _expected(data: bytes) -> str:
    """The documented outcome of ``data`` (PROTOCOL.md), from its msgpack decoding."""
    try:
        frame = protocol.unpack_client_frame(data)
    except FrameError:
        return "close 1008"
    kind = frame[0]
    if kind == protocol.MSG:
        good = (len(frame) == 3 and isinstance(frame[1], str) and 0 < len(frame[1]) <= protocol.MAX_MESSAGE_ID
                and isinstance(frame[2], bytes))
        return "reply" if good else "error"
    return {protocol.PING: "pong", protocol.LATENCY: "nothing", protocol.BYE: "close 1000"}[kind]


class LiveEdge:
    """One edge for the whole run, on a loop in a thread (hypothesis drives examples synchronously)."""

    def __init__(self, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzzed-edge", daemon=True)
        self.thread.start()
        # no rate limit in the way: each example is one frame plus one probe
        self._context = running_edge(tmp_path, rate_per_s=1e6, rate_burst=1e6)
        self.edge: Edge = self.run(self._context.__aenter__())
        self.session: aiohttp.ClientSession = self.run(self._session())
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.outcomes: dict[str, int] = {}

    async def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    def run(self, coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def socket(self) -> aiohttp.ClientWebSocketResponse:
        if self.ws is None or self.ws.closed:
            self.ws = await self.session.ws_connect(f"{self.edge.base_url}/ws/{ROOM.category}/{ROOM.entity_id}"
                                                    f"?cid={new_cid()}", protocols=(protocol.SUBPROTOCOL,),
                                                    headers={"Authorization": f"Bearer {token('fuzz', ttl=3600)}"})
            welcome = await self.ws.receive(timeout=10)
            assert msgpack.unpackb(welcome.data)[0] == protocol.WELCOME
        return self.ws

    async def send(self, data: bytes) -> list[Any]:
        """Send ``data`` then a probe PING; what came back up to the probe's PONG (or the close)."""
        ws = await self.socket()
        await ws.send_bytes(data)
        try:
            await ws.send_bytes(protocol.pack([protocol.PING, "probe"]))
        except (ConnectionResetError, RuntimeError):
            pass  # the edge closed the socket on the frame already
        wants_reply = _expected(data) == "reply"  # a REPLY comes from the entity: before or after the probe
        got: list[Any] = []
        probed = False
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type is not aiohttp.WSMsgType.BINARY:
                got.append(("close", ws.close_code))
                return got
            frame = msgpack.unpackb(msg.data, raw=False, strict_map_key=False)
            if frame[0] == protocol.PONG and frame[1] == "probe":
                probed = True
            else:
                got.append(frame)
            if probed and (not wants_reply or any(f[0] == protocol.REPLY for f in got)):
                return got

    def close(self) -> None:
        async def shutdown() -> None:
            if self.ws is not None:
                await self.ws.close()
            await self.session.close()
            await self._context.__aexit__(None, None, None)

        try:
            self.run(shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveEdge]:
    live = LiveEdge(tmp_path_factory.mktemp("fuzzed-edge"))
    try:
        yield live
    finally:
        live.close()


# one of each outcome for sure, whatever the generated examples reach
OUTCOMES = [protocol.pack(f) for f in ([protocol.PING, 1], [protocol.PING], [protocol.BYE], [protocol.LATENCY, 5],
                                       [protocol.MSG, "m", b"\x80"], [protocol.MSG, 5], [9])] + [b"\xc1"]


@examples(OUTCOMES)
@FUZZ
@given(frames)
def test_every_frame_gets_its_documented_outcome_and_changes_nothing(live: LiveEdge, data: bytes) -> None:
    expected = _expected(data)
    got = live.run(live.send(data))
    live.outcomes[expected] = live.outcomes.get(expected, 0) + 1
    if expected.startswith("close"):
        assert got == [("close", int(expected.split()[1]))], (data, got)
    elif expected == "error":
        assert len(got) == 1 and got[0][:2] == [protocol.ERROR, "bad_frame"], (data, got)
    elif expected == "pong":
        frame = protocol.unpack_client_frame(data)
        echoed = frame[1] if len(frame) > 1 else None
        assert len(got) == 1 and got[0][0] == protocol.PONG, (data, got)
        assert msgpack.packb(got[0][1]) == msgpack.packb(echoed) and isinstance(got[0][2], int)
    elif expected == "nothing":
        assert got == [], (data, got)
    else:  # a well-formed MSG: the entity answers it (its payload is arbitrary bytes: refused)
        frame = protocol.unpack_client_frame(data)
        assert [f[:2] for f in got] == [[protocol.REPLY, frame[1]]], (data, got)
    assert live.edge.entity().value == 0 and "Set" not in live.edge.event_types()


def test_after_the_fuzzing_the_edge_serves_and_every_outcome_was_exercised(live: LiveEdge) -> None:
    """Runs after the property (same module, file order): the fuzzed edge still answers a
    normal client, and the examples reached every documented outcome."""
    async def normal_client() -> None:
        client = await live.edge.client("bob")
        try:
            assert (await client.request({"type": "get"})).payload == 0
        finally:
            await client.close()

    live.run(normal_client())
    if live.outcomes:  # the property ran first (it does in file order; -k may pick this test alone)
        assert set(live.outcomes) == {"close 1008", "close 1000", "error", "pong", "nothing", "reply"}, live.outcomes
