"""EventStoreDB adapter of the downstream event stream port (:mod:`.subscriptions`).

Catch-up subscriptions are ``$all`` subscriptions (``subscribe_to_all``) with a
server-side filter, so no server projection (``$ce-<Category>``, ``$by_category``) has to
be enabled: a category is the stream-name regex ``^<prefix><Category>-.*$``, topics an
event-type regex, and the default filter leaves out system streams (``$…``) and snapshot
streams (``snapshot-$…``). The server can filter on one dimension only (stream name OR
event type), so every event is checked again here against the whole
:class:`~.subscriptions.EventFilter` (and the namespace prefix) before it is delivered.

Resuming: ``subscribe_to_all(commit_position=p)`` starts *after* p (EventStoreDB's
catch-up subscriptions are exclusive of their start position). A subscription that loses
its connection (server restart, leader change, "consumer too slow") is re-opened after the
last position it delivered or checkpointed, up to ``retries`` times in a row.

Persistent subscriptions map onto the server's own (``$all`` with the same filters, or one
stream). Events a ``$all`` group's server filter lets through but our filter rejects (and
system or snapshot events) are acked on the consumer's behalf and never handed out.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from uuid import UUID

import grpc
from kurrentdbclient import KurrentDBClient, RecordedEvent, exceptions as kdb
from kurrentdbclient.common import handle_rpc_error
from kurrentdbclient.persistent import SubscriptionInfo

from infrastructure.errors import (
    PersistenceError,
    SubscriptionDropped,
    SubscriptionError,
    SubscriptionGroupExists,
    SubscriptionGroupNotFound,
)
from infrastructure.persistence.eventstoredb_journal import (
    SNAPSHOT_STREAM_PREFIX,
    _retryable,
    client_from_env,
    translate,
)
from infrastructure.persistence.subscriptions import (
    EVERYTHING,
    Checkpoint,
    Delivery,
    EventFilter,
    EventStream,
    EventSubscription,
    GroupConsumer,
    GroupInfo,
    GroupSettings,
    NackAction,
    PersistentSubscriptions,
    Source,
    StreamEvent,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

ALL = "$all"
_STRATEGIES = {"round_robin": "RoundRobin", "dispatch_to_single": "DispatchToSingle", "pinned": "Pinned"}
# System streams ($…, e.g. $$metadata, $persistentsubscription-…) and snapshot streams.
_DEFAULT_EXCLUDE = (r"\$.*", re.escape(SNAPSHOT_STREAM_PREFIX) + ".*")


def server_filter(event_filter: EventFilter, prefix: str) -> dict[str, Any]:
    """The part of ``event_filter`` the server can apply (one dimension, as a regex) as
    ``subscribe_to_all``/``create_subscription_to_all`` keyword arguments."""
    ns = re.escape(prefix)
    if event_filter.categories:
        names = "|".join(re.escape(c) for c in event_filter.categories)
        return {"filter_include": [f"(?:{ns}(?:{names})-.*)"], "filter_exclude": (), "filter_by_stream_name": True}
    if event_filter.stream_pattern is not None:
        return {"filter_include": [f"(?:{ns}(?:{event_filter.stream_pattern}))"], "filter_exclude": (),
                "filter_by_stream_name": True}
    if event_filter.by_topic:
        alternatives = [re.escape(t) for t in event_filter.topics]
        alternatives += [re.escape(p) + ".*" for p in event_filter.topic_prefixes]
        return {"filter_include": [f"(?:{'|'.join(alternatives)})"], "filter_exclude": (), "filter_by_stream_name": False}
    if prefix:
        return {"filter_include": [f"(?:{ns}.*)"], "filter_exclude": (), "filter_by_stream_name": True}
    return {"filter_include": (), "filter_exclude": _DEFAULT_EXCLUDE, "filter_by_stream_name": True}


class EventStoreDBSubscriptions(EventStream, PersistentSubscriptions):
    """Both subscription ports on one KurrentDB client. See the module docstring.

    ``env`` is the eventsourcing environment (``Settings.journal_env()``); ``stream_prefix``
    the journal's namespace (``Settings.eventstoredb_stream_prefix``): only streams under it
    are seen, and their IDs come out without it."""

    def __init__(self, env: Mapping[str, str], *, deadline_s: float = 5.0, retries: int = 2,
                 stream_prefix: str = "", retry_backoff_s: float = 0.2) -> None:
        self.client: KurrentDBClient = client_from_env(env)
        self.deadline_s = deadline_s
        self.retries = retries
        self.stream_prefix = stream_prefix
        self.retry_backoff_s = retry_backoff_s

    # ------------------------------------------------------------------ events
    def to_stream_event(self, recorded: RecordedEvent, event_filter: EventFilter = EVERYTHING) -> StreamEvent | None:
        """Our view of a recorded event, or None when it is not for us (system,
        snapshot, other namespace, or rejected by ``event_filter``)."""
        name, topic = recorded.stream_name, recorded.type
        if name.startswith(("$", SNAPSHOT_STREAM_PREFIX)) or topic.startswith("$"):
            return None
        if not name.startswith(self.stream_prefix):
            return None
        stream_id = name[len(self.stream_prefix):]
        if not event_filter.matches(stream_id, topic):
            return None
        return StreamEvent(stream_id=stream_id, version=recorded.stream_position + 1,
                           position=recorded.commit_position, event_id=str(recorded.id), topic=topic,
                           state=recorded.data, recorded_at=recorded.recorded_at)

    def _call(self, call: Callable[[], T], what: str) -> T:
        """Run a call that is safe to repeat, retrying transient failures, with typed errors."""
        error: PersistenceError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.retry_backoff_s)
            try:
                return call()
            except (kdb.KurrentDBClientError, grpc.RpcError, ValueError) as exc:
                cause = handle_rpc_error(exc) if isinstance(exc, grpc.RpcError) else exc
                error = _subscription_error(cause, what)
                if not _retryable(error):
                    raise error from cause
        assert error is not None
        raise error

    # ------------------------------------------------------------------ catch-up
    def subscribe_all(self, after: int | None = None, filter: EventFilter = EVERYTHING,  # noqa: A002
                      include_checkpoints: bool = False) -> EventSubscription:
        return _CatchUp(self, after, filter, include_checkpoints)

    def read_all(self, after: int | None = None, limit: int = 1000,
                 filter: EventFilter = EVERYTHING) -> list[StreamEvent]:  # noqa: A002
        out: list[StreamEvent] = []
        position = after
        while len(out) < limit:
            page = self._call(lambda: list(self.client.read_all(
                commit_position=position, limit=limit + 1, timeout=self.deadline_s,
                **server_filter(filter, self.stream_prefix))), "read of $all")
            if position is not None and page and page[0].commit_position == position:
                page = page[1:]  # reads of $all start AT the position; ours are exclusive
            if not page:
                break
            out.extend(e for e in map(lambda r: self.to_stream_event(r, filter), page) if e is not None)
            position = page[-1].commit_position
        return out[:limit]

    def head_position(self) -> int | None:
        found = self._call(lambda: list(self.client.read_all(
            backwards=True, limit=1, timeout=self.deadline_s, **server_filter(EVERYTHING, self.stream_prefix))),
            "read of $all")
        return found[0].commit_position if found else None

    # ------------------------------------------------------------------ persistent
    def _group_kwargs(self, settings: GroupSettings) -> dict[str, Any]:
        if settings.strategy not in _STRATEGIES:
            raise SubscriptionError(f"unknown consumer strategy {settings.strategy!r}")
        return {
            "consumer_strategy": _STRATEGIES[settings.strategy],
            "message_timeout": settings.message_timeout_s,
            "max_retry_count": settings.max_retry_count,
            "max_subscriber_count": settings.max_subscriber_count,
            "checkpoint_after": settings.checkpoint_after_s,
            "min_checkpoint_count": settings.min_checkpoint_count,
            "max_checkpoint_count": settings.max_checkpoint_count,
            "live_buffer_size": settings.live_buffer_size,
            "read_batch_size": settings.read_batch_size,
            "history_buffer_size": settings.history_buffer_size,
            "timeout": self.deadline_s,
        }

    def _start(self, source: Source, settings: GroupSettings) -> dict[str, Any]:
        if settings.start_from == "end":
            return {"from_end": True}
        if settings.start_from == "start":
            return {}
        if not isinstance(settings.start_from, int):
            raise SubscriptionError(f"start_from must be 'start', 'end' or an int, not {settings.start_from!r}")
        if source.stream_id is None:
            return {"commit_position": settings.start_from}
        return {"stream_position": max(0, settings.start_from - 1)}

    def create_group(self, group: str, source: Source, settings: GroupSettings = GroupSettings()) -> None:  # noqa: B008 - frozen value
        kwargs = {**self._group_kwargs(settings), **self._start(source, settings)}
        if source.stream_id is None:
            self._call(lambda: self.client.create_subscription_to_all(
                group, **kwargs, **server_filter(source.filter, self.stream_prefix)), f"create group {group}")
        else:
            name = self.stream_prefix + source.stream_id
            self._call(lambda: self.client.create_subscription_to_stream(group, name, **kwargs), f"create group {group}")

    def update_group(self, group: str, source: Source, settings: GroupSettings) -> None:
        """The source's filter cannot change (the server keeps the one given at creation)."""
        kwargs = {**self._group_kwargs(settings), **self._start(source, settings)}
        kwargs.setdefault("from_end", settings.start_from == "end")
        if source.stream_id is None:
            self._call(lambda: self.client.update_subscription_to_all(group, **kwargs), f"update group {group}")
        else:
            name = self.stream_prefix + source.stream_id
            self._call(lambda: self.client.update_subscription_to_stream(group, name, **kwargs), f"update group {group}")

    def delete_group(self, group: str, source: Source) -> None:
        self._call(lambda: self.client.delete_subscription(group, self._stream_arg(source), timeout=self.deadline_s),
                   f"delete group {group}")

    def group_info(self, group: str, source: Source) -> GroupInfo:
        info = self._call(lambda: self.client.get_subscription_info(
            group, self._stream_arg(source), timeout=self.deadline_s), f"info of group {group}")
        return self._info(info)

    def list_groups(self) -> list[GroupInfo]:
        infos = self._call(lambda: self.client.list_subscriptions(timeout=self.deadline_s), "list groups")
        ours = [i for i in infos if i.event_source == ALL or i.event_source.startswith(self.stream_prefix)]
        return [self._info(i) for i in ours]

    def replay_parked(self, group: str, source: Source) -> None:
        self._call(lambda: self.client.replay_parked_events(group, self._stream_arg(source), timeout=self.deadline_s),
                   f"replay parked events of group {group}")

    def consume(self, group: str, source: Source, buffer_size: int = 10) -> GroupConsumer:
        return _Consumer(self, group, source, buffer_size)

    def _stream_arg(self, source: Source) -> str | None:
        return None if source.stream_id is None else self.stream_prefix + source.stream_id

    def _info(self, info: SubscriptionInfo) -> GroupInfo:
        source = info.event_source
        if source != ALL and source.startswith(self.stream_prefix):
            source = source[len(self.stream_prefix):]
        strategy = {v: k for k, v in _STRATEGIES.items()}.get(info.consumer_strategy, info.consumer_strategy)
        return GroupInfo(group=info.group_name, source=source, status=info.status, consumers=len(info.connections),
                         parked=info.parked_message_count, in_flight=info.total_in_flight_messages,
                         strategy=strategy, max_retry_count=info.max_retry_count,
                         message_timeout_s=info.message_timeout)

    def close(self) -> None:
        self.client.close()


