"""Journal wrappers for tests that need appends held in flight."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from infrastructure.errors import PersistenceError
from infrastructure.persistence import EventJournal, StreamWrite


class BlockingJournal(EventJournal):
    """Wraps a journal; appends wait until ``release`` is set. Records each call's writes."""

    def __init__(self, inner: EventJournal) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls: list[list[str]] = []

    def append(self, writes: Sequence[StreamWrite]) -> list[PersistenceError | None]:
        self.calls.append([w.stream_id for w in writes])
        self.entered.set()
        self.release.wait(10)
        return self.inner.append(writes)

    def read(self, stream_id: str, after_version: int = 0) -> list[Any]:
        return self.inner.read(stream_id, after_version)

    def latest_snapshot(self, stream_id: str) -> Any:
        return self.inner.latest_snapshot(stream_id)

    def save_snapshot(self, snapshot: Any) -> None:
        self.inner.save_snapshot(snapshot)

    def close(self) -> None:
        self.inner.close()
