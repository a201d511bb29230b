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
- another entity; the entity's own timers; standard messages from the edge
  (``terminated``); and IDs stored before senders were recorded (legacy, see below).

A sender is named by a self-delimiting prefix ``<tag><length of name>:<name>``: ``c3:bob``
(client ``bob``), ``k36:<cid>`` (a connection without ``sub``), ``e8:Lot/vase`` (an
entity), ``t0:`` (timers), ``s0:`` (standard), ``l0:`` (legacy). A window key is the prefix
followed by the message ID: the length spelled out makes keys of two senders different
whatever the IDs and names hold (client IDs and ``sub`` may contain ``:`` and ``/``), and
IDs an entity derives from its message's (``ctx.tell``) start with the same prefix.

:class:`ReplyWindow` holds recent IDs with their reply records, oldest first: at most
``per_sender`` of each sender, and at most ``total`` over all senders (when the total is
exceeded the oldest ID of all goes). One sender's volume therefore only ever evicts its own
IDs: its share is full long before the total is reached.

Entries written before senders were recorded (events with ``_xp_mid`` but no
``_xp_from``; snapshots with the flat ``_seen`` dict) load as legacy entries. They are
matched by ID for any sender (their sender is unknown) until evicted; they are the oldest
entries, so new traffic evicts them first.
"""

from __future__ import annotations

from collections import deque
from typing import Any

TIMERS = "t0:"
STANDARD = "s0:"
LEGACY = "l0:"
NO_SENDER = "n0:"
"""Prefix of IDs derived from a message whose sender is not known (never remembered)."""

OK_RECORD: list[Any] = [True, None, "", ""]
"""The reply record of a success without payload (most entity messages and timers):
shared, so remembering one costs no list of its own. Never mutated."""


def client_sender(sub: str) -> str:
    return f"c{len(sub)}:{sub}"


def connection_sender(connection_id: str) -> str:
    """A client connection whose claims carry no ``sub``."""
    return f"k{len(connection_id)}:{connection_id}"


def entity_sender(ref: Any) -> str:
    """Another entity (an :class:`~domain.refs.EntityRef`)."""
    name = str(ref)
    return f"e{len(name)}:{name}"


def _prefix_of(key: str) -> str:
    """The sender prefix a window key starts with."""
    colon = key.index(":")
    return key[:colon + 1 + int(key[1:colon])]


class ReplyWindow:
    """Recent message IDs per sender with their reply records. See the module docstring.

    One flat insertion-ordered dict ``entries`` (key: sender prefix + message ID), so a
    small entity's window costs what a window without senders cost. The keys of each
    sender, oldest first (``order``), are kept only once the window holds more than
    ``per_sender`` IDs (before that no sender can be over its share): small entities never
    pay for it. A sender over ``per_sender`` loses its oldest IDs, an eighth of
    ``per_sender`` at once, so it keeps between ~7/8 of ``per_sender`` and ``per_sender``.
    Over ``total``, the oldest ID of all goes (which is also its sender's oldest). Each
    eviction takes its keys from the front of the sender's own queue: a hot entity with a
    hundred busy senders no longer walks the whole window to find one sender's oldest."""

    __slots__ = ("entries", "order", "legacy")

    def __init__(self) -> None:
        self.entries: dict[str, list[Any]] = {}
        self.order: dict[str, deque[str]] | None = None
        self.legacy = False
        """Holds legacy entries (loaded from before senders were kept)."""

    @property
    def size(self) -> int:
        return len(self.entries)

    def count(self, sender: str) -> int:
        """How many IDs of ``sender`` (a prefix) the window holds."""
        return sum(1 for key in self.entries if key.startswith(sender))

    def get(self, sender: str, message_id: str) -> list[Any] | None:
        record = self.entries.get(sender + message_id)
        if record is None and self.legacy:
            record = self.entries.get(LEGACY + message_id)
        return record

    def put(self, sender: str, message_id: str, record: list[Any], per_sender: int, total: int) -> None:
        entries = self.entries
        key = sender + message_id
        known = key in entries
        entries[key] = OK_RECORD if record == OK_RECORD else record
        if known:
            return
        if sender == LEGACY:
            self.legacy = True
        order = self.order
        if order is None:
            if len(entries) <= per_sender:
                return
            order = self.order = {}
            for k in entries:
                order.setdefault(_prefix_of(k), deque()).append(k)
            mine = order[sender]
        else:
            found = order.get(sender)
            mine = order[sender] = deque() if found is None else found
            mine.append(key)
        n = len(mine)
        if n > per_sender:
            self._evict_oldest_of(sender, n - per_sender + per_sender // 8)
        while len(entries) > total:
            oldest = next(iter(entries))
            del entries[oldest]
            prefix = _prefix_of(oldest)
            keys = order[prefix]
            keys.popleft()  # the oldest of all is its sender's oldest too
            if not keys:
                del order[prefix]

    def _evict_oldest_of(self, sender: str, how_many: int) -> None:
        order = self.order
        assert order is not None
        keys = order[sender]
        entries = self.entries
        for _ in range(min(how_many, len(keys))):
            del entries[keys.popleft()]
        if not keys:
            del order[sender]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReplyWindow) and list(self.entries.items()) == list(other.entries.items())

    def __repr__(self) -> str:
        return f"ReplyWindow({len(self.entries)} IDs)"

    # ----------------------------------------------------------------- snapshots
    def to_data(self) -> list[Any]:
        """Plain data for a snapshot: ``[ {key: record}, ... ]`` in order (a list, so that a
        snapshot written before senders were kept, a flat dict, is told apart)."""
        return [self.entries]

    @classmethod
    def from_data(cls, data: Any) -> ReplyWindow | None:
        """The window from a snapshot: today's form (see :meth:`to_data`) or the flat
        ``{message ID: record}`` dict of snapshots written before senders were kept, whose
        successes load as legacy entries (their refusals are dropped: refusals are
        remembered only while resident)."""
        if not data:
            return None
        window = cls()
        if isinstance(data, dict):
            window.entries = {LEGACY + mid: record for mid, record in data.items() if record[0]}
        else:
            window.entries = dict(data[0])
        window.legacy = any(key.startswith(LEGACY) for key in window.entries)
        return window if window.entries else None
