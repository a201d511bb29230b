"""A catch-up runner's memory of its read model: the documents and stream versions it last
read or wrote, so a batch needs no read round trips for what the runner already knows.

Why it is safe for a catch-up runner (and only for one): a catch-up runner applies the
events of its categories in the store's order, each once. What it remembers of a document
is the document after the last event *it* applied to it (or as it read it), and that is
exactly what the handler of the next event must see — whoever else writes the same read
model applies the same events in the same order (a second, redundant runner; writes stay
conditional per document, see :mod:`projections.mongo`), so the document after event *k*
is the same whoever wrote it. A persistent subscription's consumers share a group: each
sees only some events, so none may trust its memory of a document another consumer also
writes; a consumer uses this cache across batches only while it is its group's only one
(:mod:`projections.persistent`, "A lone consumer remembers"), and forgets it as soon as
another consumer counts itself in.

What makes it forget everything (the next batch reads again):

- a write that failed (the batch is delivered again, and memory may hold what was not written);
- the live collections switched (a rebuild, :meth:`~projections.mongo.MongoReadModel.refresh`);
- the count of parked events changed since the last batch: ``replay-parked`` (another
  process) wrote documents and stream versions this runner did not.

Bounded: at most ``limit`` documents, least recently used first out (stream versions are a
few bytes each and bounded the same way). The memory cost is the documents' size: pick
the limit by the read model's (``XPLATFORM_PROJECTOR_CACHE_DOCUMENTS``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Mapping

from projections.projection import Document

_ABSENT: Document = {}
"""Remembered as "no such document" (a key the runner read and found missing)."""


class ModelCache:
    """Documents (stored form, bookkeeping included) and stream versions, LRU-bounded."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a cache of {limit} documents")
        self.limit = limit
        self._documents: OrderedDict[str, Document] = OrderedDict()
        self._streams: OrderedDict[str, int] = OrderedDict()
        self.parked_count: int | None = None
        self.hits = 0
        self.misses = 0

    def documents(self, keys: Collection[str]) -> tuple[dict[str, Document], list[str]]:
        """The remembered documents of ``keys`` that exist, and the keys not remembered."""
        found: dict[str, Document] = {}
        unknown: list[str] = []
        for key in keys:
            doc = self._documents.get(key)
            if doc is None:
                unknown.append(key)
                continue
            self._documents.move_to_end(key)
            if doc is not _ABSENT:
                found[key] = doc
        self.hits += len(keys) - len(unknown)
        self.misses += len(unknown)
        return found, unknown

    def streams(self, streams: Collection[str]) -> tuple[dict[str, int], list[str]]:
        """The remembered version of each of ``streams`` that has one, and those not remembered."""
        found: dict[str, int] = {}
        unknown: list[str] = []
        for stream in streams:
            version = self._streams.get(stream)
            if version is None:
                unknown.append(stream)
            else:
                self._streams.move_to_end(stream)
                if version:
                    found[stream] = version
        return found, unknown

    def read(self, keys: Collection[str], found: Mapping[str, Document]) -> None:
        """Remember what a read of ``keys`` found (a key it did not find: absent)."""
        for key in keys:
            self._put_document(key, found.get(key, _ABSENT))

    def read_streams(self, streams: Collection[str], found: Mapping[str, int]) -> None:
        """Remember the tracked versions a read found (a stream without one: version 0)."""
        for stream in streams:
            self._put_stream(stream, found.get(stream, 0))

    def written(self, documents: Mapping[str, Document | None], streams: Mapping[str, int]) -> None:
        """Remember a batch's documents and stream versions after its writes were acknowledged."""
        for key, doc in documents.items():
            self._put_document(key, _ABSENT if doc is None else doc)
        for stream, version in streams.items():
            if version > self._streams.get(stream, 0):
                self._put_stream(stream, version)

    def clear(self) -> None:
        self._documents.clear()
        self._streams.clear()
        self.parked_count = None

    def _put_document(self, key: str, doc: Document) -> None:
        self._documents[key] = doc
        self._documents.move_to_end(key)
        while len(self._documents) > self.limit:
            self._documents.popitem(last=False)

    def _put_stream(self, stream: str, version: int) -> None:
        self._streams[stream] = version
        self._streams.move_to_end(stream)
        while len(self._streams) > self.limit:
            self._streams.popitem(last=False)

    def __len__(self) -> int:
        return len(self._documents)


__all__ = ["ModelCache"]
