"""Persistent subscription groups: competing consumers with acks, retries and parking.

Model (after EventStoreDB's ``PersistentSubscription``):

* a group reads its source (one stream, or ``$all`` through the server's
  default ``$all`` filter and an optional filter of its own) from a cursor and hands each event to one connected consumer that
  has a free slot (``buffer_size`` minus its in-flight messages), choosing the
  consumer by strategy (RoundRobin, DispatchToSingle, Pinned, PinnedByCorrelation);
* an event stays in flight until acked; a nack ``retry``/``unknown`` or a
  message timeout re-queues it with ``retry_count + 1``; once the retry count
  has reached ``max_retry_count`` it is *parked* instead: a link event
  (``"<revision>@<stream>"``) is written to
  ``$persistentsubscription-<stream>::<group>-parked``;
* ``replay_parked`` re-delivers the parked events (resolved, with the parked
  link attached so the client acks by the link ID) and then truncates the
  parked stream with ``$tb``;
* the group's progress (the position below which every event is done) is
  checkpointed as ``$SubscriptionCheckpoint`` events in
  ``$persistentsubscription-<stream>::<group>-checkpoint``, and definitions as
  ``PersistentConfig1`` events in ``$persistentSubscriptionConfig`` — the same
  streams the real server uses, so ``--data-file`` persistence covers them.

Each group runs one asyncio task that dispatches when woken (a write, an ack, a
consumer joining); consumers are queues drained by their gRPC call coroutine.
Time-driven work runs on the registry's single timer tick, every
:data:`TIMER_TICK_INTERVAL_S`, as the server's ``PersistentSubscriptionTimerTick``:
a message whose timeout has passed is retried on the next tick (so a 10 ms
timeout means "retried within about a second", and 0 means "retried on the next
tick"), and time-based checkpoints (``checkpoint_after``) are written on ticks;
acks only checkpoint once ``max_checkpoint_count`` messages are done.

Create/update validate settings as the server does (unknown consumer strategy,
``read_batch_size >= history_buffer_size``) and fail with
:class:`~.errors.PersistentSubscriptionFailed` and the server's reason text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
import zlib
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Literal

from kurrentdbclient.protos.v1 import persistent_pb2

from .convert import persistent_read_event
from .errors import (
    EmulatorError,
    InvalidPosition,
    MaximumSubscribersReached,
    PersistentSubscriptionExists,
    PersistentSubscriptionFailed,
    PersistentSubscriptionNotFound,
    SubscriptionDropped,
)
from .filters import EventFilter, allowed_in_all_groups
from .store import (
    EXPECTED_ANY,
    LINK_EVENT_TYPE,
    METADATA_EVENT_TYPE,
    EventLog,
    EventRecord,
    ProposedEvent,
    metadata_stream_name,
)

ALL_STREAM = "$all"
CONFIG_STREAM = "$persistentSubscriptionConfig"
CONFIG_EVENT_TYPE = "PersistentConfig1"
CHECKPOINT_EVENT_TYPE = "$SubscriptionCheckpoint"
START = 0
END = -1

NackAction = Literal["unknown", "park", "retry", "skip", "stop"]

# The server's PersistentSubscriptionService reschedules its timer tick 1000 ms after
# handling the previous one; message timeouts and time-based checkpoints wait for it.
TIMER_TICK_INTERVAL_S = 1.0

# PersistentSubscriptionConsumerStrategyRegistry's built-in strategies.
CONSUMER_STRATEGIES = ("RoundRobin", "DispatchToSingle", "Pinned", "PinnedByCorrelation")


def check_strategy(definition: GroupDefinition) -> None:
    """``PersistentSubscriptionService``: an unknown strategy fails the create/update."""
    strategy = definition.settings.consumer_strategy
    if strategy not in CONSUMER_STRATEGIES:
        raise PersistentSubscriptionFailed(
            definition.stream_name, definition.group_name, f"Consumer strategy {strategy} does not exist."
        )


def check_buffers(definition: GroupDefinition) -> None:
    """The ``PersistentSubscription`` constructor refuses a read batch that does not fit
    in the history buffer with ``ArgumentOutOfRangeException(paramName)``; the service
    reports its message (.NET wraps the "parameter name" in its standard text)."""
    settings = definition.settings
    if settings.read_batch_size >= settings.history_buffer_size:
        raise PersistentSubscriptionFailed(
            definition.stream_name,
            definition.group_name,
            "Specified argument was out of the range of valid values. (Parameter"
            " 'ReadBatchSize may not be greater than or equal to BufferSize')",
        )


def parked_stream_name(stream_name: str, group_name: str) -> str:
    """Where a group's parked messages are linked to."""
    return f"$persistentsubscription-{stream_name}::{group_name}-parked"


