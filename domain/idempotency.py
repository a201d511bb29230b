"""Who sent a message, and the window of message IDs an entity remembers per sender.

Idempotency is keyed by (sender, message ID): senders generate their own IDs, so two
senders may use the same ID, and one sender must never read (or pre-empt, or evict)
another's entry. A sender is, by namespace:

- a client: its user, the ``sub`` claim of the connection the message arrived on. Why the
  user and not the connection ID: a ``sub`` is authenticated by the token and is the same
  on every connection and reconnection of the user, so a retry through a new socket (even
  a new connection ID, e.g. after a page reload) still finds its ID; a connection ID is
  chosen by the client and, once the entity has forgotten it, may be taken by another
  user. A connection without a ``sub`` (possible only in tests) is its own sender.
  Key: the ``sub`` string itself (no allocation on the hot path).
- another entity: ``("e", "<category>/<id>")``;
- the entity's timers: ``("t",)``; standard messages from the edge (``terminated``):
  ``("s",)``; IDs stored before senders were recorded: ``("l",)`` (see below).

Keys of other namespaces are tuples and client keys are strings, so no client can name
another namespace's key whatever its ``sub``.

:class:`ReplyWindow` holds, per sender, its recent IDs with their reply records, oldest
first, at most ``per_sender`` each, and at most ``total`` over all senders: when the total
is exceeded the oldest ID of the least recently active sender goes. One sender's volume
therefore only ever evicts its own IDs (its bucket is full long before the total is
reached), and senders are evicted in the order they went quiet.

Entries written before senders were recorded (events with ``_xp_mid`` but no
``_xp_from``; snapshots with the flat ``_seen`` dict) load into the legacy bucket. They
are matched by ID for any sender (their sender is unknown) until evicted; the legacy bucket
is the least recently active one, so new traffic evicts it first.
"""

from __future__ import annotations

from typing import Any

Sender = str | tuple[str, ...]
"""A client's ``sub``, or a namespaced tuple (see the module docstring)."""

TIMERS: Sender = ("t",)
STANDARD: Sender = ("s",)
LEGACY: Sender = ("l",)

OK_RECORD: list[Any] = [True, None, "", ""]
"""The reply record of a success without payload (most entity messages and timers):
shared, so remembering one costs no list of its own. Never mutated."""


def entity_sender(sender: Any) -> Sender:
    """Key of a message from another entity (an :class:`~domain.refs.EntityRef`)."""
    return ("e", str(sender))


def connection_sender(connection_id: str) -> Sender:
    """Key of a client connection whose claims carry no ``sub``."""
    return ("k", connection_id)


def derived_prefix(sender: Sender | None) -> str:
    """A self-delimiting prefix naming ``sender``, for IDs derived from its message's ID
    (``ctx.tell``): two senders' messages with the same ID derive different IDs, and no
    client ID (any string) can be mistaken for the sender part (its length is spelled out)."""
    if sender is None:
        return "n:"
    if isinstance(sender, str):
        return f"c{len(sender)}:{sender}"
    name = sender[1] if len(sender) > 1 else ""
    return f"{sender[0]}{len(name)}:{name}"


class ReplyWindow:
    """Recent message IDs per sender with their reply records. See the module docstring."""

    __slots__ = ("senders", "size")

    def __init__(self) -> None:
        self.senders: dict[Sender, dict[str, list[Any]]] = {}
        self.size = 0

    def get(self, sender: Sender, message_id: str) -> list[Any] | None:
        bucket = self.senders.get(sender)
        record = None if bucket is None else bucket.get(message_id)
        if record is None and self.senders and LEGACY in self.senders:
            record = self.senders[LEGACY].get(message_id)
        return record

    def put(self, sender: Sender, message_id: str, record: list[Any], per_sender: int, total: int) -> None:
        senders = self.senders
        bucket = senders.pop(sender, None)  # re-inserted last: the most recently active sender
        if bucket is None:
            bucket = {}
        senders[sender] = bucket
        if message_id not in bucket:
            self.size += 1
        bucket[message_id] = OK_RECORD if record == OK_RECORD else record
        if len(bucket) > per_sender:
            del bucket[next(iter(bucket))]
            self.size -= 1
        while self.size > total:
            oldest_sender = next(iter(senders))
            oldest = senders[oldest_sender]
            del oldest[next(iter(oldest))]
            self.size -= 1
            if not oldest:
                del senders[oldest_sender]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReplyWindow) and list(self.senders.items()) == list(other.senders.items())

    def __repr__(self) -> str:
        return f"ReplyWindow({self.size} IDs of {len(self.senders)} senders)"

    # ----------------------------------------------------------------- snapshots
    def to_data(self) -> list[Any]:
        """Plain data for a snapshot: [[sender, {message ID: record}], ...], in order."""
        return [[sender, bucket] for sender, bucket in self.senders.items()]

    @classmethod
    def from_data(cls, data: Any) -> ReplyWindow | None:
        """The window from a snapshot: today's form (a list, see :meth:`to_data`) or the
        flat ``{message ID: record}`` dict of snapshots written before senders were kept,
        whose successes load into the legacy bucket (their refusals are dropped: refusals
        are remembered only while resident)."""
        if not data:
            return None
        window = cls()
        if isinstance(data, dict):
            legacy = {mid: record for mid, record in data.items() if record[0]}
            if legacy:
                window.senders[LEGACY] = legacy
                window.size = len(legacy)
            return window if window.size else None
        for sender, bucket in data:
            window.senders[tuple(sender) if isinstance(sender, list) else sender] = dict(bucket)
            window.size += len(bucket)
        return window
