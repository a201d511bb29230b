"""``event_store.client.streams.Streams``: Append, BatchAppend, Read, Delete, Tombstone.

Error shapes copy the real server (KurrentDB ``Streams.*.cs`` / ``RpcExceptions``)
because ``kurrentdbclient`` decides which exception to raise from them:

* Append answers a wrong expected version *in the response body*
  (``wrong_expected_version``), BatchAppend inside ``error.details`` as a packed
  ``WrongExpectedVersion``/``StreamDeleted``;
* Delete/Tombstone fail with ``FAILED_PRECONDITION`` and the text
  ``Delete failed due to WrongExpectedVersion. Stream: …, Expected version: …,
  Actual version: …`` which the client parses;
* reading or writing a tombstoned stream fails with ``FAILED_PRECONDITION``
  ``Event stream '<name>' is deleted.``;
* reading ``$all`` from a position inside a record fails with ``UNKNOWN``
  ``Unexpected FilteredReadAllResult: InvalidPosition`` (or ``ReadAllResult``
  when unfiltered), subscribing from one with ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import grpc
import grpc.aio
from google.protobuf import empty_pb2
from kurrentdbclient.protos.google.rpc import code_pb2
from kurrentdbclient.protos.v1 import shared_pb2, status_pb2, streams_pb2, streams_pb2_grpc

from .convert import (
    expected_from_oneof,
    identifier,
    pack_any,
    proposed_event,
    stream_name_of,
    streams_read_event,
    uuid_text,
)
from .errors import InvalidPosition, StreamDeleted, WrongExpectedVersion
from .filters import EventFilter
from .store import (
    EXPECTED_ANY,
    EXPECTED_NO_STREAM,
    EXPECTED_STREAM_EXISTS,
    EventLog,
    ProposedEvent,
    WriteResult,
)

# Page size used when streaming catch-up reads: bounds work done between awaits.
_PAGE = 512
# EventStoreDB's default filtered-read search window when the client sends none.
_DEFAULT_WINDOW = 32

ReadOptions = streams_pb2.ReadReq.Options


def _deleted_metadata(stream_name: str) -> tuple[tuple[str, str], ...]:
    return (("exception", "stream-deleted"), ("stream-name", stream_name))


async def abort_stream_deleted(context: grpc.aio.ServicerContext, stream_name: str) -> None:
    """Fail the call exactly like ``RpcExceptions.StreamDeleted``."""
    await context.abort(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"Event stream '{stream_name}' is deleted.",
        trailing_metadata=_deleted_metadata(stream_name),
    )


def build_read_filter(options: ReadOptions) -> EventFilter | None:
    """The ``$all`` filter of a read request, or ``None`` for ``no_filter``."""
    if options.WhichOneof("filter_option") != "filter":
        return None
    filter_options = options.filter
    by_stream_name = filter_options.WhichOneof("filter") == "stream_identifier"
    expression = (
        filter_options.stream_identifier if by_stream_name else filter_options.event_type
    )
    return EventFilter.build(
        by_stream_name=by_stream_name,
        regex=expression.regex,
        prefixes=list(expression.prefix),
    )


class StreamsService(streams_pb2_grpc.StreamsServicer):
    """Implements the streams RPCs over an :class:`EventLog`."""

    def __init__(self, log: EventLog) -> None:
        self._log = log

    # ----------------------------------------------------------------- Append
    async def Append(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[streams_pb2.AppendReq],
        context: grpc.aio.ServicerContext,
    ) -> streams_pb2.AppendResp:
        """Client-streaming append: one ``options`` message then proposed messages."""
        options: streams_pb2.AppendReq.Options | None = None
        events: list[ProposedEvent] = []
        async for request in request_iterator:
            if request.WhichOneof("content") == "options":
                options = request.options
            else:
                events.append(proposed_event(request.proposed_message))
        if options is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Append without options")
            raise AssertionError("unreachable")
        stream_name = stream_name_of(options.stream_identifier)
        expected = expected_from_oneof(options, "expected_stream_revision", "revision")
        response = streams_pb2.AppendResp()
        try:
            result = self._log.append(stream_name, expected, events)
        except StreamDeleted:
            await abort_stream_deleted(context, stream_name)
            raise
        except WrongExpectedVersion as error:
            self._fill_append_wrong_version(response.wrong_expected_version, error)
            return response
        success = response.success
        if result.last_revision < 0:
            success.no_stream.SetInParent()
        else:
            success.current_revision = result.last_revision
        if result.position is None:
            success.no_position.SetInParent()
        else:
            success.position.commit_position = result.position
            success.position.prepare_position = result.position
        return response

    @staticmethod
    def _fill_append_wrong_version(
        wev: streams_pb2.AppendResp.WrongExpectedVersion, error: WrongExpectedVersion
    ) -> None:
        if error.current < 0:
            wev.current_no_stream.SetInParent()
            wev.no_stream_20_6_0.SetInParent()
        else:
            wev.current_revision = error.current
            wev.current_revision_20_6_0 = error.current
        if error.expected == EXPECTED_ANY:
            wev.expected_any.SetInParent()
            wev.any_20_6_0.SetInParent()
        elif error.expected == EXPECTED_STREAM_EXISTS:
            wev.expected_stream_exists.SetInParent()
            wev.stream_exists_20_6_0.SetInParent()
        elif error.expected == EXPECTED_NO_STREAM:
            wev.expected_no_stream.SetInParent()
            wev.expected_revision_20_6_0 = 2**64 - 1
        else:
            wev.expected_revision = error.expected
            wev.expected_revision_20_6_0 = error.expected

    # ------------------------------------------------------------ BatchAppend
    async def BatchAppend(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[streams_pb2.BatchAppendReq],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[streams_pb2.BatchAppendResp]:
        """Bidirectional batch append; each ``is_final`` request is one atomic write."""
        pending: dict[str, tuple[streams_pb2.BatchAppendReq.Options, list[ProposedEvent]]] = {}
        async for request in request_iterator:
            correlation = uuid_text(request.correlation_id)
            if request.HasField("options"):
                pending.setdefault(correlation, (request.options, []))
            entry = pending.get(correlation)
            if entry is None:
                continue
            entry[1].extend(proposed_event(m) for m in request.proposed_messages)
            if not request.is_final:
                continue
            del pending[correlation]
            yield self._batch_append_one(request.correlation_id, *entry)

    def _batch_append_one(
        self,
        correlation_id: shared_pb2.UUID,
        options: streams_pb2.BatchAppendReq.Options,
        events: Sequence[ProposedEvent],
    ) -> streams_pb2.BatchAppendResp:
        stream_name = stream_name_of(options.stream_identifier)
        expected = expected_from_oneof(options, "expected_stream_position", "stream_position")
        response = streams_pb2.BatchAppendResp()
        response.correlation_id.CopyFrom(correlation_id)
        response.stream_identifier.CopyFrom(identifier(stream_name))
        try:
            result = self._log.append(stream_name, expected, events)
        except StreamDeleted:
            response.error.CopyFrom(
                status_pb2.Status(
                    code=code_pb2.FAILED_PRECONDITION,
                    message=f"Event stream '{stream_name}' is deleted.",
                    details=pack_any(
                        shared_pb2.StreamDeleted(stream_identifier=identifier(stream_name))
                    ),
                )
            )
            return response
        except WrongExpectedVersion as error:
            response.error.CopyFrom(self._batch_wrong_version_status(error))
            return response
        self._fill_batch_success(response.success, result)
        return response

    @staticmethod
    def _fill_batch_success(
        success: streams_pb2.BatchAppendResp.Success, result: WriteResult
    ) -> None:
        if result.last_revision < 0:
            success.no_stream.SetInParent()
        else:
            success.current_revision = result.last_revision
        if result.position is None:
            success.no_position.SetInParent()
        else:
            success.position.commit_position = result.position
            success.position.prepare_position = result.position

    @staticmethod
    def _batch_wrong_version_status(error: WrongExpectedVersion) -> status_pb2.Status:
        detail = shared_pb2.WrongExpectedVersion()
        if error.current < 0:
            detail.current_no_stream.CopyFrom(empty_pb2.Empty())
        else:
            detail.current_stream_revision = error.current
        if error.expected == EXPECTED_ANY:
            detail.expected_any.CopyFrom(empty_pb2.Empty())
        elif error.expected == EXPECTED_STREAM_EXISTS:
            detail.expected_stream_exists.CopyFrom(empty_pb2.Empty())
        elif error.expected == EXPECTED_NO_STREAM:
            detail.expected_no_stream.CopyFrom(empty_pb2.Empty())
        else:
            detail.expected_stream_position = error.expected
        return status_pb2.Status(
            code=code_pb2.FAILED_PRECONDITION,
            message="WrongExpectedVersion",
            details=pack_any(detail),
        )

    # ----------------------------------------------------------------- Delete
    async def Delete(  # noqa: N802 - gRPC method name
        self, request: streams_pb2.DeleteReq, context: grpc.aio.ServicerContext
    ) -> streams_pb2.DeleteResp:
        """Soft delete (``$tb`` metadata); old events stay in ``$all``."""
        options = request.options
        stream_name = stream_name_of(options.stream_identifier)
        expected = expected_from_oneof(options, "expected_stream_revision", "revision")
        try:
            position = self._log.soft_delete(stream_name, expected)
        except StreamDeleted:
            await abort_stream_deleted(context, stream_name)
            raise
        except WrongExpectedVersion as error:
            await self._abort_delete_wrong_version(context, error)
            raise
        response = streams_pb2.DeleteResp()
        response.position.commit_position = position
        response.position.prepare_position = position
        return response

    async def Tombstone(  # noqa: N802 - gRPC method name
        self, request: streams_pb2.TombstoneReq, context: grpc.aio.ServicerContext
    ) -> streams_pb2.TombstoneResp:
        """Hard delete: the stream name can never be read or written again."""
        options = request.options
        stream_name = stream_name_of(options.stream_identifier)
        expected = expected_from_oneof(options, "expected_stream_revision", "revision")
        try:
            position = self._log.tombstone(stream_name, expected)
        except StreamDeleted:
            await abort_stream_deleted(context, stream_name)
            raise
        except WrongExpectedVersion as error:
            await self._abort_delete_wrong_version(context, error)
            raise
        response = streams_pb2.TombstoneResp()
        response.position.commit_position = position
        response.position.prepare_position = position
        return response

    @staticmethod
    async def _abort_delete_wrong_version(
        context: grpc.aio.ServicerContext, error: WrongExpectedVersion
    ) -> None:
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            "Delete failed due to WrongExpectedVersion."
            f" Stream: {error.stream_name},"
            f" Expected version: {error.expected},"
            f" Actual version: {error.current}",
            trailing_metadata=(
                ("exception", "wrong-expected-version"),
                ("stream-name", error.stream_name),
                ("expected-version", str(error.expected)),
                ("actual-version", str(error.current)),
            ),
        )

    # ------------------------------------------------------------------- Read
    async def Read(  # noqa: N802 - gRPC method name
        self, request: streams_pb2.ReadReq, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[streams_pb2.ReadResp]:
        """Reads and catch-up subscriptions, for one stream or ``$all``."""
        options = request.options
        subscribe = options.WhichOneof("count_option") == "subscription"
        backwards = options.read_direction == ReadOptions.Backwards
        if options.WhichOneof("stream_option") == "stream":
            stream_name = stream_name_of(options.stream.stream_identifier)
            if subscribe:
                responses = self._subscribe_stream(stream_name, options.stream, context)
            else:
                responses = self._read_stream(
                    stream_name, options.stream, backwards, options.count, context
                )
        else:
            event_filter = build_read_filter(options)
            if subscribe:
                responses = self._subscribe_all(options, event_filter, context)
            else:
                responses = self._read_all(
                    options.all, backwards, options.count, event_filter, context
                )
        async for response in responses:
            yield response

    async def _read_stream(
        self,
        stream_name: str,
        stream_options: ReadOptions.StreamOptions,
        backwards: bool,
        count: int,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[streams_pb2.ReadResp]:
        revision_option = stream_options.WhichOneof("revision_option")
        from_revision: int | None
        if revision_option == "revision":
            from_revision = stream_options.revision
        elif revision_option == "start":
            from_revision = 0
        else:
            from_revision = None
            if not backwards:
                index = self._log.stream(stream_name)
                from_revision = index.last_revision + 1 if index is not None else 0
        try:
            records = self._log.read_stream(
                stream_name, from_revision=from_revision, backwards=backwards, limit=count
            )
        except StreamDeleted:
            await abort_stream_deleted(context, stream_name)
            raise
        if records is None:
            response = streams_pb2.ReadResp()
            response.stream_not_found.stream_identifier.CopyFrom(identifier(stream_name))
            yield response
            return
        for record in records:
            yield streams_read_event(record)

    async def _read_all(
        self,
        all_options: ReadOptions.AllOptions,
        backwards: bool,
        count: int,
        event_filter: EventFilter | None,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[streams_pb2.ReadResp]:
        which = all_options.WhichOneof("all_option")
        try:
            if which == "start":
                index = 0
            elif which == "end":
                index = len(self._log)
            else:
                index = self._log.index_of_position(
                    all_options.position.commit_position, exclusive=False
                )
        except InvalidPosition:
            result_type = "FilteredReadAllResult" if event_filter else "ReadAllResult"
            await context.abort(
                grpc.StatusCode.UNKNOWN, f"Unexpected {result_type}: InvalidPosition"
            )
            raise
        if backwards:
            indexes: range = range(index - 1, -1, -1)
        else:
            indexes = range(index, len(self._log))
        sent = 0
        for i in indexes:
            if sent >= count:
                return
            record = self._log.record_at(i)
            if event_filter is not None and not event_filter.matches(record):
                continue
            sent += 1
            yield streams_read_event(record)

    # ---------------------------------------------------------- subscriptions
    @staticmethod
    def _confirmation() -> streams_pb2.ReadResp:
        response = streams_pb2.ReadResp()
        response.confirmation.subscription_id = str(uuid.uuid4())
        return response

    async def _subscribe_stream(
        self,
        stream_name: str,
        stream_options: ReadOptions.StreamOptions,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[streams_pb2.ReadResp]:
        revision_option = stream_options.WhichOneof("revision_option")
        index = self._log.stream(stream_name)
        if revision_option == "revision":
            next_revision = stream_options.revision + 1  # subscriptions are exclusive
        elif revision_option == "end":
            next_revision = index.last_revision + 1 if index is not None else 0
        else:
            next_revision = 0
        yield self._confirmation()
        wake = asyncio.Event()
        self._log.add_listener(wake.set)
        try:
            caught_up = False
            while True:
                wake.clear()
                index = self._log.stream(stream_name)
                if index is not None and index.tombstoned:
                    await abort_stream_deleted(context, stream_name)
                batch = []
                if index is not None:
                    start = max(next_revision, index.truncate_before)
                    batch = index.records[start : start + _PAGE]
                if batch:
                    for record in batch:
                        next_revision = record.revision + 1
                        yield streams_read_event(record)
                    continue
                if not caught_up:
                    caught_up = True
                    response = streams_pb2.ReadResp()
                    response.caught_up.timestamp.GetCurrentTime()
                    if next_revision > 0:
                        response.caught_up.stream_revision = next_revision - 1
                    yield response
                await wake.wait()
        finally:
            self._log.remove_listener(wake.set)

    async def _subscribe_all(
        self,
        options: ReadOptions,
        event_filter: EventFilter | None,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[streams_pb2.ReadResp]:
        all_options = options.all
        which = all_options.WhichOneof("all_option")
        last_position = 0
        yield self._confirmation()
        try:
            if which == "start":
                next_index = 0
            elif which == "end":
                next_index = len(self._log)
                if next_index:
                    last_position = self._log.record_at(next_index - 1).position
            else:
                last_position = all_options.position.commit_position
                next_index = self._log.index_of_position(last_position, exclusive=True)
        except InvalidPosition:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "Trying to read from an invalid position."
            )
            raise
        interval = 0
        if event_filter is not None:
            window = options.filter.max if options.filter.WhichOneof("window") == "max" else 0
            multiplier = options.filter.checkpointIntervalMultiplier or 1
            interval = max(1, (window or _DEFAULT_WINDOW) * multiplier)
        considered = 0
        wake = asyncio.Event()
        self._log.add_listener(wake.set)
        try:
            caught_up = False
            while True:
                wake.clear()
                end = len(self._log)
                if next_index < end:
                    for record in self._log.records_slice(next_index, min(end, next_index + _PAGE)):
                        next_index += 1
                        last_position = record.position
                        if event_filter is None or event_filter.matches(record):
                            yield streams_read_event(record)
                        if event_filter is not None:
                            considered += 1
                            if considered >= interval:
                                considered = 0
                                yield self._checkpoint(last_position)
                    continue
                if not caught_up:
                    caught_up = True
                    if event_filter is not None:
                        yield self._checkpoint(last_position)
                    response = streams_pb2.ReadResp()
                    response.caught_up.timestamp.GetCurrentTime()
                    response.caught_up.position.commit_position = last_position
                    response.caught_up.position.prepare_position = last_position
                    yield response
                await wake.wait()
        finally:
            self._log.remove_listener(wake.set)

    @staticmethod
    def _checkpoint(position: int) -> streams_pb2.ReadResp:
        response = streams_pb2.ReadResp()
        response.checkpoint.commit_position = position
        response.checkpoint.prepare_position = position
        response.checkpoint.timestamp.GetCurrentTime()
        return response
