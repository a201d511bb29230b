"""``event_store.client.persistent_subscriptions.PersistentSubscriptions`` gRPC glue.

Translates requests into :mod:`.persistent_groups` operations and emulator
errors into the status codes the client maps to its exceptions:
``NOT_FOUND`` → ``NotFoundError``, ``ALREADY_EXISTS`` → ``AlreadyExistsError``,
``FAILED_PRECONDITION "Maximum subscriptions reached…"`` →
``MaximumSubscriptionsReachedError``, ``INTERNAL "… failed: '<reason>'"`` (settings
refused on create/update) → ``InternalError``, ``CANCELLED`` for dropped consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, NoReturn, cast

import grpc
import grpc.aio
from kurrentdbclient.protos.v1 import persistent_pb2, persistent_pb2_grpc, shared_pb2

from .convert import stream_name_of, uuid_text
from .errors import (
    EmulatorError,
    MaximumSubscribersReached,
    PersistentSubscriptionExists,
    PersistentSubscriptionFailed,
    PersistentSubscriptionNotFound,
    SubscriptionDropped,
)
from .filters import EventFilter
from .persistent_groups import (
    ALL_STREAM,
    END,
    START,
    Consumer,
    GroupDefinition,
    GroupSettings,
    NackAction,
    PersistentSubscriptionRegistry,
    SubscriptionGroup,
)

_NACK_ACTIONS: dict[int, NackAction] = {
    persistent_pb2.ReadReq.Nack.Unknown: "unknown",
    persistent_pb2.ReadReq.Nack.Park: "park",
    persistent_pb2.ReadReq.Nack.Retry: "retry",
    persistent_pb2.ReadReq.Nack.Skip: "skip",
    persistent_pb2.ReadReq.Nack.Stop: "stop",
}

_STRATEGY_NAMES = {
    persistent_pb2.UpdateReq.DispatchToSingle: "DispatchToSingle",
    persistent_pb2.UpdateReq.RoundRobin: "RoundRobin",
    persistent_pb2.UpdateReq.Pinned: "Pinned",
}

_TICKS_PER_MS = 10_000


async def abort_for(context: grpc.aio.ServicerContext, error: EmulatorError) -> NoReturn:
    """Fail the call with the status the real server uses for ``error``."""
    if isinstance(error, PersistentSubscriptionFailed):
        await context.abort(
            grpc.StatusCode.INTERNAL,
            str(error),
            trailing_metadata=(
                ("exception", "persistent-subscription-failed"),
                ("stream-name", error.stream_name),
                ("group-name", error.group_name),
                ("reason", error.reason),
            ),
        )
        raise AssertionError("unreachable")
    if isinstance(error, PersistentSubscriptionNotFound):
        code = grpc.StatusCode.NOT_FOUND
    elif isinstance(error, PersistentSubscriptionExists):
        code = grpc.StatusCode.ALREADY_EXISTS
    elif isinstance(error, MaximumSubscribersReached):
        code = grpc.StatusCode.FAILED_PRECONDITION
    elif isinstance(error, SubscriptionDropped):
        code = grpc.StatusCode.NOT_FOUND if error.deleted else grpc.StatusCode.CANCELLED
    else:
        code = grpc.StatusCode.UNKNOWN
    await context.abort(code, str(error))
    raise AssertionError("unreachable")


def _settings_from(settings: Any, *, strategy: str) -> GroupSettings:
    """Read Create/Update ``Settings`` (ms fields win over the legacy tick fields)."""
    if settings.WhichOneof("message_timeout") == "message_timeout_ticks":
        message_timeout_ms = settings.message_timeout_ticks // _TICKS_PER_MS
    else:
        message_timeout_ms = settings.message_timeout_ms
    if settings.WhichOneof("checkpoint_after") == "checkpoint_after_ticks":
        checkpoint_after_ms = settings.checkpoint_after_ticks // _TICKS_PER_MS
    else:
        checkpoint_after_ms = settings.checkpoint_after_ms
    return GroupSettings(
        resolve_links=settings.resolve_links,
        extra_statistics=settings.extra_statistics,
        max_retry_count=settings.max_retry_count,
        min_checkpoint_count=settings.min_checkpoint_count,
        max_checkpoint_count=settings.max_checkpoint_count,
        max_subscriber_count=settings.max_subscriber_count,
        live_buffer_size=settings.live_buffer_size,
        read_batch_size=settings.read_batch_size,
        history_buffer_size=settings.history_buffer_size,
        message_timeout_ms=message_timeout_ms,
        checkpoint_after_ms=checkpoint_after_ms,
        consumer_strategy=strategy,
    )


def _start_from_stream(stream_options: Any) -> int:
    which = stream_options.WhichOneof("revision_option")
    if which == "revision":
        return int(stream_options.revision)
    return END if which == "end" else START


def _start_from_all(all_options: Any) -> int:
    which = all_options.WhichOneof("all_option")
    if which == "position":
        return int(all_options.position.commit_position)
    return END if which == "end" else START


def _all_filter(all_options: persistent_pb2.CreateReq.AllOptions) -> EventFilter | None:
    if all_options.WhichOneof("filter_option") != "filter":
        return None
    filter_options = all_options.filter
    by_stream_name = filter_options.WhichOneof("filter") == "stream_identifier"
    expression = (
        filter_options.stream_identifier if by_stream_name else filter_options.event_type
    )
    return EventFilter.build(
        by_stream_name=by_stream_name, regex=expression.regex, prefixes=list(expression.prefix)
    )


def _stream_of(options: Any, oneof: str = "stream_option") -> str:
    """``$all`` or the stream name of a request's stream option."""
    if options.WhichOneof(oneof) == "all":
        return ALL_STREAM
    return stream_name_of(options.stream_identifier)


