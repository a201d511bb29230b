"""The serial-line edge: a device on a UART reaches entities as a device of the internal edge.

Why: the seed names serial lines among the interfaces internal edges serve (plant equipment,
meters, microcontrollers without a network stack). A line carries frames, one per line of
text (edge/PROTOCOL.md "Devices on a serial line"):

    <JSON object> TAB <CRC-32 of the JSON bytes, 8 hex digits> LF      (CR LF accepted)

- ``{"type": "push", "category", "entity_id", "message_id", "payload"}`` is answered
  ``{"type": "reply", "message_id", "ok", "payload" | "error"}`` once the reply is durable;
- ``{"type": "pull", "category", "entity_id", "cursor"?}`` is answered at once
  ``{"type": "messages", "category", "entity_id", "cursor", "messages", "missed", "terminated"}``
  (no long poll: a line is one conversation, frames are answered in order, one at a time);
- anything else gets ``{"type": "error", "message_id"?, "error": {code, reason, retryable}}``
  and changes nothing: a line over ``max_frame_bytes`` (``too_big``), a checksum that does not
  match (``bad_checksum``: line noise), a line that is not a frame or an object with other
  fields (``malformed``), an unknown ``type`` (``unknown_type``), and the internal edge's own
  refusals (``bad_address``, ``unknown_category``, ``bad_message_id``, ``bad_payload``,
  ``refused``, ``unavailable``, ...). The line keeps working after each.

Identity: a port is one device, named by configuration (``XPLATFORM_EDGE_SERIAL_PORTS``,
``PATH=CLASS:DEVICE_ID``); nothing on the line is trusted for identity (a frame naming a device
or subject is ``malformed``). The device is the same connection as the HTTP device of that
class and ID would be (``device:<class>:<id>``, connection ID from the device secret), with the
same routing: :class:`edge.internal.InternalEdge` does the work, this module only frames it.

I/O: the port is opened non-blocking (pyserial) and read on the event loop when readable;
answers are written on a thread (a UART drains at its baud rate). A line that fails (adapter
unplugged) is closed and reopened every :data:`REOPEN_S` until it comes back; a partial frame
is dropped with it. More than :data:`QUEUE_FRAMES` frames waiting pause reading (the UART's own
buffer and flow control take over) until the handler catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import zlib
from collections.abc import Mapping
from typing import Any

import serial

from edge.config import EdgeConfig, SerialPort
from edge.errors import EdgeConfigurationError
from edge.internal import BadRequest, DeviceRefused, InternalEdge, json_default, message_of, parse_json
from edge.metrics import SERIAL_ERRORS, EdgeMetrics
from edge.protocol import MAX_MESSAGE_ID

log = logging.getLogger(__name__)

REOPEN_S = 1.0
"""How often a failed line is tried again: an adapter plugged back in is served within a second,
and a missing one costs one failed open() per second."""
QUEUE_FRAMES = 64
"""Frames read and not yet answered before reading pauses: a device sends one and waits for the
answer; 64 covers a burst, and bounds what a chattering line holds in memory (64 x max frame)."""
WRITE_TIMEOUT_S = 5.0
"""An answer not taken by the line in 5 s (a device that stopped reading, hardware flow control
held) is dropped and logged: the thread writing it is not held for ever."""
READ_CHUNK = 4096
_CHECKSUM = re.compile(rb"[0-9A-Fa-f]{8}")
_FIELDS = {"push": frozenset({"type", "category", "entity_id", "message_id", "payload"}),
           "pull": frozenset({"type", "category", "entity_id", "cursor"})}


def encode_frame(body: Mapping[str, Any]) -> bytes:
    """One frame: compact ASCII JSON (so no raw TAB or LF inside), TAB, CRC-32 in hex, LF."""
    data = json.dumps(body, separators=(",", ":"), default=json_default).encode()
    return data + b"\t" + f"{zlib.crc32(data):08x}".encode() + b"\n"


def decode_frame(line: bytes) -> dict[str, Any]:
    """The JSON object of one line (without its LF); BadRequest ``malformed`` / ``bad_checksum``."""
    data, tab, checksum = line.rpartition(b"\t")
    if not tab or not _CHECKSUM.fullmatch(checksum):
        raise BadRequest(400, "malformed", "a frame is JSON, a TAB and 8 hex digits of its CRC-32")
    if zlib.crc32(data) != int(checksum, 16):
        raise BadRequest(400, "bad_checksum", "CRC-32 does not match the frame (line noise?): send it again")
    body = parse_json(data, "the frame")
    if not isinstance(body, dict):
        raise BadRequest(400, "malformed", "a frame is a JSON object")
    return body


class LineSplitter:
    """Bytes in, lines out (LF removed, a CR before it too). A line longer than ``limit`` bytes
    comes out as None, once, and its bytes up to the next LF are dropped (never buffered)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._dropping = False

    def feed(self, data: bytes) -> list[bytes | None]:
        lines: list[bytes | None] = []
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end]).removesuffix(b"\r")
            del self._buffer[:end + 1]
            if self._dropping:  # the tail of a line already reported
                self._dropping = False
            elif len(line) > self.limit:
                lines.append(None)
            else:
                lines.append(line)
        if len(self._buffer) > self.limit:
            self._buffer.clear()
            if not self._dropping:
                lines.append(None)
                self._dropping = True
        return lines

    def reset(self) -> None:
        self._buffer.clear()
        self._dropping = False


