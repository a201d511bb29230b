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

:class:`ReplyWindow` holds recent IDs with their reply records, oldest first: at most
``per_sender`` of each sender, and at most ``total`` over all senders (when the total is
exceeded the oldest ID of all goes). One sender's volume therefore only ever evicts its own
IDs: its share is full long before the total is reached.

Entries written before senders were recorded (events with ``_xp_mid`` but no
``_xp_from``; snapshots with the flat ``_seen`` dict) load as the legacy sender's. They
are matched by ID for any sender (their sender is unknown) until evicted; they are the
oldest entries, so new traffic evicts them first.
"""

from __future__ import annotations

from typing import Any

Sender = str | tuple[str, ...]
"""A client's ``sub``, or a namespaced tuple (see the module docstring)."""

TIMERS: Sender = ("t",)
STANDARD: Sender = ("s",)
LEGACY: Sender = ("l",)
"""Keys start with ``l0:`` (see :func:`key_of`)."""

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
    """A self-delimiting prefix naming ``sender`` (``<tag><length of name>:<name>``, e.g.
    ``c3:bob``, ``e8:Lot/vase``, ``t0:``), for IDs derived from its message's ID
    (``ctx.tell``) and for window keys: two senders' messages with the same ID get different
    keys, and no client ID (any string) can be mistaken for the sender part."""
    return key_of(sender, "") if sender is not None else "n0:"


def key_of(sender: Sender, message_id: str) -> str:
    """The window's key of ``sender``'s ``message_id``: its derived prefix, then the ID (one
    string, so a window is one flat dict, as small as a window without senders)."""
    if isinstance(sender, str):
        return f"c{len(sender)}:{sender}{message_id}"
    name = sender[1] if len(sender) > 1 else ""
    return f"{sender[0]}{len(name)}:{name}{message_id}"


def _sender_of_key(key: str) -> Sender:
    """The sender of a window key (the inverse of :func:`key_of`'s prefix)."""
    colon = key.index(":")
    name, tag = key[colon + 1:colon + 1 + int(key[1:colon])], key[0]
    return name if tag == "c" else (tag, name) if name else (tag,)


class ReplyWindow:
    """Recent message IDs per sender with their reply records. See the module docstring.

    One flat insertion-ordered dict ``entries`` (key: :func:`key_of`), so a small entity's
    window costs what a window without senders cost. The number of IDs per sender
    (``counts``) is kept only once the window holds more than ``per_sender`` IDs (before
    that no sender can be over its share): small entities never pay for it. A sender over
    ``per_sender`` loses its oldest IDs, an eighth of ``per_sender`` at once (one walk from
    the oldest entry per eighth, not per message), so it keeps between ~7/8 of
    ``per_sender`` and ``per_sender``. Over ``total``, the oldest ID of all goes."""

    __slots__ = ("entries", "counts", "legacy")

    def __init__(self) -> None:
        self.entries: dict[str, list[Any]] = {}
        self.counts: dict[Sender, int] | None = None
        self.legacy = False
        """Holds entries of unknown sender (loaded from before senders were kept)."""

    @property
    def size(self) -> int:
        return len(self.entries)

    def count(self, sender: Sender) -> int:
        """How many IDs of ``sender`` the window holds."""
        prefix = key_of(sender, "")
        return sum(1 for key in self.entries if key.startswith(prefix))

    def get(self, sender: Sender, message_id: str) -> list[Any] | None:
        record = self.entries.get(key_of(sender, message_id))
        if record is None and self.legacy:
            record = self.entries.get(key_of(LEGACY, message_id))
        return record

    def put(self, sender: Sender, message_id: str, record: list[Any], per_sender: int, total: int) -> None:
        entries = self.entries
        key = key_of(sender, message_id)
        known = key in entries
        entries[key] = OK_RECORD if record == OK_RECORD else record
        if known:
            return
        if sender == LEGACY:
            self.legacy = True
        counts = self.counts
        if counts is None:
            if len(entries) <= per_sender:
                return
            counts = self.counts = {}
            for k in entries:
                s = _sender_of_key(k)
                counts[s] = counts.get(s, 0) + 1
            n = counts[sender]
        else:
            n = counts[sender] = counts.get(sender, 0) + 1
        if n > per_sender:
            self._evict_oldest_of(sender, n - per_sender + per_sender // 8)
        while len(entries) > total:
            oldest = next(iter(entries))
            del entries[oldest]
            self._uncount(_sender_of_key(oldest), 1)

    def _evict_oldest_of(self, sender: Sender, how_many: int) -> None:
        prefix = key_of(sender, "")
        doomed = []
        for key in self.entries:
            if key.startswith(prefix):  # prefixes are self-delimiting: only this sender's keys
                doomed.append(key)
                if len(doomed) == how_many:
                    break
        for key in doomed:
            del self.entries[key]
        self._uncount(sender, len(doomed))

    def _uncount(self, sender: Sender, n: int) -> None:
        assert self.counts is not None
        left = self.counts[sender] - n
        if left:
            self.counts[sender] = left
        else:
            del self.counts[sender]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReplyWindow) and list(self.entries.items()) == list(other.entries.items())

    def __repr__(self) -> str:
        return f"ReplyWindow({len(self.entries)} IDs of {len(self.counts)} senders)"

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
            for message_id, record in data.items():
                if record[0]:
                    window.entries[key_of(LEGACY, message_id)] = record
        else:
            window.entries = dict(data[0])
        window.legacy = any(key.startswith("l0:") for key in window.entries)
        return window if window.entries else None
