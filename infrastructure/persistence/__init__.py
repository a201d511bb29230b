"""Persistence: the journal port, its adapters (eventsourcing recorders; EventStoreDB in
:mod:`.eventstoredb_journal`), the downstream event stream port (:mod:`.subscriptions`),
and the msgpack event codec."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventsourcing.persistence import Mapper

from infrastructure.errors import ConfigurationError
from infrastructure.persistence.port import EventJournal, StreamWrite
from infrastructure.persistence.recorder_journal import RecorderJournal
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


def open_subscriptions(settings: Settings) -> EventStoreDBSubscriptions:
    """The event stream and persistent subscription ports on the configured store
    (EventStoreDB only: the other stores have no server-side subscriptions)."""
    if settings.store != "eventstoredb":
        raise ConfigurationError(f"subscriptions need XPLATFORM_STORE=eventstoredb, not {settings.store!r}")
    from infrastructure.persistence.eventstoredb_subscriptions import EventStoreDBSubscriptions

    return EventStoreDBSubscriptions(settings.journal_env(), deadline_s=settings.eventstoredb_deadline_s,
                                     retries=settings.eventstoredb_retries,
                                     stream_prefix=settings.eventstoredb_stream_prefix)


def new_mapper() -> Mapper[str]:
    """Domain event ⇄ stored event mapping with the msgpack transcoder."""
    return Mapper(transcoder=MsgpackTranscoder())


__all__ = ["EventJournal", "MsgpackTranscoder", "RecorderJournal", "StreamWrite", "new_mapper", "open_journal",
           "open_subscriptions"]
