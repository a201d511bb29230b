"""Catch-up event stream (:class:`~.subscriptions.EventStream`) on the ``eventsourcing``
library's application recorders: SQLite, PostgreSQL and memory (POPO).

Built on the same :class:`~eventsourcing.persistence.ApplicationRecorder` the
:class:`~.recorder_journal.RecorderJournal` writes to (``RecorderJournal.event_stream()``,
or ``open_event_stream(settings)`` for a process of its own, e.g. a projection reading
the SQLite file or PostgreSQL database the state nodes write).

**Positions** are the recorder's notification IDs: the store's global order, strictly
increasing in commit order (PostgreSQL: the recorder locks the table for writes while it
inserts, so IDs are committed in order and a reader never passes a gap that fills in
later; SQLite: one writer at a time; memory: a lock). They are NOT contiguous on
PostgreSQL (a refused group commit consumes sequence values), so, as with EventStoreDB,
never compute a position. Resuming is exclusive: ``after=p`` starts with the first event
after ``p``. A position that is not the notification ID of a stored event is refused with
:class:`~infrastructure.errors.SubscriptionError`, as the EventStoreDB adapter refuses a
commit position that is not an event boundary.

**Filtering** happens here, on every event read (the recorders can only filter exact
topics, and a filter pushed into the query would hide the skipped events that checkpoints
are made of). A filtered subscription with ``include_checkpoints=True`` yields a
:class:`~.subscriptions.Checkpoint` after every ``checkpoint_every`` events the filter
skipped in a row, so a rarely matching consumer advances its stored position while it
reads past other categories (EventStoreDB's server sends checkpoints on the same
principle, per window of events searched). Snapshots are in a recorder of their own and
never appear; the recorders have no system events.

**Live delivery** after catching up:

- PostgreSQL and memory: the recorder's own ``subscribe(gt=position)``, i.e. PostgreSQL
  ``LISTEN``/``NOTIFY`` (every insert transaction notifies the table's channel, from any
  process) and, in memory, the recorder's in-process listeners. A new event arrives with no
  polling delay. Cost per subscription: two threads and, on PostgreSQL, one pooled
  connection held for ``LISTEN`` (size ``POSTGRES_POOL_SIZE``/``POSTGRES_MAX_OVERFLOW``
  for the number of subscriptions a process keeps open).
- SQLite: the recorder has no ``subscribe()`` (the library raises NotImplementedError)
  and SQLite has no cross-process notification, so the subscription polls: it reads pages
  back to back while there are events and, once caught up, re-reads every
  ``poll_interval_s`` (0.01 s: an indexed ``rowid > ?`` range scan returning nothing costs
  ~25 us of CPU, so 100 a second are a quarter of a percent of a core; a 50 ms poll was
  half of a projector's 1,000 events/s lag budget, ``loadtests/bench_projection.py``;
  a state node's standby feed keeps 0.05 s: ``infrastructure.runtime.mirrors.FEED_POLL_S``).
  No thread of its own: polling happens in the consumer's ``next()``.

``stop()`` (any thread) ends a blocked ``next()`` within a poll interval (PostgreSQL: the
listener wakes at least every 0.1 s). A subscription whose reads fail (database restart,
dropped connection) is re-opened after the last position it delivered or checkpointed,
up to ``retries`` times in a row, so the consumer sees each event once and in order.

Persistent subscriptions (server-kept group positions, competing consumers, acks,
parking) are an EventStoreDB server feature: these stores offer the catch-up port only.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Protocol

from eventsourcing.persistence import ApplicationRecorder, Notification

from infrastructure.errors import PersistenceError, SubscriptionDropped, SubscriptionError
from infrastructure.persistence.event_ids import event_id
from infrastructure.persistence.subscriptions import (
    EVERYTHING,
    Checkpoint,
    EventFilter,
    EventStream,
    EventSubscription,
    StreamEvent,
)

log = logging.getLogger(__name__)

READ_PAGE = 500  # notifications per query, catching up or polling
POLL_INTERVAL_S = 0.01  # SQLite, once caught up: see the module docstring


def _failure(exc: BaseException, what: str) -> PersistenceError:
    if isinstance(exc, PersistenceError):
        return exc
    error = PersistenceError(f"{what} failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


class _Source(Protocol):
    """Notifications after a position, in order, blocking when caught up."""

    def __next__(self) -> Notification: ...

    def close(self) -> None: ...


class _Polling:
    """SQLite (no ``subscribe()``): pages of ``select_notifications``, then a poll every
    ``interval`` seconds; ``close()`` interrupts the wait."""

    def __init__(self, recorder: ApplicationRecorder, gt: int | None, interval: float) -> None:
        self._recorder = recorder
        self._last = gt
        self._interval = interval
        self._buffer: deque[Notification] = deque()
        self._closed = threading.Event()

    def __next__(self) -> Notification:
        while True:
            if self._closed.is_set():
                raise StopIteration
            if self._buffer:
                return self._buffer.popleft()
            page = self._recorder.select_notifications(start=self._last, limit=READ_PAGE, inclusive_of_start=False)
            if page:
                self._buffer.extend(page)
                self._last = page[-1].id
            else:
                self._closed.wait(self._interval)

    def close(self) -> None:
        self._closed.set()


class _Notified:
    """The recorder's own subscription (PostgreSQL LISTEN/NOTIFY, memory listeners)."""

    def __init__(self, recorder: ApplicationRecorder, gt: int | None) -> None:
        self._subscription = recorder.subscribe(gt=gt)
        # Entered so that leaving it (close) stops it AND joins its threads: the pooled
        # connection held for LISTEN is back before the journal's pool may be closed.
        self._subscription.__enter__()

    def __next__(self) -> Notification:
        return next(self._subscription)

    def close(self) -> None:
        self._subscription.__exit__(None, None, None)


