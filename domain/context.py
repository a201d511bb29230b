"""The handler's view of the message being processed, and where its effects are collected.

A :class:`Context` lives for one message. Handlers read the sender (connection and its
claims, or the sending entity) and the message time from it, and ask for effects through
it: a reply, client messages with target lookups, messages to other entities, terminations
and timers. Nothing leaves while the handler runs: if the handler fails, every effect is
dropped; if it succeeds, the runtime releases them once the message's events are durable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from domain.effects import Effect, Send, Target, Tell, Terminate, ToAllConnections, ToClaims, ToConnection
from domain.idempotency import NO_SENDER
from domain.messages import ClientMessage, Connect, EntityMessage, Inbound, Terminated
from domain.refs import EntityRef

if TYPE_CHECKING:
    from domain.entity import Entity


class Context:
    """Per-message handler context. See the module docstring."""

    __slots__ = ("entity", "message", "sender_key", "effects", "reply_payload", "timers_armed", "timers_disarmed",
                 "_tells")

    def __init__(self, entity: Entity, message: Inbound, sender_key: str | None = None) -> None:
        self.entity = entity
        self.message = message
        self.sender_key = sender_key
        """Who sent the message, as its idempotency prefix (:meth:`domain.platform_part.PlatformPart.sender_of`)."""
        self.effects: list[Effect] = []
        self.reply_payload: Any = None
        self.timers_armed: list[str] = []
        self.timers_disarmed: list[str] = []
        self._tells = 0

    # ----------------------------------------------------------------- who and when
    @property
    def message_id(self) -> str:
        return self.message.message_id

    @property
    def now(self) -> float:
        """Message time in epoch seconds (the edge's timestamp for client messages)."""
        return self.message.timestamp

    @property
    def connection_id(self) -> str | None:
        m = self.message
        if isinstance(m, (ClientMessage, Connect, Terminated)):
            return m.connection_id
        return None

    @property
    def claims(self) -> Mapping[str, Any] | None:
        """Claims of the sending connection: from the Connect itself, else as accepted."""
        m = self.message
        if isinstance(m, Connect):
            return m.claims
        cid = self.connection_id
        return None if cid is None else self.entity.platform.claims_of(cid)

    @property
    def sender(self) -> EntityRef | None:
        """The sending entity, for entity-to-entity messages."""
        return self.message.sender if isinstance(self.message, EntityMessage) else None

    # ----------------------------------------------------------------- effects
    def reply(self, payload: Any) -> None:
        """Set the payload of the (successful) reply to the sender."""
        self.reply_payload = payload

    def send(self, target: Target, payload: Any, coalesce_key: str | None = None) -> None:
        """Send ``payload`` to the client connections ``target`` selects."""
        self.effects.append(Send(target, payload, coalesce_key))

    def broadcast(self, payload: Any, coalesce_key: str | None = None) -> None:
        """Send to every connection of this entity; a ``coalesce_key`` lets edges keep only
        the newest such message per connection within a tick (state updates)."""
        if self.entity.platform.has_live():  # nobody live: nothing to send
            self.send(ToAllConnections(), payload, coalesce_key)

    def to_connection(self, connection_id: str, payload: Any) -> None:
        self.send(ToConnection(connection_id), payload)

    def to_claims(self, match: Mapping[str, Any], payload: Any) -> None:
        self.send(ToClaims(dict(match)), payload)

    def tell(self, to: EntityRef, message_type: str, **data: Any) -> None:
        """Send a message to another entity. Its message ID derives from this message's and
        its sender's (``<sender prefix><message ID>/<n>``), so a retried cause produces the
        same ID and the receiver deduplicates it, while the same ID sent by two senders
        derives two IDs."""
        self._tells += 1
        self.effects.append(Tell(to, message_type, data,
                                 f"{self.sender_key or NO_SENDER}{self.message_id}/{self._tells}"))

    def terminate(self, connection_id: str, reason: str, reconnect: bool = False) -> None:
        """Ask the edge to close a connection (forced logout, session over, ...)."""
        self.effects.append(Terminate(connection_id, reason, reconnect))

    # ----------------------------------------------------------------- timers
    def start_timer(self, name: str, delay: float, key: str | None = None, **data: Any) -> str:
        """Start (or restart) a durable timer; ``@timer(name)`` runs ``delay`` seconds after
        this message's time. ``key`` (default: ``name``) identifies it for cancelling."""
        key = key or name
        self.entity.platform.start_timer(self.entity, key, name, self.now + float(delay), dict(data))
        self.timers_armed.append(key)
        return key

    def cancel_timer(self, key: str) -> None:
        if self.entity.platform.stop_timer(self.entity, key):
            self.timers_disarmed.append(key)