def _subscription_error(exc: BaseException, what: str) -> PersistenceError:
    detail = f"{what}: {type(exc).__name__}: {exc}"
    error: PersistenceError
    if isinstance(exc, kdb.AlreadyExistsError):
        error = SubscriptionGroupExists(detail)
    elif isinstance(exc, kdb.NotFoundError):
        error = SubscriptionGroupNotFound(detail)
    elif isinstance(exc, kdb.MaximumSubscriptionsReachedError):
        error = SubscriptionError(f"{detail} (the group has its maximum number of consumers)")
    elif isinstance(exc, kdb.InvalidCommitPositionError | kdb.InvalidArgumentError) or (
            isinstance(exc, kdb.GrpcError) and "invalid position" in str(exc).lower()):
        error = SubscriptionError(f"{detail} (not the position of an event: store only positions you were given)")
    elif isinstance(exc, kdb.InternalError) and "failed: '" in str(exc):
        # RpcExceptions.PersistentSubscriptionFailed: create/update refused (unknown
        # strategy, read batch not smaller than the history buffer, bad start); nothing changed.
        error = SubscriptionError(f"{detail} (the server refused the group's settings)")
    elif isinstance(exc, kdb.ConsumerTooSlowError):
        error = SubscriptionDropped(detail)
        error.transient = True  # re-subscribing after the last position is safe
        return error
    else:
        return translate(exc, what)
    error.__cause__ = exc
    return error


