"""Server-side ``$all`` filters (by stream name or event type, regex or prefixes).

EventStoreDB evaluates a filter regex with .NET ``Regex.IsMatch``, i.e. a
*search* anywhere in the string, and prefixes with ``StartsWith``; the client
anchors its own patterns (``^a|b$`` to include, ``^(?!(a$|b$))`` to exclude),
so ``re.search`` reproduces the server's behaviour exactly.

:func:`allowed_in_all_groups` is the server's ``DefaultAllFilter``, which a
persistent subscription to ``$all`` applies on top of its own filter (or alone).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .store import EventRecord
from .system_events import EPOCH_INFORMATION_STREAM

_ALL_GROUP_STREAM_PREFIX = "$persistentsubscription-$all::"


def allowed_in_all_groups(record: EventRecord) -> bool:
    """``EventFilter.DefaultAllFilter``: every non-system event; of the system ones all
    but ``$epoch-information`` and the ``$all`` groups' own checkpoints and parked
    links (a group must not be fed its own bookkeeping)."""
    name = record.stream_name
    if not name.startswith("$"):
        return True
    if name == EPOCH_INFORMATION_STREAM:
        return False
    return not (
        name.startswith(_ALL_GROUP_STREAM_PREFIX) and name.endswith(("-checkpoint", "-parked"))
    )


@dataclass(frozen=True)
class EventFilter:
    """A compiled filter; ``by_stream_name`` selects which record field is tested."""

    by_stream_name: bool
    regex: re.Pattern[str] | None
    prefixes: tuple[str, ...]

    @classmethod
    def build(cls, *, by_stream_name: bool, regex: str, prefixes: Sequence[str]) -> EventFilter:
        """Compile from the protobuf ``Expression`` fields (regex wins when non-empty)."""
        compiled = re.compile(regex) if regex else None
        return cls(by_stream_name=by_stream_name, regex=compiled, prefixes=tuple(prefixes))

    def matches(self, record: EventRecord) -> bool:
        """Whether ``record`` passes the filter."""
        subject = record.stream_name if self.by_stream_name else record.event_type
        if self.regex is not None:
            return self.regex.search(subject) is not None
        return any(subject.startswith(prefix) for prefix in self.prefixes)

    def describe(self) -> dict[str, object]:
        """JSON-able form, for persisting subscription definitions."""
        return {
            "by_stream_name": self.by_stream_name,
            "regex": self.regex.pattern if self.regex is not None else "",
            "prefixes": list(self.prefixes),
        }

    @classmethod
    def from_description(cls, raw: dict[str, object]) -> EventFilter:
        """Inverse of :meth:`describe`."""
        prefixes = raw.get("prefixes") or []
        assert isinstance(prefixes, list)
        return cls.build(
            by_stream_name=bool(raw.get("by_stream_name")),
            regex=str(raw.get("regex") or ""),
            prefixes=[str(p) for p in prefixes],
        )