class RecorderEventStream(EventStream):
    """The catch-up event stream port on an application recorder (see module docstring).

    ``on_close`` runs on :meth:`close` after the open subscriptions are stopped (the
    owner's cleanup, e.g. closing a journal opened only for this stream)."""

    def __init__(self, recorder: ApplicationRecorder, *, poll_interval_s: float = POLL_INTERVAL_S, checkpoint_every: int = 100,
                 retries: int = 2, retry_backoff_s: float = 0.2, on_close: Callable[[], None] | None = None) -> None:
        self.recorder = recorder
        self.poll_interval_s = poll_interval_s
        self.checkpoint_every = checkpoint_every
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self._on_close = on_close
        self._notify: bool | None = None  # does the recorder have subscribe()? known after the first try
        self._open: weakref.WeakSet[_CatchUp] = weakref.WeakSet()
        self._lock = threading.Lock()

    @property
    def live_mode(self) -> str:
        """"notify" (the recorder's subscribe()), "poll" (SQLite), or "unknown" before
        the first subscription."""
        return {True: "notify", False: "poll", None: "unknown"}[self._notify]

    # ------------------------------------------------------------------ events
    def to_stream_event(self, notification: Notification, event_filter: EventFilter = EVERYTHING) -> StreamEvent | None:
        """Our view of a notification, or None when ``event_filter`` rejects it."""
        stream_id, topic = str(notification.originator_id), notification.topic
        if not event_filter.matches(stream_id, topic):
            return None
        version, state = notification.originator_version, bytes(notification.state)
        return StreamEvent(stream_id=stream_id, version=version, position=notification.id,
                           event_id=str(event_id(stream_id, version - 1, topic, state)), topic=topic, state=state)

    def check_position(self, after: int | None) -> None:
        """Raise SubscriptionError unless ``after`` is None or a stored event's position."""
        if after is None:
            return
        if isinstance(after, bool) or not isinstance(after, int):
            raise SubscriptionError(f"a position is an int, not {after!r}")
        try:
            found = self.recorder.select_notifications(start=after, stop=after, limit=1) if after > 0 else []
        except Exception as exc:
            raise _failure(exc, f"check of position {after}") from exc
        if not found or found[0].id != after:
            raise SubscriptionError(f"position {after} is not the position of an event "
                                    "(store only positions you were given)")

    def open_source(self, gt: int | None) -> _Source:
        """Notifications after ``gt``: the recorder's subscription where it has one, else polling."""
        if self._notify is not False:
            try:
                source: _Source = _Notified(self.recorder, gt)
            except NotImplementedError:
                self._notify = False
            except Exception as exc:
                raise _failure(exc, "subscription") from exc
            else:
                self._notify = True
                return source
        return _Polling(self.recorder, gt, self.poll_interval_s)

    # ------------------------------------------------------------------ port
    def subscribe_all(self, after: int | None = None, filter: EventFilter = EVERYTHING,  # noqa: A002
                      include_checkpoints: bool = False) -> EventSubscription:
        self.check_position(after)
        subscription = _CatchUp(self, after, filter, include_checkpoints)
        with self._lock:
            self._open.add(subscription)
        return subscription

    def read_all(self, after: int | None = None, limit: int = 1000,
                 filter: EventFilter = EVERYTHING) -> list[StreamEvent]:  # noqa: A002
        self.check_position(after)
        out: list[StreamEvent] = []
        position = after
        try:
            while len(out) < limit:
                page = self.recorder.select_notifications(start=position, limit=max(limit, READ_PAGE),
                                                          inclusive_of_start=position is None)
                if not page:
                    break
                out.extend(e for e in (self.to_stream_event(n, filter) for n in page) if e is not None)
                position = page[-1].id
        except PersistenceError:
            raise
        except Exception as exc:
            raise _failure(exc, "read of the event stream") from exc
        return out[:limit]

    def head_position(self) -> int | None:
        try:
            return self.recorder.max_notification_id() or None
        except Exception as exc:
            raise _failure(exc, "read of the head position") from exc

    def close(self) -> None:
        with self._lock:
            running = list(self._open)
        for subscription in running:
            subscription.stop()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()


