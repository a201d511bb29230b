"""Optional on-disk persistence of the log (``--data-file``).

The journal is an append-only JSON-lines file, one line per event record, so a
restarted emulator can rebuild exactly the same log (same positions, revisions
and IDs).  Persistent subscription definitions and checkpoints need no extra
format: like the real server, the emulator stores them as events in system
streams, so they are journalled with everything else.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from .errors import EmulatorError

if TYPE_CHECKING:
    from .store import EventRecord


class JournalCorrupt(EmulatorError):
    """A line of the data file could not be decoded."""


class Journal(Protocol):
    """Where committed records go so they survive a restart."""

    def load(self) -> Iterator[EventRecord]:
        """Yield previously written records in commit order."""
        ...

    def write(self, records: Sequence[EventRecord]) -> None:
        """Durably record ``records`` (one atomic write from the log's point of view)."""
        ...


class FileJournal:
    """JSON-lines journal; each write is flushed and fsync'ed before returning."""

    def __init__(self, path: str) -> None:
        self._path = path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)

    def load(self) -> Iterator[EventRecord]:
        """Replay the file; a missing file is an empty log."""
        from .store import EventRecord

        if not os.path.exists(self._path):
            return
        with open(self._path, encoding="utf8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                    yield EventRecord(
                        position=raw["p"],
                        stream_name=raw["s"],
                        revision=raw["r"],
                        event_id=raw["id"],
                        event_type=raw["t"],
                        content_type=raw["ct"],
                        data=base64.b64decode(raw["d"]),
                        metadata=base64.b64decode(raw["m"]),
                        created=raw["c"],
                    )
                except (KeyError, ValueError, TypeError) as error:
                    msg = f"{self._path}:{line_number}: {error}"
                    raise JournalCorrupt(msg) from error

    def write(self, records: Sequence[EventRecord]) -> None:
        """Append the records as JSON lines in a single write call."""
        lines = "".join(
            json.dumps(
                {
                    "p": record.position,
                    "s": record.stream_name,
                    "r": record.revision,
                    "id": record.event_id,
                    "t": record.event_type,
                    "ct": record.content_type,
                    "d": base64.b64encode(record.data).decode("ascii"),
                    "m": base64.b64encode(record.metadata).decode("ascii"),
                    "c": record.created,
                }
            )
            + "\n"
            for record in records
        )
        with open(self._path, "a", encoding="utf8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
