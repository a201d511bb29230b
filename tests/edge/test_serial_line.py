"""The serial-line edge over a pseudo-terminal pair: the edge opens the slave side with pyserial
(as it would /dev/ttyUSB0), the test is the device on the master side, writing frames as
edge/PROTOCOL.md "Devices on a serial line" describes them (encoded here, not with the
edge's own codec). A real one-process platform is behind it."""

from __future__ import annotations

import asyncio
import json
import os
import zlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.config import EdgeConfig, SerialPort, parse_networks, parse_serial_ports
from edge.errors import EdgeConfigurationError
from tests.edge.harness import Edge, eventually, run_edge
from tests.support.serial_device import SerialDevice as Device, frame

MAX_FRAME = 1024


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def run_serial(tmp_path: Path, pty_pair: tuple[int, str], scenario: Callable[[Edge, Device], Awaitable[None]],
               **overrides: Any) -> None:
    master, path = pty_pair
    device = Device(master)

    async def with_device(edge: Edge) -> None:
        await scenario(edge, device)

    run_edge(tmp_path, with_device, serial_ports=(SerialPort(path, "member", "uart-1"),), max_frame_bytes=MAX_FRAME,
             **overrides)


PUSH = {"type": "push", "category": "Room", "entity_id": "r1", "message_id": "s-1",
        "payload": {"type": "set", "value": 4}}


def test_a_push_over_the_line_is_answered_with_the_durable_reply_and_a_pull_gets_the_outbound(
        tmp_path: Path, pty_pair: tuple[int, str]) -> None:
    async def scenario(edge: Edge, device: Device) -> None:
        assert await device.ask(PUSH) == {"type": "reply", "message_id": "s-1", "ok": True, "payload": 4}
        assert edge.event_types() == ["ConnectionAccepted", "Set"]
        (claims,) = edge.entity().live_connections().values()  # the port's configured identity
        assert claims == {"sub": "device:member:uart-1", "role": "member", "device_class": "member", "auth": "network"}
        assert (await device.ask(PUSH))["ok"] is True and len(edge.event_types()) == 2  # same ID: applied once
        refused = await device.ask({**PUSH, "message_id": "s-2", "payload": {"type": "nope"}})
        assert refused["type"] == "reply" and refused["ok"] is False
        assert refused["error"]["code"] == "unknown_message_type"

        ann = await edge.client("ann")
        await ann.request({"type": "say", "text": "hello line"})
        await ann.close()
        pull = {"type": "pull", "category": "Room", "entity_id": "r1", "cursor": 0}
        pulled = await eventually_pulled(device, pull, {"text": "hello line"})
        assert pulled["type"] == "messages" and (pulled["category"], pulled["entity_id"]) == ("Room", "r1")
        assert {"value": 4} in [m["payload"] for m in pulled["messages"]]
        again = await device.ask({**pull, "cursor": pulled["cursor"]})
        assert again["messages"] == [] and again["cursor"] == pulled["cursor"]

    run_serial(tmp_path, pty_pair, scenario)


async def eventually_pulled(device: Device, pull: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """Pull until ``wanted`` is among the messages (a broadcast reaches the device's connection
    after the sender's reply, not necessarily before the next frame)."""
    found: dict[str, Any] = {}

    async def pulled() -> bool:
        found.update(await device.ask(pull))
        return wanted in [m["payload"] for m in found["messages"]]

    for _ in range(200):
        if await pulled():
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"never pulled {wanted}: {found}")