class _CatchUp(EventSubscription):
    def __init__(self, owner: EventStoreDBSubscriptions, after: int | None, event_filter: EventFilter,
                 include_checkpoints: bool) -> None:
        self._owner = owner
        self._filter = event_filter
        self._include_checkpoints = include_checkpoints
        self._last = after
        self._stopped = threading.Event()
        self._subscription: Any = self._open()

    def _open(self) -> Any:
        owner = self._owner
        return owner._call(lambda: owner.client.subscribe_to_all(  # noqa: SLF001 - same module family
            commit_position=self._last, include_checkpoints=True,
            **server_filter(self._filter, owner.stream_prefix)), "subscription to $all")

    def __next__(self) -> StreamEvent | Checkpoint:
        failures = 0
        while True:
            if self._stopped.is_set():
                raise StopIteration
            try:
                recorded = next(self._subscription)
            except StopIteration:
                if self._stopped.is_set():
                    raise
                error: PersistenceError = SubscriptionDropped("the server ended the subscription")
                error.transient = True
            except Exception as exc:
                if self._stopped.is_set():
                    raise StopIteration from None
                cause = handle_rpc_error(exc) if isinstance(exc, grpc.RpcError) else exc
                error = _subscription_error(cause, "subscription to $all")
            else:
                failures = 0
                if recorded.is_checkpoint:
                    if self._last is None or recorded.commit_position > self._last:
                        self._last = recorded.commit_position
                        if self._include_checkpoints:
                            return Checkpoint(recorded.commit_position)
                    continue
                self._last = recorded.commit_position
                event = self._owner.to_stream_event(recorded, self._filter)
                if event is not None:
                    return event
                continue
            # The subscription failed: re-open after the last position, if worth it.
            if not getattr(error, "transient", False) or failures >= self._owner.retries:
                self.stop()
                raise error
            failures += 1
            log.info("catch-up subscription lost (%s); resuming after %s", error, self._last)
            time.sleep(self._owner.retry_backoff_s)
            try:
                self._subscription = self._open()
            except PersistenceError as reopen_error:
                if failures >= self._owner.retries or not getattr(reopen_error, "transient", False):
                    raise
                continue

    def stop(self) -> None:
        self._stopped.set()
        try:
            self._subscription.stop()
        except Exception:  # already stopped or the channel is gone
            pass


