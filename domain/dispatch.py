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

The platform's part of a message (who sent it, whether it is a duplicate, what is
remembered of its outcome, the standard connect/terminated/timer messages) is the rule
set of the entity's :class:`~domain.platform_part.PlatformPart` (``entity.platform``);
this module calls it and the entity's own handlers. Idempotency is per sender
(:mod:`domain.idempotency`): a duplicate of a sender's processed ID gets the original reply
and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from domain.context import Context
from domain.effects import Effect, Reply
from domain.entity import Entity
from domain.errors import DomainError, HandlerFailed, NotConnected, UnknownMessageType
from domain.messages import ClientMessage, Connect, EntityMessage, Inbound, RemoteResult, Terminated, TimerFired
from domain.platform_part import PlatformPart

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


def handle(entity: Entity, message: Inbound) -> Outcome:
    """Process ``message`` with ``entity``. See the module docstring."""
    platform = entity.platform
    message_id = message.message_id
    sender = platform.sender_of(message)
    if sender is not None:
        seen = platform.outcome_of(sender, message_id)
        if seen is not None:
            return Outcome(reply=Reply.from_record(message_id, seen), duplicate=True)

    ctx = Context(entity, message, sender)
    try:
        _route(entity, platform, ctx, message)
    except DomainError as exc:
        return _failed(entity, message, sender, exc)
    except Exception as exc:  # a bug in the entity: refuse, restore, keep serving
        outcome = _failed(entity, message, sender, HandlerFailed(HANDLER_FAILED_REASON))
        outcome.failure = exc
        return outcome

    events = entity.collect_events()
    reply = Reply(message_id, True, ctx.reply_payload)
    if sender is not None:
        platform.succeeded(entity, message, sender, reply, events)
    return Outcome(reply, events, ctx.effects, ctx.timers_armed, ctx.timers_disarmed)


def _failed(entity: Entity, message: Inbound, sender: str | None, exc: DomainError) -> Outcome:
    triggered = entity.collect_events()
    reply = Reply(message.message_id, False, None, exc.code, exc.reason, exc.retryable)
    # A refused Connect is answered by this reply alone: the edge that asked terminates the
    # socket. No Terminate effect: it would reach every edge holding that connection ID,
    # and end the live connection of the user whose ID another user tried to reuse.
    if not triggered and sender is not None:
        entity.platform.failed(entity, message, sender, reply)
    return Outcome(reply, restore=bool(triggered))


def _route(entity: Entity, platform: PlatformPart, ctx: Context, m: Inbound) -> None:
    handlers = type(entity).HANDLERS
    if isinstance(m, ClientMessage):
        if not platform.is_live(m.connection_id):
            raise NotConnected(f"connection {m.connection_id} is not connected to {entity.ref}")
        data = dict(entity.decode_payload(m.payload))
        message_type = data.pop("type")
        _call(handlers, ("client", message_type), entity, ctx, data)
    elif isinstance(m, EntityMessage):
        _call(handlers, ("entity", m.type), entity, ctx, dict(m.data))
    elif isinstance(m, Connect):
        platform.connect(entity, ctx, m)
    elif isinstance(m, Terminated):
        platform.terminated(entity, ctx, m)
    elif isinstance(m, TimerFired):
        if platform.fire_timer(entity, ctx, m):
            _call(handlers, ("timer", m.name), entity, ctx, dict(m.data))
    elif isinstance(m, RemoteResult):  # only state proxies ask for remote calls (domain/proxy.py)
        on_result = getattr(entity, "on_remote_result", None)
        if on_result is None:
            raise UnknownMessageType(f"{entity.CATEGORY} is not a state proxy: no remote results")
        on_result(ctx, m)
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