BAD_FRAMES = [
    pytest.param(b"x" * (MAX_FRAME + 1) + b"\n", "too_big", id="oversized"),
    pytest.param(frame(PUSH)[:-9] + b"00000000\n", "bad_checksum", id="checksum-mismatch"),
    pytest.param(json.dumps(PUSH).encode() + b"\n", "malformed", id="no-checksum"),
    pytest.param(frame(PUSH)[:-9] + b"0x" + frame(PUSH)[-7:], "malformed", id="checksum-not-hex-digits"),
    pytest.param(b"{not json\t" + f"{zlib.crc32(b'{not json'):08x}".encode() + b"\n", "malformed", id="not-json"),
    pytest.param(frame([1, 2]), "malformed", id="not-an-object"),
    pytest.param(frame({**PUSH, "type": "shutdown"}), "unknown_type", id="unknown-type"),
    pytest.param(frame({k: v for k, v in PUSH.items() if k != "type"}), "unknown_type", id="no-type"),
    pytest.param(frame({**PUSH, "device": "boss"}), "malformed", id="claims-a-device"),
    pytest.param(frame({**PUSH, "category": "Nope"}), "unknown_category", id="unknown-category"),
    pytest.param(frame({**PUSH, "entity_id": ""}), "bad_address", id="bad-address"),
    pytest.param(frame({**PUSH, "message_id": 7}), "bad_message_id", id="bad-message-id"),
    pytest.param(frame({**PUSH, "payload": 2**70}), "bad_payload", id="bad-payload"),
    pytest.param(frame({"type": "pull", "category": "Room", "entity_id": "r1", "cursor": -1}), "bad_cursor",
                 id="bad-cursor"),
]


@pytest.mark.parametrize("raw, code", BAD_FRAMES)
def test_a_bad_frame_gets_a_typed_error_frame_changes_nothing_and_the_line_keeps_working(
        tmp_path: Path, pty_pair: tuple[int, str], raw: bytes, code: str) -> None:
    async def scenario(edge: Edge, device: Device) -> None:
        answer = await device.ask(raw=raw)
        assert answer["type"] == "error" and answer["error"]["code"] == code, answer
        assert answer["error"]["retryable"] is False
        assert edge.entity() is None and edge.event_types() == []
        assert edge.metric("xplatform_edge_serial_errors_total", {"code": code}) == 1
        assert (await device.ask(PUSH)) == {"type": "reply", "message_id": "s-1", "ok": True, "payload": 4}

    run_serial(tmp_path, pty_pair, scenario)


def test_noise_split_across_writes_and_crlf_are_framed_as_one_line(tmp_path: Path, pty_pair: tuple[int, str]) -> None:
    """A frame arriving in pieces (a UART delivers bytes as they come) is one frame; CR LF ends it too."""
    async def scenario(edge: Edge, device: Device) -> None:
        raw = frame(PUSH)[:-1] + b"\r\n"
        device.write(b"\n")  # an empty line is not answered
        for i in range(0, len(raw), 7):
            device.write(raw[i:i + 7])
            await asyncio.sleep(0)
        assert await device.receive() == {"type": "reply", "message_id": "s-1", "ok": True, "payload": 4}
        await eventually(lambda: edge.event_types() == ["ConnectionAccepted", "Set"], what="the push applied")

    run_serial(tmp_path, pty_pair, scenario)