def checkpoint_stream_name(stream_name: str, group_name: str) -> str:
    """Where a group's checkpoints are written."""
    return f"$persistentsubscription-{stream_name}::{group_name}-checkpoint"


def format_all_position(position: int) -> str:
    """``$all`` positions as the server prints them (``C:<commit>/P:<prepare>``)."""
    return f"C:{position}/P:{position}"


@dataclass
class GroupSettings:
    """The tunables of a group, in the units the info response reports."""

    resolve_links: bool = False
    extra_statistics: bool = False
    max_retry_count: int = 10
    min_checkpoint_count: int = 10
    max_checkpoint_count: int = 1000
    max_subscriber_count: int = 0
    live_buffer_size: int = 500
    read_batch_size: int = 20
    history_buffer_size: int = 500
    message_timeout_ms: int = 30_000
    checkpoint_after_ms: int = 2_000
    consumer_strategy: str = "RoundRobin"


@dataclass
class GroupDefinition:
    """What ``Create``/``Update`` define: source, start point, filter and settings."""

    stream_name: str
    group_name: str
    start_from: int
    settings: GroupSettings
    event_filter: EventFilter | None = None

    @property
    def is_all(self) -> bool:
        """Whether the group reads ``$all`` rather than one stream."""
        return self.stream_name == ALL_STREAM

    def to_json(self) -> dict[str, object]:
        """JSON form stored in the config stream."""
        return {
            "stream": self.stream_name,
            "group": self.group_name,
            "start_from": self.start_from,
            "settings": asdict(self.settings),
            "filter": self.event_filter.describe() if self.event_filter else None,
        }

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> GroupDefinition:
        """Inverse of :meth:`to_json`."""
        settings = raw["settings"]
        filter_raw = raw.get("filter")
        assert isinstance(settings, dict)
        return cls(
            stream_name=str(raw["stream"]),
            group_name=str(raw["group"]),
            start_from=int(str(raw["start_from"])),
            settings=GroupSettings(**settings),
            event_filter=(
                EventFilter.from_description(filter_raw) if isinstance(filter_raw, dict) else None
            ),
        )


@dataclass
class Delivery:
    """One message of the group: an event, maybe reached through a parked link."""

    event: EventRecord
    link: EventRecord | None
    retry_count: int
    key: int | None  # source order key for checkpointing; None for replayed parked

    @property
    def ack_id(self) -> str:
        """The ID the client acks/nacks this message by."""
        return self.link.event_id if self.link is not None else self.event.event_id


@dataclass
class Consumer:
    """One connected ``Read`` call of the group."""

    buffer_size: int
    connection_name: str
    peer: str
    consumer_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    queue: asyncio.Queue[persistent_pb2.ReadResp | EmulatorError] = field(
        default_factory=asyncio.Queue
    )
    in_flight: set[str] = field(default_factory=set)
    total_items: int = 0

    @property
    def available_slots(self) -> int:
        """How many more messages may be pushed before acks come back."""
        return max(0, self.buffer_size - len(self.in_flight))


@dataclass
class _InFlight:
    delivery: Delivery
    consumer: Consumer
    deadline: float