class _Consumer(GroupConsumer):
    def __init__(self, owner: EventStoreDBSubscriptions, group: str, source: Source, buffer_size: int) -> None:
        self._owner = owner
        self._group = group
        self._source = source
        self._stopped = threading.Event()
        client = owner.client
        if source.stream_id is None:
            opener = lambda: client.read_subscription_to_all(  # noqa: E731
                group, event_buffer_size=buffer_size, max_ack_batch_size=min(50, buffer_size), max_ack_delay=0.05)
        else:
            name = owner.stream_prefix + source.stream_id
            opener = lambda: client.read_subscription_to_stream(  # noqa: E731
                group, name, event_buffer_size=buffer_size, max_ack_batch_size=min(50, buffer_size), max_ack_delay=0.05)
        self._subscription: Any = owner._call(opener, f"join group {group}")  # noqa: SLF001

    def __next__(self) -> Delivery:
        while True:
            if self._stopped.is_set():
                raise StopIteration
            try:
                recorded = next(self._subscription)
            except StopIteration:
                if self._stopped.is_set():
                    raise
                raise SubscriptionDropped(f"the server ended this consumer of group {self._group}") from None
            except Exception as exc:
                if self._stopped.is_set():
                    raise StopIteration from None
                cause = handle_rpc_error(exc) if isinstance(exc, grpc.RpcError) else exc
                raise _subscription_error(cause, f"consumer of group {self._group}") from cause
            event = self._owner.to_stream_event(recorded, self._source.filter)
            if event is None:  # not for us: settle it so the group moves on
                self._subscription.ack(recorded.ack_id)
                continue
            return Delivery(event=event, retry_count=recorded.retry_count or 0, ack_id=str(recorded.ack_id))

    def ack(self, delivery: Delivery) -> None:
        self._subscription.ack(UUID(delivery.ack_id))

    def nack(self, delivery: Delivery, action: NackAction = "retry") -> None:
        if action not in ("retry", "park", "skip", "stop"):
            raise SubscriptionError(f"unknown nack action {action!r}")
        self._subscription.nack(UUID(delivery.ack_id), action)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        try:
            self._subscription.stop()
        except Exception:
            pass