class SerialLine:
    """One configured port: frames in, answers out, for the one device on it (module docstring)."""

    def __init__(self, edge: InternalEdge, port: SerialPort, config: EdgeConfig, metrics: EdgeMetrics) -> None:
        self.edge = edge
        self.port = port
        self.config = config
        self.metrics = metrics
        self.splitter = LineSplitter(config.max_frame_bytes)
        self._serial: serial.Serial | None = None
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._paused = False
        self._worker: asyncio.Task[None] | None = None
        self._reopening: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the port and serve it. Raises EdgeConfigurationError when it cannot be opened
        (a typo in XPLATFORM_EDGE_SERIAL_PORTS shows at start, not as a silent line)."""
        try:
            self._open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise EdgeConfigurationError(f"XPLATFORM_EDGE_SERIAL_PORTS: cannot open {self.port.path}: {exc}") from None
        self._worker = asyncio.create_task(self._work(), name=f"serial-line {self.port.path}")

    async def stop(self) -> None:
        for task in (self._worker, self._reopening):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._close()

    # ------------------------------------------------------------------ the port
    def _open(self) -> None:
        port = serial.Serial(self.port.path, self.config.serial_baud, timeout=0, write_timeout=WRITE_TIMEOUT_S,
                             exclusive=True)  # a second edge on the same line would garble both
        self._serial = port
        self.splitter.reset()
        self._paused = False
        asyncio.get_running_loop().add_reader(port.fileno(), self._readable)
        self.metrics.serial_lines.inc()
        log.info("serial line %s open for device %s:%s", self.port.path, self.port.device_class, self.port.device)

    def _close(self) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(port.fileno())
        with contextlib.suppress(Exception):
            port.close()
        self.metrics.serial_lines.dec()

    def _lost(self, exc: BaseException) -> None:
        """The line failed: close it and try to open it again every REOPEN_S."""
        if self._serial is None:
            return
        log.warning("serial line %s lost (%s); reopening every %.0f s", self.port.path, exc, REOPEN_S)
        self._close()
        if self._reopening is None or self._reopening.done():
            self._reopening = asyncio.create_task(self._reopen(), name=f"serial-reopen {self.port.path}")

    async def _reopen(self) -> None:
        while self._serial is None:
            await asyncio.sleep(REOPEN_S)
            with contextlib.suppress(serial.SerialException, OSError, ValueError):
                self._open()

    def _readable(self) -> None:
        port = self._serial
        if port is None:
            return
        try:
            data = port.read(READ_CHUNK)
        except (serial.SerialException, OSError) as exc:
            self._lost(exc)
            return
        for line in self.splitter.feed(data):
            self._queue.put_nowait(line)
        if self._queue.qsize() >= QUEUE_FRAMES and not self._paused:
            self._paused = True
            asyncio.get_running_loop().remove_reader(port.fileno())

    async def _write(self, frame: bytes) -> None:
        port = self._serial
        if port is None:
            return  # the line is down: the answer is lost, as on a cut cable (the device asks again)
        try:
            await asyncio.to_thread(port.write, frame)
        except serial.SerialTimeoutException:
            log.warning("serial line %s: an answer was not taken in %.0f s; dropped", self.port.path, WRITE_TIMEOUT_S)
        except (serial.SerialException, OSError) as exc:
            self._lost(exc)
        except (TypeError, ValueError):
            if port.is_open:
                raise
            # the loop closed the port while this answer was written on a thread (the line was lost:
            # pyserial then fails on its closed descriptor): the answer is lost with the line
            log.info("serial line %s closed while an answer was written; dropped", self.port.path)

    # ------------------------------------------------------------------ frames
    async def _work(self) -> None:
        while True:
            line = await self._queue.get()
            port = self._serial
            if self._paused and port is not None and self._queue.qsize() < QUEUE_FRAMES // 2:
                self._paused = False
                asyncio.get_running_loop().add_reader(port.fileno(), self._readable)
            if line is not None and not line.strip():
                continue  # an empty line (a terminal's extra CR LF): nothing to answer
            await self._write(encode_frame(await self.answer(line)))

    async def answer(self, line: bytes | None) -> dict[str, Any]:
        """The answer to one line (None: a line over the size limit)."""
        message_id: str | None = None
        try:
            if line is None:
                raise BadRequest(413, "too_big", f"a line over {self.config.max_frame_bytes} bytes")
            frame = decode_frame(line)
            if isinstance(frame.get("message_id"), str) and len(frame["message_id"]) <= MAX_MESSAGE_ID:
                message_id = frame["message_id"]
            kind = frame.get("type")
            fields = _FIELDS.get(kind) if isinstance(kind, str) else None
            if fields is None:
                raise BadRequest(400, "unknown_type", "type must be push or pull")
            if set(frame) - fields or not {"category", "entity_id"} <= set(frame):
                raise BadRequest(400, "malformed", f"a {kind} frame has the fields {', '.join(sorted(fields))} "
                                                   "(the device is the port's: no frame names one)")
            ref = self.edge.entity_ref(_text(frame["category"]), _text(frame["entity_id"]))
            if kind == "push":
                msg_id, payload = message_of(frame)
                _status, body = await self.edge.send(ref, self.port.device, self.port.device_class, msg_id, payload)
                return {"type": "reply", **body}
            cursor = frame.get("cursor", 0)
            if not isinstance(cursor, int) or isinstance(cursor, bool) or cursor < 0:
                raise BadRequest(400, "bad_cursor", "cursor must be a non-negative integer")
            body = await self.edge.outbound(ref, self.port.device, self.port.device_class, cursor, 0.0)
            return {"type": "messages", "category": ref.category, "entity_id": ref.entity_id, **body}
        except BadRequest as exc:
            return self._error(exc.error, exc.reason, exc.status == 503, message_id)
        except DeviceRefused as exc:
            return self._error("refused", str(exc), False, message_id)

    def _error(self, code: str, reason: str, retryable: bool, message_id: str | None) -> dict[str, Any]:
        self.metrics.serial_errors[code if code in SERIAL_ERRORS else "other"].inc()
        frame: dict[str, Any] = {"type": "error", "error": {"code": code, "reason": reason, "retryable": retryable}}
        if message_id is not None:
            frame["message_id"] = message_id
        return frame


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest(400, "bad_address", "category and entity_id must be strings")
    return value
