"""The downstream event stream port: what projections and mirrors read from the store.

Two ways to follow the events the state nodes write:

- **Catch-up subscriptions** (:class:`EventStream`): the consumer keeps its own position.
  Subscribe to one category (``subscribe_category("Lot")``) or the whole store
  (``subscribe_all(filter=...)``), from the start or *after* a position you stored
  (exclusive: the event at that position is not delivered again), then live. Positions
  are the store's global order (EventStoreDB ``$all`` commit positions; the recorder
  stores' notification IDs): strictly increasing, NOT contiguous — never compute one, only
  store what you were given (a position that is not a stored event's is refused with
  :class:`~infrastructure.errors.SubscriptionError`). With
  ``include_checkpoints=True`` the subscription also yields :class:`Checkpoint` items while
  a filter skips events, so a rarely matching projection can still advance its stored
  position (read model = replay up to the tracked position, guarantee 5).
- **Persistent subscriptions** (:class:`PersistentSubscriptions`): the server keeps the
  position of a named *group*; the group's consumers compete for its events (each event
  goes to one consumer), ack them when handled, or nack them (retry, park, skip, stop).
  An event retried ``max_retry_count`` times is parked; ``replay_parked`` sends parked
  events through the group again. This is how read models and hot mirrors are fed
  (the user's design card). Persistent subscriptions are an EventStoreDB server feature
  (the server keeps the group's position, dispatches among its consumers, parks): only
  the EventStoreDB store offers them; SQLite, PostgreSQL and memory offer catch-up
  subscriptions only.

Both hand out :class:`StreamEvent` in the journal's terms: stream IDs without any
namespace prefix, versions from 1, the stored topic and msgpack state (``stored()`` gives
the :class:`~eventsourcing.persistence.StoredEvent` the mapper decodes). Snapshots and the
store's own system events are never delivered.

Adapters: :mod:`infrastructure.persistence.eventstoredb_subscriptions` (both ports) and
:mod:`infrastructure.persistence.recorder_subscriptions` (catch-up, on SQLite, PostgreSQL
and memory); ``open_event_stream(settings)`` picks the catch-up one for any store.
Contract: ``tests/contract/test_subscription_contract.py``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from eventsourcing.persistence import StoredEvent


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One stored event, as a subscription delivers it."""

    stream_id: str
    version: int  # 1 = the stream's first event, as in the journal
    position: int  # place in the store's global order; resume *after* it
    event_id: str
    topic: str
    state: bytes
    recorded_at: datetime | None = None

    @property
    def category(self) -> str:
        """``Lot`` for ``Lot-vase``: the part of the stream ID before the first ``-``."""
        return self.stream_id.partition("-")[0]

    def stored(self) -> StoredEvent:
        """As the journal stores it: decode with ``new_mapper().to_domain_event(...)``."""
        return StoredEvent(self.stream_id, self.version, self.topic, self.state)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Every event up to ``position`` has been considered (delivered or filtered out):
    a consumer that stores ``position`` resumes after it without missing anything."""

    position: int


@dataclass(frozen=True)
class EventFilter:
    """Which events to deliver. Criteria of different kinds must all hold; within one
    kind, any value may match. The empty filter delivers every (non-system) event.

    ``categories``: stream IDs ``<Category>-…``; ``stream_pattern``: a regular expression the
    whole stream ID must match (Python ``re`` syntax; keep to the common subset — it is also
    handed to the server, whose regex engine is .NET's); ``topics``: exact event topics;
    ``topic_prefixes``: topics starting with one of these (e.g. a module ``"domain.auction:"``).
    """

    categories: tuple[str, ...] = ()
    stream_pattern: str | None = None
    topics: tuple[str, ...] = ()
    topic_prefixes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("categories", "topics", "topic_prefixes"):
            value = getattr(self, name)
            if isinstance(value, str):  # ("Lot") is a str, not a tuple: a classic slip
                object.__setattr__(self, name, (value,))
        for category in self.categories:
            if not category or "-" in category:
                raise ValueError(f"category {category!r} must be non-empty and contain no '-'")
        if self.stream_pattern is not None:
            re.compile(self.stream_pattern)

    @property
    def by_stream(self) -> bool:
        return bool(self.categories or self.stream_pattern is not None)

    @property
    def by_topic(self) -> bool:
        return bool(self.topics or self.topic_prefixes)

    def matches(self, stream_id: str, topic: str) -> bool:
        if self.categories and stream_id.partition("-")[0] not in self.categories:
            return False
        if self.stream_pattern is not None and re.fullmatch(self.stream_pattern, stream_id) is None:
            return False
        if self.by_topic and topic not in self.topics and not topic.startswith(tuple(self.topic_prefixes)):
            return False
        return True


EVERYTHING = EventFilter()


class EventSubscription(ABC, Iterator["StreamEvent | Checkpoint"]):
    """A running catch-up subscription: iterate to receive events in position order
    (blocks until the next one is written); ``stop()`` (from any thread) ends the
    iteration. A lost connection is resumed after the last position seen, so a consumer
    sees each event once and in order."""

    def __iter__(self) -> EventSubscription:
        return self

    @abstractmethod
    def __next__(self) -> StreamEvent | Checkpoint: ...

    @abstractmethod
    def stop(self) -> None:
        """End the subscription; a blocked ``next()`` raises StopIteration."""

    def __enter__(self) -> EventSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EventStream(ABC):
    """Port: read and follow the store's events in their global order."""

    @abstractmethod
    def subscribe_all(self, after: int | None = None, filter: EventFilter = EVERYTHING,  # noqa: A002
                      include_checkpoints: bool = False) -> EventSubscription:
        """Every event matching ``filter`` after position ``after`` (None: from the
        start), then live. Raises SubscriptionError (here or at the first ``next()``) if
        ``after`` is not the position of a stored event."""

    def subscribe_category(self, category: str, after: int | None = None,
                           include_checkpoints: bool = False) -> EventSubscription:
        """The events of every entity of ``category``."""
        return self.subscribe_all(after, EventFilter(categories=(category,)), include_checkpoints)

    @abstractmethod
    def read_all(self, after: int | None = None, limit: int = 1000,
                 filter: EventFilter = EVERYTHING) -> list[StreamEvent]:  # noqa: A002
        """Up to ``limit`` stored events after ``after``, no waiting."""

    @abstractmethod
    def head_position(self) -> int | None:
        """Position of the last stored (non-system) event, None for an empty store."""

    def close(self) -> None:
        """Release connections."""


# ---------------------------------------------------------------------- persistent
ConsumerStrategy = Literal["round_robin", "dispatch_to_single", "pinned"]
NackAction = Literal["retry", "park", "skip", "stop"]


@dataclass(frozen=True)
class Source:
    """What a persistent subscription group reads: one stream, or every stream (with a
    filter, e.g. one category). Build with :meth:`all`, :meth:`category`, :meth:`stream`."""

    stream_id: str | None = None
    filter: EventFilter = EVERYTHING

    @classmethod
    def all(cls, filter: EventFilter = EVERYTHING) -> Source:  # noqa: A002
        return cls(None, filter)

    @classmethod
    def category(cls, name: str) -> Source:
        return cls(None, EventFilter(categories=(name,)))

    @classmethod
    def stream(cls, stream_id: str) -> Source:
        return cls(stream_id)


@dataclass(frozen=True)
class GroupSettings:
    """How the server runs a group. Defaults follow the server's own, with the reasons:

    - ``start_from``: "start" so a new read model is built from all history; "end" for
      consumers that only care about new events; an int is a position (inclusive) for
      :meth:`Source.all`, a stream version (inclusive, from 1) for :meth:`Source.stream`.
    - ``strategy``: "round_robin" spreads load over the consumers; "pinned" keeps a stream
      on one consumer (per-entity order for mirrors); "dispatch_to_single" fills one
      consumer first.
    - ``message_timeout_s`` 30: an event not acked in time is retried; long enough for a
      slow MongoDB write, short enough that a hung consumer's events move on.
    - ``max_retry_count`` 10: then the event is parked, so one poison event cannot stall
      the group forever.
    - ``max_subscriber_count`` 0 = unlimited consumers.
    - ``checkpoint_after_s`` 2, ``min/max_checkpoint_count`` 10/1000: the server saves the
      group's position at most every 2 s and every 10..1000 acked events, bounding how much
      is redelivered after a server restart (consumers must be idempotent anyway).
    - ``live_buffer_size`` 500, ``read_batch_size`` 20, ``history_buffer_size`` 500: memory
      the server spends per group while catching up and live. The server requires
      ``read_batch_size < history_buffer_size`` and refuses the create/update otherwise
      (:class:`~infrastructure.errors.SubscriptionError`, nothing changed).
    """

    start_from: Literal["start", "end"] | int = "start"
    strategy: ConsumerStrategy = "round_robin"
    message_timeout_s: float = 30.0
    max_retry_count: int = 10
    max_subscriber_count: int = 0
    checkpoint_after_s: float = 2.0
    min_checkpoint_count: int = 10
    max_checkpoint_count: int = 1000
    live_buffer_size: int = 500
    read_batch_size: int = 20
    history_buffer_size: int = 500


@dataclass(frozen=True)
class Delivery:
    """An event handed to one consumer of a group; ack or nack it through the consumer."""

    event: StreamEvent
    retry_count: int  # 0 the first time, +1 per retry (nack "retry" or message timeout)
    ack_id: str = field(repr=False)


@dataclass(frozen=True)
class GroupInfo:
    """A group as the server reports it."""

    group: str
    source: str  # "$all" or the stream ID
    status: str
    consumers: int
    parked: int  # events parked and not yet replayed
    in_flight: int  # delivered, not yet acked
    strategy: str
    max_retry_count: int
    message_timeout_s: float


class GroupConsumer(ABC, Iterator[Delivery]):
    """One consumer's connection to a group. Iterate for deliveries; ack or nack each.
    Acks are batched by the client and sent within a fraction of a second."""

    def __iter__(self) -> GroupConsumer:
        return self

    @abstractmethod
    def __next__(self) -> Delivery: ...

    @abstractmethod
    def ack(self, delivery: Delivery) -> None: ...

    @abstractmethod
    def nack(self, delivery: Delivery, action: NackAction = "retry") -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> GroupConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PersistentSubscriptions(ABC):
    """Port: server-side consumer groups with acks, retries and parking."""

    @abstractmethod
    def create_group(self, group: str, source: Source, settings: GroupSettings = GroupSettings()) -> None:
        """Raises SubscriptionGroupExists if the name is taken for this source."""

    @abstractmethod
    def update_group(self, group: str, source: Source, settings: GroupSettings) -> None:
        """Change a group's settings; its consumers are dropped and reconnect."""

    @abstractmethod
    def delete_group(self, group: str, source: Source) -> None: ...

    @abstractmethod
    def group_info(self, group: str, source: Source) -> GroupInfo: ...

    @abstractmethod
    def list_groups(self) -> list[GroupInfo]: ...

    @abstractmethod
    def replay_parked(self, group: str, source: Source) -> None:
        """Deliver the group's parked events again (then they are no longer parked)."""

    @abstractmethod
    def consume(self, group: str, source: Source, buffer_size: int = 10) -> GroupConsumer:
        """Join the group as one more consumer (at most ``buffer_size`` unacked events)."""

    def close(self) -> None:
        """Release connections."""