class SubscriptionGroup:
    """Runtime state and dispatch loop of one persistent subscription group."""

    def __init__(self, definition: GroupDefinition, log: EventLog) -> None:
        self.definition = definition
        self._log = log
        self.consumers: list[Consumer] = []
        self._round_robin = 0
        self._retry: deque[Delivery] = deque()
        self._in_flight: dict[str, _InFlight] = {}
        self._outstanding: deque[list[int | bool]] = deque()
        self._outstanding_by_key: dict[int, list[int | bool]] = {}
        self._done_upto: int | None = None
        self._last_checkpoint: int | None = None
        self._processed_since_checkpoint = 0
        self._last_checkpoint_time = time.monotonic()
        self._last_known: int | None = None
        self._total_items = 0
        self._wake = asyncio.Event()
        self._closed = False
        self._next_revision = 0
        self._next_index = 0
        self._init_cursor()
        self._log.add_listener(self._wake.set)
        self._task = asyncio.get_running_loop().create_task(self._run())

    # ------------------------------------------------------------ names/info
    @property
    def stream_name(self) -> str:
        """Source stream name (``$all`` for all-stream groups)."""
        return self.definition.stream_name

    @property
    def group_name(self) -> str:
        """The group's name."""
        return self.definition.group_name

    @property
    def subscription_id(self) -> str:
        """The ID sent in the confirmation; the client checks it is ``stream::group``."""
        return f"{self.stream_name}::{self.group_name}"

    def _format_key(self, key: int | None) -> str:
        if key is None:
            return ""
        return format_all_position(key) if self.definition.is_all else str(key)

    def info(self) -> persistent_pb2.SubscriptionInfo:
        """The ``SubscriptionInfo`` message for GetInfo/List."""
        settings = self.definition.settings
        start_from = self.definition.start_from
        info = persistent_pb2.SubscriptionInfo(
            event_source=self.stream_name,
            group_name=self.group_name,
            status="Live",
            total_items=self._total_items,
            last_checkpointed_event_position=self._format_key(self._last_checkpoint),
            last_known_event_position=self._format_key(self._last_known),
            resolve_link_tos=settings.resolve_links,
            start_from=(
                format_all_position(start_from) if self.definition.is_all else str(start_from)
            ),
            message_timeout_milliseconds=settings.message_timeout_ms,
            extra_statistics=settings.extra_statistics,
            max_retry_count=settings.max_retry_count,
            live_buffer_size=settings.live_buffer_size,
            buffer_size=settings.history_buffer_size,
            read_batch_size=settings.read_batch_size,
            check_point_after_milliseconds=settings.checkpoint_after_ms,
            min_check_point_count=settings.min_checkpoint_count,
            max_check_point_count=settings.max_checkpoint_count,
            retry_buffer_count=len(self._retry),
            total_in_flight_messages=len(self._in_flight),
            outstanding_messages_count=len(self._in_flight),
            named_consumer_strategy=settings.consumer_strategy,
            max_subscriber_count=settings.max_subscriber_count,
            parked_message_count=self.parked_message_count(),
        )
        for consumer in self.consumers:
            connection = info.connections.add()
            setattr(connection, "from", consumer.peer)
            connection.username = "$admin"
            connection.total_items = consumer.total_items
            connection.available_slots = consumer.available_slots
            connection.in_flight_messages = len(consumer.in_flight)
            connection.connection_name = consumer.connection_name
        return info

    def parked_message_count(self) -> int:
        """Parked messages not yet replayed."""
        index = self._log.stream(parked_stream_name(self.stream_name, self.group_name))
        if index is None:
            return 0
        return max(0, index.last_revision + 1 - index.truncate_before)

    # --------------------------------------------------------------- cursor
    def _init_cursor(self) -> None:
        """Start after the last checkpoint, else from the definition's start point."""
        checkpoint = self._read_checkpoint()
        if checkpoint is not None:
            self._last_checkpoint = checkpoint
            self._done_upto = checkpoint
            if not self.definition.is_all:
                self._next_revision = checkpoint + 1
                return
            try:
                self._next_index = self._log.index_of_position(checkpoint, exclusive=True)
            except InvalidPosition:
                pass
            else:
                return
        start = self.definition.start_from
        if not self.definition.is_all:
            if start == END:
                index = self._log.stream(self.stream_name)
                self._next_revision = index.last_revision + 1 if index is not None else 0
            else:
                self._next_revision = max(0, start)
            return
        if start == END:
            self._next_index = len(self._log)
        elif start == START:
            self._next_index = 0
        else:
            self._next_index = next(
                (i for i in range(len(self._log)) if self._log.record_at(i).position >= start),
                len(self._log),
            )

    def _read_checkpoint(self) -> int | None:
        name = checkpoint_stream_name(self.stream_name, self.group_name)
        records = self._log.read_stream(name, from_revision=None, backwards=True, limit=1)
        if not records:
            return None
        try:
            value = json.loads(records[0].data.decode("utf8"))
        except (UnicodeDecodeError, ValueError):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.startswith("C:"):
            return int(value.split("/")[0][2:])
        return None

    def _next_from_source(self) -> Delivery | None:
        if not self.definition.is_all:
            index = self._log.stream(self.stream_name)
            if index is None or index.tombstoned:
                return None
            start = max(self._next_revision, index.truncate_before)
            if start > index.last_revision:
                return None
            record = index.records[start]
            self._next_revision = start + 1
            return self._track(Delivery(record, None, 0, record.revision))
        event_filter = self.definition.event_filter
        while self._next_index < len(self._log):
            record = self._log.record_at(self._next_index)
            self._next_index += 1
            if allowed_in_all_groups(record) and (event_filter is None or event_filter.matches(record)):
                return self._track(Delivery(record, None, 0, record.position))
        return None

    def _track(self, delivery: Delivery) -> Delivery:
        assert delivery.key is not None
        entry: list[int | bool] = [delivery.key, False]
        self._outstanding.append(entry)
        self._outstanding_by_key[delivery.key] = entry
        self._last_known = delivery.key
        return delivery

    # ----------------------------------------------------------- consumers
    def connect(self, buffer_size: int, connection_name: str, peer: str) -> Consumer:
        """Add a consumer; raises when the group is full."""
        maximum = self.definition.settings.max_subscriber_count
        if maximum > 0 and len(self.consumers) >= maximum:
            raise MaximumSubscribersReached(self.stream_name, self.group_name)
        consumer = Consumer(
            buffer_size=max(1, buffer_size), connection_name=connection_name, peer=peer
        )
        self.consumers.append(consumer)
        self._wake.set()
        return consumer

    def disconnect(self, consumer: Consumer) -> None:
        """Remove a consumer; its unacked messages go back to be retried."""
        if consumer in self.consumers:
            self.consumers.remove(consumer)
        for ack_id in list(consumer.in_flight):
            entry = self._in_flight.pop(ack_id, None)
            if entry is not None:
                self._retry_or_park(entry.delivery)
        consumer.in_flight.clear()
        self._wake.set()

    def drop_all(self, *, deleted: bool) -> None:
        """Disconnect every consumer, telling each call why."""
        for consumer in list(self.consumers):
            consumer.queue.put_nowait(
                SubscriptionDropped(self.stream_name, self.group_name, deleted=deleted)
            )
            self.disconnect(consumer)

    # --------------------------------------------------------- acks/nacks
    def ack(self, ack_ids: list[str]) -> None:
        """Mark messages done."""
        for ack_id in ack_ids:
            entry = self._take(ack_id)
            if entry is not None:
                self._finish(entry.delivery)
        self._wake.set()

    def nack(self, ack_ids: list[str], action: NackAction, consumer: Consumer) -> None:
        """Apply a nack action to messages (see module docstring)."""
        for ack_id in ack_ids:
            entry = self._take(ack_id)
            if entry is None:
                continue
            if action == "park":
                self._park(entry.delivery)
            elif action == "skip":
                self._finish(entry.delivery)
            else:
                self._retry_or_park(entry.delivery)
        if action == "stop":
            consumer.queue.put_nowait(SubscriptionDropped(self.stream_name, self.group_name))
            self.disconnect(consumer)
        self._wake.set()

    def _take(self, ack_id: str) -> _InFlight | None:
        entry = self._in_flight.pop(ack_id, None)
        if entry is not None:
            entry.consumer.in_flight.discard(ack_id)
        return entry

    def _finish(self, delivery: Delivery) -> None:
        """The message is done (acked, skipped or parked): advance the checkpoint."""
        self._processed_since_checkpoint += 1
        if delivery.key is None:
            return
        entry = self._outstanding_by_key.pop(delivery.key, None)
        if entry is None:
            return
        entry[1] = True
        while self._outstanding and self._outstanding[0][1]:
            key = self._outstanding.popleft()[0]
            assert isinstance(key, int)
            self._done_upto = key

    def _retry_or_park(self, delivery: Delivery) -> None:
        if delivery.retry_count >= self.definition.settings.max_retry_count:
            self._park(delivery)
            return
        delivery.retry_count += 1
        self._retry.append(delivery)

    def _park(self, delivery: Delivery) -> None:
        event = delivery.event
        link = ProposedEvent(
            event_id=str(uuid.uuid4()),
            event_type=LINK_EVENT_TYPE,
            content_type="application/octet-stream",
            data=f"{event.revision}@{event.stream_name}".encode(),
            metadata=b"",
        )
        self._log.append(parked_stream_name(self.stream_name, self.group_name), EXPECTED_ANY, [link])
        self._finish(delivery)

    def replay_parked(self) -> None:
        """Queue every parked message for redelivery and truncate the parked stream."""
        name = parked_stream_name(self.stream_name, self.group_name)
        links = self._log.read_stream(name, from_revision=None, backwards=False, limit=2**62)
        if not links:
            return
        for link in links:
            revision_text, _, stream_name = link.data.decode("utf8").partition("@")
            try:
                event = self._log.get_event(stream_name, int(revision_text))
            except ValueError:
                event = None
            if event is not None:
                self._retry.append(Delivery(event, link, 0, None))
        meta = ProposedEvent(
            event_id=str(uuid.uuid4()),
            event_type=METADATA_EVENT_TYPE,
            content_type="application/json",
            data=json.dumps({"$tb": links[-1].revision + 1}).encode("utf8"),
            metadata=b"",
        )
        self._log.append(metadata_stream_name(name), EXPECTED_ANY, [meta])
        self._wake.set()

    # ------------------------------------------------------------ dispatch
    def _choose(self, delivery: Delivery) -> Consumer | None:
        ready = [c for c in self.consumers if c.available_slots > 0]
        if not ready:
            return None
        strategy = self.definition.settings.consumer_strategy
        if strategy == "DispatchToSingle":
            return ready[0]
        if strategy in ("Pinned", "PinnedByCorrelation"):
            key = delivery.event.stream_name
            if strategy == "PinnedByCorrelation":
                key = _correlation_id(delivery.event) or key
            bucket = zlib.crc32(key.encode("utf8")) % len(self.consumers)
            pinned = self.consumers[bucket]
            return pinned if pinned.available_slots > 0 else ready[0]
        count = len(self.consumers)
        for step in range(count):
            candidate = self.consumers[(self._round_robin + step) % count]
            if candidate.available_slots > 0:
                self._round_robin = (self._round_robin + step + 1) % count
                return candidate
        return None

    def _dispatch(self) -> None:
        # A zero timeout is TimeSpan.Zero on the server: due on the very next tick.
        timeout = self.definition.settings.message_timeout_ms / 1000.0
        while any(c.available_slots > 0 for c in self.consumers):
            delivery = self._retry.popleft() if self._retry else self._next_from_source()
            if delivery is None:
                return
            consumer = self._choose(delivery)
            if consumer is None:
                self._retry.appendleft(delivery)
                return
            consumer.in_flight.add(delivery.ack_id)
            consumer.total_items += 1
            self._total_items += 1
            deadline = time.monotonic() + timeout
            self._in_flight[delivery.ack_id] = _InFlight(delivery, consumer, deadline)
            consumer.queue.put_nowait(
                persistent_read_event(delivery.event, delivery.link, delivery.retry_count)
            )

    def _expire(self, now: float) -> None:
        for ack_id, entry in list(self._in_flight.items()):
            if entry.deadline <= now:
                self._take(ack_id)
                self._retry_or_park(entry.delivery)

    def _maybe_checkpoint(self, now: float, *, time_check: bool) -> None:
        """``TryMarkCheckpoint``: acks checkpoint after ``max_checkpoint_count`` done
        messages; the tick (``time_check``) after ``min_checkpoint_count`` once
        ``checkpoint_after`` has passed since the last checkpoint."""
        if self._done_upto is None or self._done_upto == self._last_checkpoint:
            return
        settings = self.definition.settings
        elapsed_ms = (now - self._last_checkpoint_time) * 1000
        due = self._processed_since_checkpoint >= settings.max_checkpoint_count or (
            time_check
            and settings.checkpoint_after_ms > 0  # 0 is TimeSpan.MaxValue: never by time
            and self._processed_since_checkpoint >= settings.min_checkpoint_count
            and elapsed_ms >= settings.checkpoint_after_ms
        )
        if not due:
            return
        value: object = (
            format_all_position(self._done_upto) if self.definition.is_all else self._done_upto
        )
        checkpoint = ProposedEvent(
            event_id=str(uuid.uuid4()),
            event_type=CHECKPOINT_EVENT_TYPE,
            content_type="application/json",
            data=json.dumps(value).encode("utf8"),
            metadata=b"",
        )
        name = checkpoint_stream_name(self.stream_name, self.group_name)
        self._log.append(name, EXPECTED_ANY, [checkpoint])
        self._last_checkpoint = self._done_upto
        self._processed_since_checkpoint = 0
        self._last_checkpoint_time = now

    def tick(self, now: float) -> None:
        """``NotifyClockTick``: retry timed-out messages, checkpoint by time, push."""
        if self._closed:
            return
        self._expire(now)
        self._maybe_checkpoint(now, time_check=True)
        self._wake.set()

    async def _run(self) -> None:
        """The group's only task: dispatch (and checkpoint by count) whenever woken."""
        while not self._closed:
            self._wake.clear()
            self._dispatch()
            self._maybe_checkpoint(time.monotonic(), time_check=False)
            await self._wake.wait()

    async def close(self, *, deleted: bool) -> None:
        """Stop the group: drop consumers and end the dispatch task."""
        self._closed = True
        self.drop_all(deleted=deleted)
        self._log.remove_listener(self._wake.set)
        self._wake.set()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _correlation_id(event: EventRecord) -> str | None:
    """The ``$correlationId`` of an event's JSON metadata (PinnedByCorrelation's key)."""
    try:
        metadata = json.loads(event.metadata.decode("utf8"))
    except (UnicodeDecodeError, ValueError):
        return None
    value = metadata.get("$correlationId") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else None