class _CatchUp(EventSubscription):
    def __init__(self, owner: RecorderEventStream, after: int | None, event_filter: EventFilter,
                 include_checkpoints: bool) -> None:
        self._owner = owner
        self._filter = event_filter
        self._include_checkpoints = include_checkpoints
        self._last = after
        self._skipped = 0
        self._stopped = threading.Event()
        self._source_lock = threading.Lock()
        self._source: _Source = owner.open_source(after)

    def __next__(self) -> StreamEvent | Checkpoint:
        failures = 0
        while True:
            if self._stopped.is_set():
                raise StopIteration
            try:
                notification = next(self._source)
            except StopIteration:
                if self._stopped.is_set():
                    raise
                error: PersistenceError = SubscriptionDropped("the recorder ended the subscription")
            except Exception as exc:  # noqa: BLE001 - database errors arrive untranslated
                if self._stopped.is_set():
                    raise StopIteration from None
                error = SubscriptionDropped(f"subscription to the event stream failed: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
            else:
                failures = 0
                if self._last is not None and notification.id <= self._last:
                    continue  # defensive: never deliver a position twice
                self._last = notification.id
                event = self._owner.to_stream_event(notification, self._filter)
                if event is not None:
                    self._skipped = 0
                    return event
                self._skipped += 1
                if self._skipped >= self._owner.checkpoint_every:
                    self._skipped = 0
                    if self._include_checkpoints:
                        return Checkpoint(self._last)
                continue
            # The source failed: re-open it after the last position, a few times in a row.
            if failures >= self._owner.retries:
                self.stop()
                raise error
            failures += 1
            log.info("catch-up subscription lost (%s); resuming after %s", error, self._last)
            self._close_source()
            if self._stopped.wait(self._owner.retry_backoff_s):
                raise StopIteration
            try:
                source = self._owner.open_source(self._last)
            except PersistenceError:
                if failures >= self._owner.retries:
                    self.stop()
                    raise
                continue
            with self._source_lock:
                self._source = source
            if self._stopped.is_set():  # stopped while re-opening: do not leak the new source
                self._close_source()

    def _close_source(self) -> None:
        with self._source_lock:
            source = self._source
        try:
            source.close()
        except Exception:  # already failed or stopped
            log.debug("closing a subscription source failed", exc_info=True)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._close_source()


__all__ = ["RecorderEventStream"]

