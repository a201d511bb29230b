"""The platform part of an entity: its connections, timers, owner epoch and the outcomes of
the messages it processed, with the rules that keep them.

Every :class:`~domain.entity.Entity` holds one :class:`PlatformPart` (``entity.platform``).
It is the only owner of that state: :mod:`domain.dispatch` (the message loop),
:class:`~domain.context.Context` (the handler's view), the entity's public queries
(``live_connections()``, ``timer()``, ...) and the state node's takeover all go through
its public API. What it decides is recorded as the entity's platform events
(``ConnectionAccepted``, ``TimerStarted``, ... declared on :class:`~domain.entity.Entity`,
where their stored topics have always been); their ``apply`` hands the change back here.

The rules:

- **Connections.** A connect of a new connection ID is accepted when the entity may be
  created by it (``may_create``), its kept claims (``STORED_CLAIMS``) are plain and small,
  and the user holds fewer than ``MAX_CONNECTIONS_PER_USER`` live connections; a connect of
  a known ID is a reconnect (only by the same ``sub``) and makes the new socket the
  connection's session. A ``Terminated`` drops a live connection unless it names an older
  session; a dropped connection is kept ``GRACE_PERIOD`` seconds (a grace timer) before
  ``on_leave`` runs and it is forgotten.
- **Timers.** Durable (events), keyed; a firing of a timer that was cancelled or already
  fired changes nothing.
- **Idempotency** (see :mod:`domain.idempotency`). The outcome of every processed message is
  remembered per sender: a success durably (its message ID, reply and sender travel on the
  message's last event, :meth:`~domain.entity.EntityEvent.carry_outcome`, and on replay the
  event puts them back), a refusal that changed nothing only while resident. A Connect is
  idempotent by connection ID instead.

State layout: in memory, slots; in a snapshot, the entity attributes the platform wrote
before this part had one owner (``_connections``, ``_timers``, ``_seen``, ``_live``,
``_epoch``; :meth:`to_snapshot`), so snapshots of either version load in the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from domain.effects import Reply
from domain.errors import BadClaims, EntityNotFound, NotAuthorised, TooManyConnections
from domain.idempotency import OK_RECORD, REMOTE, STANDARD, TIMERS, ReplyWindow, client_sender, connection_sender, entity_sender
from domain.messages import ClientMessage, Connect, EntityMessage, Inbound, RemoteResult, Terminated, TimerFired

if TYPE_CHECKING:
    from domain.context import Context
    from domain.entity import Entity

GRACE_TIMER = "_grace"
"""Timer name the platform uses for the reconnect grace period of a dropped connection."""


class PlatformPart:
    """What the platform keeps of one entity, and its rules. See the module docstring.

    Kept small on purpose (1M+ small entities must fit): one slotted object; timers and the
    windows exist from first use; a connection record is ``[kept claims, live, session]``."""

    __slots__ = ("connections", "timers", "seen", "refused", "live", "subs", "epoch")

    def __init__(self) -> None:
        self.connections: dict[str, list[Any]] = {}
        """Connection ID -> [kept claims, live, session (the Connect's message ID)]."""
        self.timers: dict[str, list[Any]] | None = None
        """Timer key -> [due epoch seconds, handler name, data]; None: no timer."""
        self.seen: ReplyWindow | None = None
        """Outcomes of processed messages (durable: events and snapshots); None: none yet."""
        self.refused: ReplyWindow | None = None
        """Refusals remembered while resident (never stored); None: none yet."""
        self.live = -1
        """Live connections, kept by the connection events; -1: count them on first ask."""
        self.subs: dict[Any, int] | None = None
        """Live connections per ``sub``, built on first need (only an entity with at least
        MAX_CONNECTIONS_PER_USER connections needs it); resident only."""
        self.epoch = 0
        """Ownership epoch of the last takeover marker in the stream (0: never moved)."""

    def __eq__(self, other: object) -> bool:
        """Equal durable state (what a snapshot keeps; refusals and ``subs`` are resident only)."""
        return isinstance(other, PlatformPart) and (
            self.connections, self.timers, self.seen, self.live, self.epoch) == (
            other.connections, other.timers, other.seen, other.live, other.epoch)

    def __repr__(self) -> str:
        return (f"PlatformPart({len(self.connections)} connections, {len(self.timers or ())} timers, "
                f"{self.seen!r}, epoch {self.epoch})")

    # ----------------------------------------------------------------- snapshots
    def to_snapshot(self, state: dict[str, Any]) -> None:
        """Write this part into a snapshot's ``state`` (see the module docstring)."""
        state["_connections"] = self.connections
        state["_timers"] = self.timers
        state["_seen"] = None if self.seen is None else self.seen.to_data()
        if self.live >= 0:
            state["_live"] = self.live
        if self.epoch:
            state["_epoch"] = self.epoch

    @classmethod
    def from_snapshot(cls, state: dict[str, Any]) -> PlatformPart:
        """Take this part out of a snapshot's ``state`` (removing its keys): today's layout,
        the same as before the part had one owner, or the older flat ``_seen`` dict of
        snapshots written before senders were kept (see :meth:`ReplyWindow.from_data`)."""
        part = cls()
        part.connections = state.pop("_connections", None) or {}
        part.timers = state.pop("_timers", None) or None
        part.seen = ReplyWindow.from_data(state.pop("_seen", None))
        part.live = state.pop("_live", -1)
        part.epoch = state.pop("_epoch", 0)
        return part

    # ----------------------------------------------------------------- connections: queries
    def claims_of(self, connection_id: str) -> Mapping[str, Any] | None:
        """Kept claims of an accepted connection (live or within its grace period)."""
        record = self.connections.get(connection_id)
        return None if record is None else record[0]

    def is_live(self, connection_id: str) -> bool:
        record = self.connections.get(connection_id)
        return bool(record and record[1])

    def has_live(self) -> bool:
        """Any live connection? From the kept count (no walk over the connections)."""
        live = self.live
        return (live if live >= 0 else self.live_count()) > 0

    def live_connections(self) -> dict[str, Mapping[str, Any]]:
        return {cid: rec[0] for cid, rec in self.connections.items() if rec[1]}

    def live_count(self) -> int:
        """How many connections are live, without walking them (kept by the events)."""
        if self.live < 0:
            self.live = sum(1 for record in self.connections.values() if record[1])
        return self.live

    def live_count_of(self, sub: Any, cap: int) -> int:
        """How many live connections the user ``sub`` holds (counted per user once the
        entity holds ``cap`` connections or more)."""
        if len(self.connections) < cap:
            return sum(1 for record in self.connections.values() if record[1] and record[0].get("sub") == sub)
        if self.subs is None:
            subs: dict[Any, int] = {}
            for record in self.connections.values():
                if record[1]:
                    key = record[0].get("sub")
                    subs[key] = subs.get(key, 0) + 1
            self.subs = subs
        return self.subs.get(sub, 0)

    @staticmethod
    def stored_claims(entity: Entity, claims: Mapping[str, Any]) -> dict[str, Any]:
        """The claims kept of a connection (``STORED_CLAIMS``); raise BadClaims when a kept
        value is larger than ``MAX_CLAIM_CHARS`` or not a plain value (or list of them)."""
        kept = {name: claims[name] for name in ("sub", *entity.STORED_CLAIMS) if name in claims}  # sub: always
        for name, value in kept.items():
            items = value if isinstance(value, list) else [value]
            if not all(v is None or isinstance(v, (str, int, float, bool)) for v in items) \
                    or sum(len(str(v)) for v in items) > entity.MAX_CLAIM_CHARS:
                raise BadClaims(f"claim {name!r} must be a value (or list) of at most {entity.MAX_CLAIM_CHARS} characters")
        return kept

    # ----------------------------------------------------------------- connections: rules
    def connect(self, entity: Entity, ctx: Context, m: Connect) -> None:
        """A client connects (or reconnects with a known connection ID). See the module docstring."""
        known = self.connections.get(m.connection_id)
        sub = m.claims.get("sub")
        if known is not None and known[0].get("sub") != sub:
            raise NotAuthorised("connection ID is in use by another user")
        claims = entity.stored_claims(m.claims)  # (an entity may narrow it further)
        if entity.version < type(entity).INITIAL_VERSION and not entity.may_create(ctx, m.claims):
            raise EntityNotFound(f"{entity.ref} does not exist")
        cap = entity.MAX_CONNECTIONS_PER_USER
        if known is None and cap and self.live_count_of(sub, cap) >= cap:
            raise TooManyConnections(f"at most {cap} connections per user to {entity.ref}")
        initial = entity.on_connect(ctx, m.claims, known is not None)
        if known is None or dict(known[0]) != claims:  # new, or a refreshed token: keep the new claims
            entity.trigger_event(entity.ConnectionAccepted, connection_id=m.connection_id, claims=claims,
                                 session=m.message_id)
        else:
            # A new socket for a known connection (a reconnect, maybe through another edge):
            # it becomes the connection's session, so the old socket's late Terminated is ignored.
            entity.trigger_event(entity.ConnectionResumed, connection_id=m.connection_id, session=m.message_id)
        if known is not None:
            ctx.cancel_timer(f"{GRACE_TIMER}:{m.connection_id}")
        if ctx.reply_payload is None:
            ctx.reply(initial)
        entity.on_joined(ctx, m.connection_id, m.claims, known is not None)

    def terminated(self, entity: Entity, ctx: Context, m: Terminated) -> None:
        """A client's socket is gone: drop the connection, keep it for the grace period."""
        record = self.connections.get(m.connection_id)
        if record is None or not record[1]:
            return  # unknown or already dropped: nothing to do, and nothing changes
        if m.session and len(record) > 2 and record[2] and record[2] != m.session:
            return  # the socket that died is not the connection's current one: it was resumed since
        claims = record[0]
        entity.trigger_event(entity.ConnectionDropped, connection_id=m.connection_id, reason=m.reason)
        entity.on_disconnect(ctx, m.connection_id, claims, m.reason)  # after the drop: live views exclude it
        if entity.GRACE_PERIOD > 0:
            ctx.start_timer(GRACE_TIMER, entity.GRACE_PERIOD, key=f"{GRACE_TIMER}:{m.connection_id}",
                            connection_id=m.connection_id)
        else:
            entity.on_leave(ctx, m.connection_id, claims)
            entity.trigger_event(entity.ConnectionForgotten, connection_id=m.connection_id)

    # ----------------------------------------------------------------- connections: applied by events
    def accepted(self, connection_id: str, claims: dict[str, Any], session: str) -> None:
        old = self.connections.get(connection_id)
        record = self.connections[connection_id] = [claims, True, session]
        self._count_live(record, bool(old and old[1]), True)

    def dropped(self, connection_id: str) -> None:
        record = self.connections[connection_id]
        self._count_live(record, bool(record[1]), False)
        record[1] = False

    def resumed(self, connection_id: str, session: str) -> None:
        record = self.connections[connection_id]
        self._count_live(record, bool(record[1]), True)
        record[1] = True
        if len(record) > 2:
            record[2] = session
        else:
            record.append(session)

    def forgotten(self, connection_id: str) -> None:
        record = self.connections.pop(connection_id, None)
        if record is not None:
            self._count_live(record, bool(record[1]), False)

    def _count_live(self, record: list[Any], was: bool, now: bool) -> None:
        if was != now:
            if self.live >= 0:
                self.live += 1 if now else -1
            subs = self.subs
            if subs is not None:
                sub = record[0].get("sub")
                left = subs.get(sub, 0) + (1 if now else -1)
                if left > 0:
                    subs[sub] = left
                else:
                    subs.pop(sub, None)

    # ----------------------------------------------------------------- timers
    def timer(self, key: str) -> tuple[float, str, Mapping[str, Any]] | None:
        """The pending timer ``key``, if any: (due, handler name, data)."""
        timers = self.timers
        spec = None if timers is None else timers.get(key)
        return None if spec is None else (spec[0], spec[1], spec[2])

    def start_timer(self, entity: Entity, key: str, name: str, due: float, data: dict[str, Any]) -> None:
        """Start (or restart) timer ``key``: ``@timer(name)`` runs at ``due``."""
        entity.trigger_event(entity.TimerStarted, key=key, name=name, due=due, data=data)

    def stop_timer(self, entity: Entity, key: str) -> bool:
        """Cancel timer ``key``; False when there is none (nothing recorded)."""
        if self.timers is None or key not in self.timers:
            return False
        entity.trigger_event(entity.TimerStopped, key=key)
        return True

    def fire_timer(self, entity: Entity, ctx: Context, m: TimerFired) -> bool:
        """A timer is due: True when the entity's ``@timer`` handler is to run. A stale
        firing (cancelled, or fired already) changes nothing; the grace timer is the
        platform's own (``on_leave``, then the connection is forgotten)."""
        if not self.stop_timer(entity, m.key):
            return False  # cancelled or already fired: a stale firing changes nothing
        if m.name != GRACE_TIMER:
            return True
        cid = m.data["connection_id"]
        record = self.connections.get(cid)
        if record is not None and not record[1]:
            entity.on_leave(ctx, cid, record[0])
            entity.trigger_event(entity.ConnectionForgotten, connection_id=cid)
        return False

    def timer_started(self, key: str, name: str, due: float, data: dict[str, Any]) -> None:
        if self.timers is None:
            self.timers = {}
        self.timers[key] = [due, name, data]

    def timer_stopped(self, key: str) -> None:
        if self.timers is not None:
            self.timers.pop(key, None)
            if not self.timers:
                self.timers = None

    # ----------------------------------------------------------------- ownership
    def take_ownership(self, entity: Entity, epoch: int, node: str) -> None:
        """Record the takeover marker a new owner writes before it serves the entity: a
        zombie owner's next append expects the version before it and fails."""
        entity.trigger_event(entity.OwnerChanged, epoch=epoch, node=node)

    # ----------------------------------------------------------------- idempotency
    def sender_of(self, message: Inbound) -> str | None:
        """Who sent ``message``, as its prefix (see :mod:`domain.idempotency`); None for a
        client message on a connection the entity does not know (refused anyway)."""
        if isinstance(message, ClientMessage):
            record = self.connections.get(message.connection_id)
            if record is None:
                return None
            sub = record[0].get("sub")
            return client_sender(sub) if isinstance(sub, str) and sub else connection_sender(message.connection_id)
        if isinstance(message, EntityMessage):
            return entity_sender(message.sender)
        if isinstance(message, TimerFired):
            return TIMERS
        if isinstance(message, RemoteResult):
            return REMOTE
        return STANDARD  # Connect, Terminated: from the edge

    def outcome_of(self, sender: str, message_id: str) -> list[Any] | None:
        """The reply record of ``sender``'s message ``message_id`` if already processed
        (a result, or a refusal while resident), else None."""
        seen = self.seen
        record = None if seen is None else seen.get(sender, message_id)
        if record is None and self.refused is not None:
            record = self.refused.get(sender, message_id)
        return record

    def succeeded(self, entity: Entity, message: Inbound, sender: str, reply: Reply, events: Sequence[Any]) -> None:
        """Remember a processed message's outcome, durably: it travels on the message's last
        event. A Connect is idempotent by connection ID instead (a repeated connect of a live
        connection changes nothing and answers with the current state); keeping its reply,
        a copy of the state, would cost every small entity hundreds of bytes."""
        if isinstance(message, Connect):
            return
        record = OK_RECORD if reply.payload is None else reply.to_record()
        message_id = reply.message_id
        if events:
            events[-1].carry_outcome(sender, message_id, record)
        seen = self.seen  # (remember(), inlined: this runs for every message)
        if seen is None:
            seen = self.seen = ReplyWindow()
        seen.put(sender, message_id, record, entity.DEDUP_PER_SENDER, entity.DEDUP_WINDOW)

    def failed(self, entity: Entity, message: Inbound, sender: str, reply: Reply) -> None:
        """A message was refused and changed nothing: remember the refusal so a duplicate
        from the same sender gets the same answer while the entity stays resident. Apart from
        the durable window: refusals never evict a result, and they are not persisted. A
        refused Connect is not remembered (its edge terminates the socket), nor a retryable
        refusal (a retry is expected to succeed)."""
        if not reply.retryable and not isinstance(message, Connect):
            refused = self.refused
            if refused is None:
                refused = self.refused = ReplyWindow()
            refused.put(sender, reply.message_id, reply.to_record(), entity.DEDUP_PER_SENDER, entity.REFUSALS_KEPT)

    def remember(self, entity: Entity, sender: str, message_id: str, record: list[Any]) -> None:
        """Keep the outcome of a processed message (also called on replay by its last event)."""
        seen = self.seen
        if seen is None:
            seen = self.seen = ReplyWindow()
        seen.put(sender, message_id, record, entity.DEDUP_PER_SENDER, entity.DEDUP_WINDOW)
