"""The recorder event stream's resumption: a subscription whose reads fail is re-opened
after the last position it delivered, so the consumer sees each event once, in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder

from infrastructure.errors import SubscriptionDropped
from infrastructure.persistence.recorder_subscriptions import RecorderEventStream
from infrastructure.persistence.subscriptions import EventFilter


class FlakyPollingRecorder:
    """A POPO recorder seen as SQLite sees it (no subscribe(): polling), whose reads
    fail with a driver error on the calls numbered in ``fail_on``."""

    def __init__(self, fail_on: set[int]) -> None:
        self.inner = POPOApplicationRecorder()
        self.fail_on = fail_on
        self.calls = 0

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> Any:
        raise NotImplementedError

    def select_notifications(self, *args: Any, **kwargs: Any) -> Sequence[Notification]:
        self.calls += 1
        if self.calls in self.fail_on:
            raise OSError("connection lost")
        return self.inner.select_notifications(*args, **kwargs)

    def max_notification_id(self) -> int | None:
        return self.inner.max_notification_id()


def stream_on(recorder: FlakyPollingRecorder, **options: Any) -> RecorderEventStream:
    return RecorderEventStream(recorder, retry_backoff_s=0.01, poll_interval_s=0.01, **options)  # type: ignore[arg-type]


def test_a_failed_read_resumes_after_the_last_delivered_position() -> None:
    recorder = FlakyPollingRecorder(fail_on={2})
    recorder.inner.insert_events([StoredEvent("Lot-a", v, "m:E", b"") for v in (1, 2, 3)])
    stream = stream_on(recorder)
    with stream.subscribe_all(after=1) as subscription:  # call 1: the position check
        got = [next(subscription).position for _ in range(2)]  # call 2 fails, call 3 resumes
    assert got == [2, 3]
    assert stream.live_mode == "poll"


def test_failures_beyond_the_retries_are_a_typed_error() -> None:
    recorder = FlakyPollingRecorder(fail_on={1, 2, 3})
    recorder.inner.insert_events([StoredEvent("Lot-a", 1, "m:E", b"")])
    with stream_on(recorder, retries=2).subscribe_all() as subscription, pytest.raises(SubscriptionDropped):
        next(subscription)


def test_checkpoints_every_n_skipped_events() -> None:
    recorder = FlakyPollingRecorder(fail_on=set())
    recorder.inner.insert_events([StoredEvent("Noise-1", v, "m:E", b"") for v in range(1, 8)])
    recorder.inner.insert_events([StoredEvent("Rare-1", 1, "m:E", b"")])
    stream = stream_on(recorder, checkpoint_every=3)
    with stream.subscribe_all(filter=EventFilter(categories=("Rare",)), include_checkpoints=True) as subscription:
        items = [next(subscription) for _ in range(3)]
    assert [getattr(i, "stream_id", None) or i.position for i in items] == [3, 6, "Rare-1"]