class PersistentSubscriptionsService(persistent_pb2_grpc.PersistentSubscriptionsServicer):
    """Implements the persistent subscription RPCs over a registry of groups."""

    def __init__(self, registry: PersistentSubscriptionRegistry) -> None:
        self._registry = registry

    # --------------------------------------------------------------- management
    async def Create(  # noqa: N802 - gRPC method name
        self, request: persistent_pb2.CreateReq, context: grpc.aio.ServicerContext
    ) -> persistent_pb2.CreateResp:
        """Define a new group on a stream or ``$all``."""
        options = request.options
        settings = options.settings
        strategy = settings.consumer_strategy or _STRATEGY_NAMES.get(
            settings.named_consumer_strategy, "RoundRobin"
        )
        which = options.WhichOneof("stream_option")
        event_filter = None
        if which == "all":
            stream_name = ALL_STREAM
            start_from = _start_from_all(options.all)
            event_filter = _all_filter(options.all)
        elif which == "stream":
            stream_name = stream_name_of(options.stream.stream_identifier)
            start_from = _start_from_stream(options.stream)
        else:  # pre-20.10 clients: deprecated stream_identifier + settings.revision
            stream_name = stream_name_of(options.stream_identifier)
            start_from = int(settings.revision)
        definition = GroupDefinition(
            stream_name=stream_name,
            group_name=options.group_name,
            start_from=start_from,
            settings=_settings_from(settings, strategy=strategy),
            event_filter=event_filter,
        )
        try:
            self._registry.create(definition)
        except EmulatorError as error:
            await abort_for(context, error)
        return persistent_pb2.CreateResp()

    async def Update(  # noqa: N802 - gRPC method name
        self, request: persistent_pb2.UpdateReq, context: grpc.aio.ServicerContext
    ) -> persistent_pb2.UpdateResp:
        """Redefine a group (its filter is kept: Update cannot change it)."""
        options = request.options
        strategy = _STRATEGY_NAMES.get(options.settings.named_consumer_strategy, "RoundRobin")
        which = options.WhichOneof("stream_option")
        if which == "all":
            stream_name = ALL_STREAM
            start_from = _start_from_all(options.all)
        elif which == "stream":
            stream_name = stream_name_of(options.stream.stream_identifier)
            start_from = _start_from_stream(options.stream)
        else:
            stream_name = stream_name_of(options.stream_identifier)
            start_from = int(options.settings.revision)
        definition = GroupDefinition(
            stream_name=stream_name,
            group_name=options.group_name,
            start_from=start_from,
            settings=_settings_from(options.settings, strategy=strategy),
        )
        try:
            await self._registry.update(definition)
        except EmulatorError as error:
            await abort_for(context, error)
        return persistent_pb2.UpdateResp()

    async def Delete(  # noqa: N802 - gRPC method name
        self, request: persistent_pb2.DeleteReq, context: grpc.aio.ServicerContext
    ) -> persistent_pb2.DeleteResp:
        """Remove a group and drop its consumers."""
        try:
            await self._registry.delete(_stream_of(request.options), request.options.group_name)
        except EmulatorError as error:
            await abort_for(context, error)
        return persistent_pb2.DeleteResp()

    async def GetInfo(  # noqa: N802 - gRPC method name
        self, request: persistent_pb2.GetInfoReq, context: grpc.aio.ServicerContext
    ) -> persistent_pb2.GetInfoResp:
        """Statistics and settings of one group."""
        try:
            group = self._registry.get(_stream_of(request.options), request.options.group_name)
        except EmulatorError as error:
            await abort_for(context, error)
        return persistent_pb2.GetInfoResp(subscription_info=group.info())

    async def List(  # noqa: N802 - gRPC method name
        self, request: persistent_pb2.ListReq, context: grpc.aio.ServicerContext
    ) -> persistent_pb2.ListResp:
        """All groups, or the groups of one stream (``NOT_FOUND`` when it has none)."""
        options = request.options
        stream_name: str | None = None
        if options.WhichOneof("list_option") == "list_for_stream":
            stream_option = options.list_for_stream
            if stream_option.WhichOneof("stream_option") == "all":
                stream_name = ALL_STREAM
            else:
                stream_name = stream_name_of(stream_option.stream)
        groups = self._registry.list(stream_name)
        if stream_name is not None and not groups:
            await abort_for(context, PersistentSubscriptionNotFound(stream_name, ""))
        return persistent_pb2.ListResp(subscriptions=[g.info() for g in groups])

    async def ReplayParked(  # noqa: N802 - gRPC method name
        self, request: persistent_pb2.ReplayParkedReq, context: grpc.aio.ServicerContext
    ) -> persistent_pb2.ReplayParkedResp:
        """Redeliver parked messages of a group."""
        try:
            group = self._registry.get(_stream_of(request.options), request.options.group_name)
        except EmulatorError as error:
            await abort_for(context, error)
        group.replay_parked()
        return persistent_pb2.ReplayParkedResp()

    async def RestartSubsystem(  # noqa: N802 - gRPC method name
        self, request: shared_pb2.Empty, context: grpc.aio.ServicerContext
    ) -> shared_pb2.Empty:
        """Accepted and ignored: there is no subsystem to restart."""
        return shared_pb2.Empty()

    # --------------------------------------------------------------------- Read
    async def Read(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[persistent_pb2.ReadReq],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[persistent_pb2.ReadResp]:
        """A consumer connection: options first, then acks/nacks while events flow out."""
        first = await anext(aiter(request_iterator))
        options = first.options
        stream_name = _stream_of(options)
        connection_name = dict(context.invocation_metadata() or ()).get("connection-name", "")
        try:
            group = self._registry.get(stream_name, options.group_name)
            consumer = group.connect(
                buffer_size=options.buffer_size or 10,
                connection_name=str(connection_name),
                peer=context.peer() or "",
            )
        except EmulatorError as error:
            await abort_for(context, error)
        response = persistent_pb2.ReadResp()
        response.subscription_confirmation.subscription_id = group.subscription_id
        yield response
        acks = asyncio.create_task(self._pump_acks(request_iterator, group, consumer))
        try:
            while True:
                item = await consumer.queue.get()
                if isinstance(item, EmulatorError):
                    await abort_for(context, item)
                yield cast(persistent_pb2.ReadResp, item)
        finally:
            acks.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await acks
            group.disconnect(consumer)

    @staticmethod
    async def _pump_acks(
        request_iterator: AsyncIterator[persistent_pb2.ReadReq],
        group: SubscriptionGroup,
        consumer: Consumer,
    ) -> None:
        """Apply acks/nacks as they arrive; ends quietly when the client half-closes."""
        async for request in request_iterator:
            which = request.WhichOneof("content")
            if which == "ack":
                group.ack([uuid_text(i) for i in request.ack.ids])
            elif which == "nack":
                action = _NACK_ACTIONS.get(request.nack.action, "unknown")
                group.nack([uuid_text(i) for i in request.nack.ids], action, consumer)
