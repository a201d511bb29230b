"""Exceptions raised inside the emulator.

Every domain failure the emulator can hit derives from :class:`EmulatorError`, so
the gRPC layer can translate them to the exact status codes / response shapes
that the real EventStoreDB/KurrentDB server produces (and that
``kurrentdbclient`` decodes), and so that test code can catch "anything the
emulator rejected" with one ``except``.
"""

from __future__ import annotations


class EmulatorError(Exception):
    """Root of every error the emulator raises on purpose."""


class WrongExpectedVersion(EmulatorError):
    """An append/delete/tombstone whose expected revision does not match.

    ``current`` is the stream's last revision, or ``-1`` when the stream has no
    events (EventStoreDB's ``ExpectedVersion.NoStream``).  ``expected`` uses the
    server's internal encoding: ``>= 0`` exact revision, ``-1`` no stream,
    ``-2`` any, ``-4`` stream exists.
    """

    def __init__(self, stream_name: str, expected: int, current: int) -> None:
        super().__init__(
            f"WrongExpectedVersion on {stream_name!r}: expected {expected}, current {current}"
        )
        self.stream_name = stream_name
        self.expected = expected
        self.current = current


class StreamDeleted(EmulatorError):
    """The stream was tombstoned (hard deleted) and can never be written again."""

    def __init__(self, stream_name: str) -> None:
        super().__init__(f"Event stream '{stream_name}' is deleted.")
        self.stream_name = stream_name


class InvalidPosition(EmulatorError):
    """A ``$all`` position that does not point at an event record boundary."""

    def __init__(self, position: int) -> None:
        super().__init__(f"Invalid $all position {position}")
        self.position = position


class PersistentSubscriptionNotFound(EmulatorError):
    """Operation on a persistent subscription group that does not exist."""

    def __init__(self, stream_name: str, group_name: str) -> None:
        super().__init__(
            f"Subscription group {group_name} on stream {stream_name} does not exist."
        )
        self.stream_name = stream_name
        self.group_name = group_name


class PersistentSubscriptionExists(EmulatorError):
    """Create of a persistent subscription group that already exists."""

    def __init__(self, stream_name: str, group_name: str) -> None:
        super().__init__(f"Subscription group {group_name} on stream {stream_name} exists.")
        self.stream_name = stream_name
        self.group_name = group_name


class PersistentSubscriptionFailed(EmulatorError):
    """Create/update of a group refused for its settings (``RpcExceptions.PersistentSubscriptionFailed``).

    ``reason`` is the server's own text, e.g. "Consumer strategy X does not exist.".
    """

    def __init__(self, stream_name: str, group_name: str, reason: str) -> None:
        super().__init__(f"Subscription group {group_name} on stream {stream_name} failed: '{reason}'")
        self.stream_name = stream_name
        self.group_name = group_name
        self.reason = reason


class MaximumSubscribersReached(EmulatorError):
    """A consumer tried to join a group already at ``max_subscriber_count``."""

    def __init__(self, stream_name: str, group_name: str) -> None:
        super().__init__(
            "Maximum subscriptions reached for subscription group"
            f" {group_name} on stream {stream_name}."
        )
        self.stream_name = stream_name
        self.group_name = group_name


class SubscriptionDropped(EmulatorError):
    """A connected consumer was dropped (group updated/deleted, or nack 'stop')."""

    def __init__(self, stream_name: str, group_name: str, *, deleted: bool = False) -> None:
        if deleted:
            msg = f"Subscription group {group_name} on stream {stream_name} does not exist."
        else:
            msg = f"Subscription group {group_name} on stream {stream_name} was dropped."
        super().__init__(msg)
        self.stream_name = stream_name
        self.group_name = group_name
        self.deleted = deleted
