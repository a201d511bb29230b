"""Persistence: the journal port, its adapters (eventsourcing recorders; EventStoreDB in
:mod:`.eventstoredb_journal`), the downstream event stream port (:mod:`.subscriptions`),
and its adapters (EventStoreDB in :mod:`.eventstoredb_subscriptions`, the recorders in
:mod:`.recorder_subscriptions`), and the msgpack event codec."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventsourcing.persistence import Mapper

from infrastructure.errors import ConfigurationError
from infrastructure.persistence.port import EventJournal, StreamWrite
from infrastructure.persistence.recorder_journal import RecorderJournal
from infrastructure.persistence.subscriptions import EventStream
from infrastructure.persistence.transcoder import MsgpackTranscoder
from infrastructure.settings import Settings

if TYPE_CHECKING:
    from infrastructure.persistence.eventstoredb_subscriptions import EventStoreDBSubscriptions


def open_journal(settings: Settings) -> EventJournal:
    """The journal adapter ``settings.store`` names."""
    if settings.store == "eventstoredb":
        from infrastructure.persistence.eventstoredb_journal import EventStoreDBJournal  # loads grpc only when used

        return EventStoreDBJournal(settings.journal_env(), deadline_s=settings.eventstoredb_deadline_s,
                                   retries=settings.eventstoredb_retries, stream_prefix=settings.eventstoredb_stream_prefix)
    return RecorderJournal(settings.journal_env())


FEED_POOL = {"POSTGRES_POOL_SIZE": "3", "POSTGRES_MAX_OVERFLOW": "0"}
"""PostgreSQL connections of a stream opened with a pool of its own (a state node's standby
feed): one held for LISTEN, one for the catch-up reads, one for the lag count - fixed, so a
feed never opens more however its store answers."""


def open_event_stream(settings: Settings, journal: EventJournal | None = None, *,
                      own_pool: str | None = None, poll_interval_s: float | None = None) -> EventStream:
    """The catch-up event stream port (:class:`~.subscriptions.EventStream`) on the
    configured store, for every store.

    ``own_pool`` (PostgreSQL): a recorder of its own, with FEED_POOL connections named
    ``own_pool`` (``application_name``), instead of ``journal``'s pool: a subscription holds
    one connection for good and catches up with long reads, which must never take the
    connections the journal's appends wait for (a state node's standby feed).

    EventStoreDB: a client of its own (``journal`` is not needed). SQLite/PostgreSQL: on
    ``journal``'s recorder when given (closing the stream leaves the journal open), else on
    a recorder of its own opened from ``settings`` (closed with the stream) - e.g. a
    projection process following the database the state nodes write. Memory: the events
    live in one journal object, so ``journal`` is required. ``poll_interval_s`` (SQLite, once
    caught up): how often it looks for new events, if not the stream's default."""
    if settings.store == "eventstoredb":
        return open_subscriptions(settings)
    options: dict[str, object] = {} if poll_interval_s is None else {"poll_interval_s": poll_interval_s}
    if own_pool and settings.store == "postgres":
        env = {**settings.journal_env(), **FEED_POOL, "CREATE_TABLE": "false"}  # the journal created them
        return RecorderJournal(env, application_name=own_pool).event_stream(close_journal=True, **options)
    if isinstance(journal, RecorderJournal):
        return journal.event_stream(close_journal=False, **options)
    if journal is not None:
        raise ConfigurationError(f"journal {type(journal).__name__} is not a {settings.store!r} store's journal")
    if settings.store == "memory":
        raise ConfigurationError("the memory store's events live in its journal: pass journal= to follow them")
    return RecorderJournal(settings.journal_env()).event_stream(close_journal=True, **options)


def open_subscriptions(settings: Settings) -> EventStoreDBSubscriptions:
    """The event stream and persistent subscription ports on the configured store
    (EventStoreDB only: persistent subscriptions - server-kept group positions, competing
    consumers, parking - are an EventStoreDB server feature; for catch-up subscriptions on
    any store use :func:`open_event_stream`)."""
    if settings.store != "eventstoredb":
        raise ConfigurationError(f"persistent subscriptions need XPLATFORM_STORE=eventstoredb, not {settings.store!r} "
                                 "(catch-up subscriptions on any store: open_event_stream)")
    from infrastructure.persistence.eventstoredb_subscriptions import EventStoreDBSubscriptions

    return EventStoreDBSubscriptions(settings.journal_env(), deadline_s=settings.eventstoredb_deadline_s,
                                     retries=settings.eventstoredb_retries,
                                     stream_prefix=settings.eventstoredb_stream_prefix)


def new_mapper() -> Mapper[str]:
    """Domain event ⇄ stored event mapping with the msgpack transcoder."""
    return Mapper(transcoder=MsgpackTranscoder())


__all__ = ["FEED_POOL", "EventJournal", "EventStream", "MsgpackTranscoder", "RecorderJournal", "StreamWrite", "new_mapper",
           "open_event_stream", "open_journal", "open_subscriptions"]
