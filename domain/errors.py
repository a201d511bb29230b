"""Errors of the entity SDK: one root, each with the wire code a sender sees.

Every error a message can end in is a subclass of :class:`DomainError`. The runtime turns
them into an error reply (``code`` + ``reason``) for the sender; the entity's state and
stream stay as they were before the message. ``retryable`` tells the sender whether the
same message (same message ID) may succeed when sent again.
"""

from __future__ import annotations


class DomainError(Exception):
    """Raised when a message cannot be processed; root of every SDK error."""

    code = "error"
    retryable = False

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason or self.__class__.__doc__ or self.code)
        self.reason = reason or self.code


class Rejected(DomainError):
    """Raised by a handler when business rules refuse the message (e.g. a bid too low)."""

    code = "rejected"


class NotAuthorised(Rejected):
    """Raised when the sender's connection or claims are not entitled to the message."""

    code = "not_authorised"


class UnknownMessageType(DomainError):
    """Raised when no handler of the entity declares the message's type."""

    code = "unknown_message_type"


class PayloadDecodeError(DomainError):
    """Raised when a client payload is not a msgpack map with a string ``type``, or its
    fields do not match the handler's parameters."""

    code = "bad_payload"


class HandlerFailed(DomainError):
    """Raised (by the platform) when a handler raised something other than a DomainError:
    a bug in the entity. The message is refused; the entity is restored."""

    code = "handler_failed"


class UnknownCategory(DomainError):
    """Raised when a message addresses a category no entity class is registered for."""

    code = "unknown_category"


class InvalidEntityId(DomainError):
    """Raised when an entity ID is empty, too long, or has control characters."""

    code = "invalid_entity_id"


class RetryLater(DomainError):
    """Raised when the message could not be applied for a transient reason (the stream
    was written concurrently, the store is unavailable, the shard is moving). Nothing
    was applied; sending the same message again is safe."""

    code = "retry"
    retryable = True


class EntityNotFound(Rejected):
    """Raised when a connect addresses an entity that does not exist and its category does
    not let this connection create it (:meth:`domain.entity.Entity.may_create`)."""

    code = "not_found"


class TooManyConnections(Rejected):
    """Raised when a user already holds ``MAX_CONNECTIONS_PER_USER`` live connections to
    the entity and connects with another connection ID."""

    code = "too_many_connections"


class BadClaims(NotAuthorised):
    """Raised when a claim the entity keeps (``STORED_CLAIMS``) is too large or not a plain
    value: nothing of the connection is stored."""

    code = "bad_claims"


class NotConnected(Rejected):
    """Raised when a client message arrives on a connection the entity has not accepted."""

    code = "not_connected"