def test_a_port_that_cannot_be_opened_stops_the_edge_at_start(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        raise AssertionError("the edge started without its serial line")

    with pytest.raises(EdgeConfigurationError, match="XPLATFORM_EDGE_SERIAL_PORTS: cannot open"):
        run_edge(tmp_path, scenario, serial_ports=(SerialPort(str(tmp_path / "no-such-tty"), "member", "uart-1"),))


@pytest.mark.parametrize("value", ["/dev/ttyS0", "/dev/ttyS0=member", "/dev/ttyS0=a:b:c/", "=member:x",
                                   "/dev/ttyS0=bad class:x", "/dev/ttyS0=member:" + "x" * 65])
def test_a_serial_port_setting_that_names_no_device_stops_the_edge_at_start(value: str) -> None:
    with pytest.raises(EdgeConfigurationError, match="XPLATFORM_EDGE_SERIAL_PORTS"):
        parse_serial_ports(value)


def test_serial_port_settings_parse_and_a_port_named_twice_is_refused() -> None:
    assert parse_serial_ports(" /dev/ttyUSB0=sensor:aa:bb , /dev/ttyS1=meter:m-1") == (
        SerialPort("/dev/ttyUSB0", "sensor", "aa:bb"), SerialPort("/dev/ttyS1", "meter", "m-1"))
    with pytest.raises(EdgeConfigurationError, match="twice"):
        EdgeConfig(dev_tokens=True, serial_ports=parse_serial_ports("/dev/ttyS1=a:1,/dev/ttyS1=b:2"))


def test_a_burst_of_frames_is_answered_in_order_one_each(tmp_path: Path, pty_pair: tuple[int, str]) -> None:
    """More frames than the line queues (edge/serial_line.py QUEUE_FRAMES: reading pauses, then
    resumes): every frame is answered, in the order sent, and applied once."""
    async def scenario(edge: Edge, device: Device) -> None:
        burst = b"".join(frame({**PUSH, "message_id": f"b-{i}", "payload": {"type": "set", "value": i}})
                         for i in range(150))
        writing = asyncio.create_task(asyncio.to_thread(device.write, burst))  # may block on a full pty buffer
        answers = [await device.receive() for _ in range(150)]
        await writing
        assert [(a["message_id"], a["payload"]) for a in answers] == [(f"b-{i}", i) for i in range(150)]
        assert edge.event_types() == ["ConnectionAccepted"] + ["Set"] * 150
    run_serial(tmp_path, pty_pair, scenario)


@pytest.mark.parametrize("overrides", [{"serial_ports": (SerialPort("/dev/ttyS9", "member", "m-1"),)},
                                       {"internal_networks": parse_networks("127.0.0.1/32=member"), "internal_port": 0}])
def test_run_workers_refuses_what_one_process_must_serve(overrides: dict[str, Any]) -> None:
    """A serial port or the device edge's own listener would be opened by every worker of
    ``xplatform run --workers``: refused at start, before anything is bound."""
    from infrastructure.errors import ConfigurationError
    from infrastructure.settings import Settings
    from ops.wiring.workers import serve_with_workers

    config = EdgeConfig(dev_tokens=True, **overrides)
    with pytest.raises(ConfigurationError, match="one process"):
        asyncio.run(serve_with_workers(Settings(), config, 2))


def test_a_lost_line_is_reopened_when_its_adapter_comes_back(tmp_path: Path) -> None:
    """The port is configured by a stable name (a symlink, as udev's /dev/serial/by-id/ are);
    the pty behind it goes away (adapter unplugged: the edge sees the line fail) and a new one
    takes the name (plugged back in): the edge opens it again and the device is served."""
    link = tmp_path / "ttyUSB0"
    master, slave = os.openpty()
    link.symlink_to(os.ttyname(slave))
    fds = [master, slave]

    async def scenario(edge: Edge) -> None:
        assert (await Device(master).ask(PUSH))["ok"] is True
        os.close(master)  # unplugged
        fds.remove(master)
        await eventually(lambda: edge.metric("xplatform_edge_serial_lines") == 0, timeout=10, what="the line lost")
        again, again_slave = os.openpty()
        fds.extend((again, again_slave))
        link.unlink()
        link.symlink_to(os.ttyname(again_slave))
        await eventually(lambda: edge.metric("xplatform_edge_serial_lines") == 1, timeout=10, what="the line back")
        answer = await Device(again).ask({**PUSH, "message_id": "s-2", "payload": {"type": "set", "value": 5}})
        assert answer == {"type": "reply", "message_id": "s-2", "ok": True, "payload": 5}
        assert edge.event_types() == ["ConnectionAccepted", "Set", "Set"]

    try:
        run_edge(tmp_path, scenario, serial_ports=(SerialPort(str(link), "member", "uart-1"),))
    finally:
        for fd in fds:
            os.close(fd)
