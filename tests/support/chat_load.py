"""Load and store checks shared by the process fault tests.

``ChatLoad``: websocket clients (edge.client) posting Lot chat through the edges without
pause, each message resent with its ID until it is answered (the entity applies an ID once),
each reply recorded with the time it arrived. ``check_lot_streams``: what the clients were
told is what the shared store holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgpack

from edge.client import Client, connect
from infrastructure.persistence import RecorderJournal
from tests.support.cluster import cluster_token as token


@dataclass
class ChatLoad:
    """One chatting client per lot; ``stop()`` ends them after their current message."""

    urls: Sequence[str]
    lots: Sequence[str]
    pause_s: float = 0.02
    request_timeout_s: float = 10.0
    acked: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    """lot → (message ID, monotonic time its ok reply arrived), in order."""
    refused: list[str] = field(default_factory=list)
    """Non-retryable refusals (a failure of the platform in these tests)."""
    retryable: list[float] = field(default_factory=list)
    """When a retryable answer, a timeout or a lost socket made a client resend."""
    connects: list[int] = field(default_factory=list)
    last_ok_sent: dict[str, float] = field(default_factory=dict)
    """lot → monotonic time the newest acknowledged message was first SENT: after a fault,
    "the entity answers again" means a message sent after the fault was acknowledged."""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self.acked = {lot: [] for lot in self.lots}
        self.last_ok_sent = {lot: 0.0 for lot in self.lots}
        self._tasks = [asyncio.create_task(self._chatter(i, lot)) for i, lot in enumerate(self.lots)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def acked_ids(self, lot: str) -> list[str]:
        return [mid for mid, _at in self.acked[lot]]

    def check_stored(self, journal: RecorderJournal, more_than: int) -> dict[str, list[int]]:
        """:func:`check_lot_streams` on what these clients were told, and every lot kept
        chatting (more than ``more_than`` acknowledged). Returns the lots' marker epochs."""
        epochs = check_lot_streams(journal, {lot: self.acked_ids(lot) for lot in self.lots})
        counts = {lot: len(acks) for lot, acks in self.acked.items()}
        assert all(n > more_than for n in counts.values()), counts
        return epochs

    def acked_between(self, start: float, end: float) -> list[str]:
        return [mid for acks in self.acked.values() for mid, at in acks if start <= at <= end]

    async def _chatter(self, i: int, lot: str) -> None:
        order = list(self.urls) if i % 2 == 0 else list(self.urls)[::-1]
        # An auctioneer: the first connect to a lot creates it, and only an auctioneer's may.
        # retries=0: this loop resends retryable answers itself, and counts them (``retryable``)
        client = await connect(order, "Lot", lot, token(f"u{i}", "auctioneer"), request_timeout_s=self.request_timeout_s,
                               heartbeat_s=0, retries=0)
        n = 0
        try:
            while not self._stop.is_set():
                n += 1
                mid = f"{lot}-{n}"
                sent = time.monotonic()
                while not self._stop.is_set():
                    try:
                        reply = await client.request({"type": "chat", "text": f"m{n}"}, message_id=mid,
                                                     timeout=self.request_timeout_s)
                    except Exception:  # the socket went away or no reply in time: resend the same ID
                        self.retryable.append(time.monotonic())
                        await asyncio.sleep(0.05)
                        continue
                    if reply.ok:
                        self.acked[lot].append((mid, time.monotonic()))
                        self.last_ok_sent[lot] = sent
                        break
                    if not reply.retryable:
                        self.refused.append(f"{reply.code}: {reply.reason}")
                        break
                    self.retryable.append(time.monotonic())
                    await asyncio.sleep(0.05)
                await asyncio.sleep(self.pause_s)
        finally:
            self.connects.append(client.connects)
            await client.close()


@dataclass
class PushWatcher:
    """A viewer per lot that only listens, recording the text of every chat push."""

    client: Client
    texts: list[tuple[str, float]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, urls: Sequence[str], lot: str, user: str) -> PushWatcher:
        watcher = cls(await connect(list(urls), "Lot", lot, token(user, "viewer"), heartbeat_s=0))
        watcher.task = asyncio.create_task(watcher._collect())
        return watcher

    async def _collect(self) -> None:
        async for push in self.client:
            if isinstance(push, dict) and push.get("type") == "chat":
                self.texts.append((push["text"], time.monotonic()))

    async def close(self) -> None:
        await self.client.close()
        if self.task is not None:
            self.task.cancel()


def lot_events(journal: RecorderJournal, lot: str) -> list[tuple[str, dict]]:
    """(topic, decoded state) of the lot's events, checking versions are contiguous."""
    events = journal.read(f"Lot-{lot}")
    versions = [e.originator_version for e in events]
    assert versions == list(range(1, len(events) + 1)), f"{lot}: versions not contiguous: {versions}"
    return [(e.topic, msgpack.unpackb(e.state)) for e in events]


def check_lot_streams(journal: RecorderJournal, acked: dict[str, list[str]]) -> dict[str, list[int]]:
    """For each lot: versions contiguous; takeover markers (``OwnerChanged``) with strictly
    growing epochs (no marker of an older epoch after a newer one); every chat message
    applied at most once and every acknowledged one present. Returns the lots' marker epochs."""
    epochs_of = {}
    for lot, mids in acked.items():
        events = lot_events(journal, lot)
        names = " ".join(topic.rsplit(".", 1)[-1] for topic, _ in events)
        epochs = [state["epoch"] for name, state in events if name.endswith("OwnerChanged")]
        assert epochs == sorted(set(epochs)), f"{lot}: takeover epochs not strictly growing: {epochs}\n{names}"
        stored = [state["message_id"] for name, state in events if name.endswith("Chatted")]
        twice = sorted({mid for mid in stored if stored.count(mid) > 1})
        assert not twice, f"{lot}: applied twice: {twice}"
        missing = [mid for mid in mids if mid not in set(stored)]
        assert not missing, f"{lot}: acknowledged but not stored: {missing}"
        epochs_of[lot] = epochs
    return epochs_of