class PersistentSubscriptionRegistry:
    """All groups, keyed by (stream, group), with definitions persisted in the log."""

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._groups: dict[tuple[str, str], SubscriptionGroup] = {}
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def _tick_forever(self) -> None:
        """One timer for every group, rescheduled after each tick like the server's."""
        while True:
            await asyncio.sleep(TIMER_TICK_INTERVAL_S)
            now = time.monotonic()
            for group in list(self._groups.values()):
                group.tick(now)

    def load(self) -> None:
        """Recreate groups from the last ``PersistentConfig1`` event (after restart)."""
        records = self._log.read_stream(CONFIG_STREAM, from_revision=None, backwards=True, limit=1)
        if not records:
            return
        raw = json.loads(records[0].data.decode("utf8"))
        for entry in raw.get("entries", []):
            definition = GroupDefinition.from_json(entry)
            key = (definition.stream_name, definition.group_name)
            self._groups[key] = SubscriptionGroup(definition, self._log)

    def get(self, stream_name: str, group_name: str) -> SubscriptionGroup:
        """The group, or :class:`PersistentSubscriptionNotFound`."""
        group = self._groups.get((stream_name, group_name))
        if group is None:
            raise PersistentSubscriptionNotFound(stream_name, group_name)
        return group

    def list(self, stream_name: str | None) -> list[SubscriptionGroup]:
        """Groups of one stream (``None``: all groups), in creation order."""
        return [g for g in self._groups.values() if stream_name in (None, g.stream_name)]

    def create(self, definition: GroupDefinition) -> None:
        """Add a group; raises :class:`PersistentSubscriptionExists` if present and
        :class:`PersistentSubscriptionFailed` for settings the server refuses."""
        key = (definition.stream_name, definition.group_name)
        check_strategy(definition)
        if key in self._groups:
            raise PersistentSubscriptionExists(*key)
        check_buffers(definition)
        self._groups[key] = SubscriptionGroup(definition, self._log)
        self._persist()

    async def update(self, definition: GroupDefinition) -> None:
        """Replace a group's definition; connected consumers are dropped, as on the server.

        Raises :class:`PersistentSubscriptionNotFound`, or :class:`PersistentSubscriptionFailed`
        (the group is left as it was) for settings the server refuses."""
        key = (definition.stream_name, definition.group_name)
        old = self.get(*key)
        check_strategy(definition)
        check_buffers(definition)
        if definition.event_filter is None:
            definition.event_filter = old.definition.event_filter
        await old.close(deleted=False)
        self._groups[key] = SubscriptionGroup(definition, self._log)
        self._persist()

    async def delete(self, stream_name: str, group_name: str) -> None:
        """Remove a group; connected consumers get 'does not exist'."""
        group = self.get(stream_name, group_name)
        del self._groups[(stream_name, group_name)]
        await group.close(deleted=True)
        self._persist()

    def _persist(self) -> None:
        payload = {"entries": [g.definition.to_json() for g in self._groups.values()]}
        event = ProposedEvent(
            event_id=str(uuid.uuid4()),
            event_type=CONFIG_EVENT_TYPE,
            content_type="application/json",
            data=json.dumps(payload).encode("utf8"),
            metadata=b"",
        )
        self._log.append(CONFIG_STREAM, EXPECTED_ANY, [event])
