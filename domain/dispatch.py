"""Processing one message by one entity: the pure core shared by the runtime and the sandbox.

:func:`handle` routes an inbound message to the entity's handler and returns an
:class:`Outcome`: the new events, the effects and the reply. It does no I/O and never waits;
the caller decides when the effects leave (the runtime: after the events are durable).

If the handler fails, the outcome has ``restore=True`` when events were already triggered
(the in-memory entity is then ahead of what the message may change): the caller must
rebuild the entity from its durable events. Nothing of a failed message is kept. A handler
that raised something other than a :class:`DomainError` (a bug) is answered with a generic
``handler_failed``; the exception is in ``Outcome.failure`` for the caller to log (senders
never see exception text).

Idempotency is per sender (:mod:`domain.idempotency`): :func:`sender_of` names the sender,
a duplicate of one of its processed IDs gets the original reply and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from domain.context import Context
from domain.effects import Effect, Reply
from domain.entity import GRACE_TIMER, Entity
from domain.errors import (
    DomainError,
    EntityNotFound,
    HandlerFailed,
    NotAuthorised,
    NotConnected,
    TooManyConnections,
    UnknownMessageType,
)
from domain.idempotency import OK_RECORD, STANDARD, TIMERS, client_sender, connection_sender, entity_sender
from domain.messages import ClientMessage, Connect, EntityMessage, Inbound, Terminated, TimerFired

HANDLER_FAILED_REASON = "the entity could not process the message"
"""What a sender is told when a handler fails with a bug (the detail is logged on the node)."""


@dataclass(slots=True)
class Outcome:
    """Result of :func:`handle`. ``timers_armed``/``timers_disarmed`` are timer keys whose
    schedule changed (the runtime re-arms them from ``entity.timers()``)."""

    reply: Reply
    events: Sequence[Any] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    timers_armed: list[str] = field(default_factory=list)
    timers_disarmed: list[str] = field(default_factory=list)
    duplicate: bool = False
    restore: bool = False
    failure: BaseException | None = None
    """The exception of a handler that failed with a bug (not sent to anyone: log it)."""

    @property
    def outcome_label(self) -> str:
        """Bounded label for metrics: ok, duplicate, or the error code."""
        if self.duplicate:
            return "duplicate"
        return "ok" if self.reply.ok else self.reply.code


def sender_of(entity: Entity, message: Inbound) -> str | None:
    """Who sent ``message``, as its prefix (see :mod:`domain.idempotency`); None for a
    client message on a connection the entity does not know (refused anyway)."""
    if isinstance(message, ClientMessage):
        record = entity._connections.get(message.connection_id)
        if record is None:
            return None
        sub = record[0].get("sub")
        return client_sender(sub) if isinstance(sub, str) and sub else connection_sender(message.connection_id)
    if isinstance(message, EntityMessage):
        return entity_sender(message.sender)
    if isinstance(message, TimerFired):
        return TIMERS
    return STANDARD  # Connect, Terminated: from the edge


def handle(entity: Entity, message: Inbound) -> Outcome:
    """Process ``message`` with ``entity``. See the module docstring."""
    message_id = message.message_id
    sender = sender_of(entity, message)
    if sender is not None:
        seen = entity.seen_reply(sender, message_id)
        if seen is not None:
            return Outcome(reply=Reply.from_record(message_id, seen), duplicate=True)

    ctx = Context(entity, message, sender)
    try:
        _route(entity, ctx, message)
    except DomainError as exc:
        return _failed(entity, message, sender, exc)
    except Exception as exc:  # a bug in the entity: refuse, restore, keep serving
        outcome = _failed(entity, message, sender, HandlerFailed(HANDLER_FAILED_REASON))
        outcome.failure = exc
        return outcome

    events = entity.collect_events()
    payload = ctx.reply_payload
    reply = Reply(message_id, True, payload)
    if sender is not None and not isinstance(message, Connect):
        # A Connect is idempotent by connection ID instead (a repeated connect of a live
        # connection changes nothing and answers with the current state); keeping its
        # reply, a copy of the state, would cost every small entity hundreds of bytes.
        record = OK_RECORD if payload is None else reply.to_record()
        if events:
            last = events[-1]
            object.__setattr__(last, "_xp_mid", message_id)
            object.__setattr__(last, "_xp_reply", record)
            object.__setattr__(last, "_xp_from", sender)
        entity._xp_remember(sender, message_id, record)
    return Outcome(reply, events, ctx.effects, ctx.timers_armed, ctx.timers_disarmed)


def _failed(entity: Entity, message: Inbound, sender: str | None, exc: DomainError) -> Outcome:
    triggered = entity.collect_events()
    reply = Reply(message.message_id, False, None, exc.code, exc.reason, exc.retryable)
    # A refused Connect is answered by this reply alone: the edge that asked terminates the
    # socket. No Terminate effect: it would reach every edge holding that connection ID,
    # and end the live connection of the user whose ID another user tried to reuse.
    if not triggered and not exc.retryable and sender is not None and not isinstance(message, Connect):
        # Nothing changed: remember the refusal so a duplicate from the same sender gets
        # the same answer while the entity stays resident. Apart from the durable window:
        # refusals never evict a result, and they are not persisted.
        entity._xp_refuse(sender, message.message_id, reply.to_record())
    return Outcome(reply, restore=bool(triggered))


def _route(entity: Entity, ctx: Context, m: Inbound) -> None:
    handlers = type(entity)._xp_handlers
    if isinstance(m, ClientMessage):
        if not entity.is_live(m.connection_id):
            raise NotConnected(f"connection {m.connection_id} is not connected to {entity.ref}")
        data = dict(entity.decode_payload(m.payload))
        message_type = data.pop("type")
        _call(handlers, ("client", message_type), entity, ctx, data)
    elif isinstance(m, EntityMessage):
        _call(handlers, ("entity", m.type), entity, ctx, dict(m.data))
    elif isinstance(m, Connect):
        _connect(entity, ctx, m)
    elif isinstance(m, Terminated):
        _terminated(entity, ctx, m)
    elif isinstance(m, TimerFired):
        _timer_fired(entity, ctx, m)
    else:
        raise UnknownMessageType(f"unsupported message kind {type(m).__name__}")


def _call(handlers: dict[Any, Any], key: tuple[str, str], entity: Entity, ctx: Context, data: dict[str, Any]) -> None:
    handler = handlers.get(key)
    if handler is None:
        raise UnknownMessageType(f"{entity.CATEGORY} has no {key[0]} message handler for {key[1]!r}")
    handler.check(data)
    result = handler.func(entity, ctx, **data)
    if result is not None and ctx.reply_payload is None:
        ctx.reply(result)


def _connect(entity: Entity, ctx: Context, m: Connect) -> None:
    known = entity._connections.get(m.connection_id)
    sub = m.claims.get("sub")
    if known is not None and known[0].get("sub") != sub:
        raise NotAuthorised("connection ID is in use by another user")
    claims = entity.stored_claims(m.claims)
    if entity.version < type(entity).INITIAL_VERSION and not entity.may_create(ctx, m.claims):
        raise EntityNotFound(f"{entity.ref} does not exist")
    cap = entity.MAX_CONNECTIONS_PER_USER
    if known is None and cap and entity.live_count_of(sub) >= cap:
        raise TooManyConnections(f"at most {cap} connections per user to {entity.ref}")
    initial = entity.on_connect(ctx, m.claims, known is not None)
    if known is None:
        entity._accept_connection(connection_id=m.connection_id, claims=claims, session=m.message_id)
    else:
        # A new socket for a known connection (a reconnect, maybe through another edge):
        # it becomes the connection's session, so the old socket's late Terminated is ignored.
        if dict(known[0]) != claims:  # refreshed token: keep the new claims
            entity._accept_connection(connection_id=m.connection_id, claims=claims, session=m.message_id)
        else:
            entity._resume_connection(connection_id=m.connection_id, session=m.message_id)
        ctx.cancel_timer(f"{GRACE_TIMER}:{m.connection_id}")
    if ctx.reply_payload is None:
        ctx.reply(initial)
    entity.on_joined(ctx, m.connection_id, m.claims, known is not None)


def _terminated(entity: Entity, ctx: Context, m: Terminated) -> None:
    record = entity._connections.get(m.connection_id)
    if record is None or not record[1]:
        return  # unknown or already dropped: nothing to do, and nothing changes
    if m.session and len(record) > 2 and record[2] and record[2] != m.session:
        return  # the socket that died is not the connection's current one: it was resumed since
    claims = record[0]
    entity._drop_connection(connection_id=m.connection_id, reason=m.reason)
    entity.on_disconnect(ctx, m.connection_id, claims, m.reason)  # after the drop: live views exclude it
    if entity.GRACE_PERIOD > 0:
        ctx.start_timer(GRACE_TIMER, entity.GRACE_PERIOD, key=f"{GRACE_TIMER}:{m.connection_id}", connection_id=m.connection_id)
    else:
        entity.on_leave(ctx, m.connection_id, claims)
        entity._forget_connection(connection_id=m.connection_id)


def _timer_fired(entity: Entity, ctx: Context, m: TimerFired) -> None:
    if entity.timer(m.key) is None:
        return  # cancelled or already fired: a stale firing changes nothing
    entity._stop_timer(key=m.key)
    if m.name == GRACE_TIMER:
        cid = m.data["connection_id"]
        record = entity._connections.get(cid)
        if record is not None and not record[1]:
            entity.on_leave(ctx, cid, record[0])
            entity._forget_connection(connection_id=cid)
        return
    _call(type(entity)._xp_handlers, ("timer", m.name), entity, ctx, dict(m.data))
