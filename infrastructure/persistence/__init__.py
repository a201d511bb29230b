"""Persistence: the journal port, its adapters, and the msgpack event codec."""

from __future__ import annotations

from eventsourcing.persistence import Mapper

from infrastructure.persistence.port import EventJournal, StreamWrite
from infrastructure.persistence.recorder_journal import RecorderJournal
from infrastructure.persistence.transcoder import MsgpackTranscoder
from infrastructure.settings import Settings


def open_journal(settings: Settings) -> EventJournal:
    """The journal adapter ``settings.store`` names."""
    return RecorderJournal(settings.journal_env())


def new_mapper() -> Mapper[str]:
    """Domain event ⇄ stored event mapping with the msgpack transcoder."""
    return Mapper(transcoder=MsgpackTranscoder())


__all__ = ["EventJournal", "MsgpackTranscoder", "RecorderJournal", "StreamWrite", "new_mapper", "open_journal"]
