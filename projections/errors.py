"""Errors of the projections package: one root (:class:`ProjectionError`).

Infrastructure errors (the event store's, MongoDB's) are translated at this package's
boundary into these, with the original as ``__cause__``.
"""

from __future__ import annotations


class ProjectionError(Exception):
    """Raised when building a read model fails; root of this package's errors."""


class EventDecodeError(ProjectionError):
    """Raised when a stored event cannot be decoded into an envelope (its state is not the
    platform's msgpack, or not a map). The event is a poison event for every projection:
    the handler-error policy of the projection decides (park, skip or stop)."""


class ProjectionDefinitionError(ProjectionError):
    """Raised when a projection class is declared wrongly (no name, a handler for a category
    it does not read, two handlers for one event type, an unknown policy): at class
    creation, so the mistake shows at import, not on the first event."""


class ChangeError(ProjectionError):
    """Raised when a handler declares a change that cannot be applied: a key that is not a
    non-empty string, a field path that is empty, starts with ``_`` or ``$`` (reserved for
    bookkeeping and operators), or one event changing the same field of one document twice."""


class HandlerFailed(ProjectionError):
    """Raised when a projection's handler raised (or returned something that is not a list
    of changes) and the projection's policy is ``stop``. ``stream_id``/``version`` name the
    event; the handler's exception is the ``__cause__``."""

    def __init__(self, message: str, stream_id: str, version: int) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.version = version


class UnhandledEvent(ProjectionError):
    """Raised when an event of a category the projection reads has a type no handler takes
    and the projection's ``ON_UNHANDLED`` policy is ``stop``. ``stream_id``/``version`` name
    the event."""

    def __init__(self, message: str, stream_id: str = "", version: int = 0) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.version = version


class ProjectionTopicError(ProjectionError):
    """Raised at start when ``XPLATFORM_PROJECTIONS`` (or a ``--projection``) cannot be
    resolved: a malformed topic, a module or attribute that does not exist, a value that is
    not a Projection class (or a list/tuple of them), two projections with one NAME, or a
    NAME the command was asked about that the setting does not list. One line naming the
    topic; the process does not start."""


class VersionGap(ProjectionError):
    """Raised when an event of a stream arrives before the events that precede it in its
    stream were applied (a missing or reordered delivery): nothing of the batch is written,
    so the gap is never skipped; deliver the missing events first."""

    def __init__(self, stream_id: str, applied: int, got: int) -> None:
        super().__init__(f"{stream_id}: version {got} arrived, but only up to {applied} was applied "
                         f"(expected {applied + 1})")
        self.stream_id = stream_id
        self.applied = applied
        self.got = got


class ModelWriteError(ProjectionError):
    """Raised when the read model's database refuses or cannot take a batch (unreachable,
    write concern not met, a document too large). What was written before the failure is
    idempotent: delivering the batch again applies the rest exactly once."""


class SourceFailed(ProjectionError):
    """Raised when the event source a runner follows fails for good (the subscription's own
    retries are spent, or a stored position is refused). The store's error is the
    ``__cause__``; the read model keeps what it applied and its position."""
