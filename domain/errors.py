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


class ProxyError(DomainError):
    """Raised (by :meth:`domain.proxy.ProxyAnswer.raise_for_error`) when a state proxy could
    not reach its primary; root of the proxy's typed errors. ``last_known`` is the state
    the proxy still holds (a map: ``state``, ``version``, ``etag``, ``at``, ``received_at``,
    ``age``; ``state`` None when it never heard of any) and ``age`` its age in seconds."""

    code = "proxy_error"

    def __init__(self, reason: str = "", last_known: dict[str, object] | None = None) -> None:
        super().__init__(reason)
        self.last_known = dict(last_known or {})
        age = self.last_known.get("age")
        self.age: float | None = age if isinstance(age, (int, float)) else None


class ProxyBusy(ProxyError):
    """Raised when a command reaches a state proxy while a call to its primary (a command
    and its pull, or a pull) is in flight: nothing else may reach the primary between a
    command and its pull, so the command is refused (never queued); sending it again (same
    message ID) later is safe."""

    code = "proxy_busy"
    retryable = True


class PrimaryTimeout(ProxyError):
    """Raised when the primary did not answer within the proxy's timeout."""

    code = "primary_timeout"
    retryable = True


class PrimaryUnavailable(ProxyError):
    """Raised when the primary could not be reached or failed (after the connector's retries)."""

    code = "primary_unavailable"
    retryable = True


class CircuitOpen(PrimaryUnavailable):
    """Raised when the connector's circuit breaker is open: the primary failed repeatedly
    and is not called again until the breaker's pause is over."""

    code = "circuit_open"


class PrimaryRefused(ProxyError):
    """Raised when the primary refused the call (a 4xx answer: e.g. an invalid command)."""

    code = "primary_refused"


class OutcomeUnknown(ProxyError):
    """Raised when a command's result was lost (its node failed mid-call) and the primary
    does not honour idempotency keys, so re-sending could apply it twice: the command may
    or may not have been applied; pull to find out."""

    code = "outcome_unknown"


class NoConnector(ProxyError):
    """Raised when the process has no connector for the proxy's category (see
    ``XPLATFORM_PROXY_PRIMARIES``)."""

    code = "no_connector"


PROXY_ERRORS: dict[str, type[ProxyError]] = {
    cls.code: cls for cls in (ProxyBusy, PrimaryTimeout, PrimaryUnavailable, CircuitOpen, PrimaryRefused, OutcomeUnknown,
                              NoConnector)
}
"""A remote result's error code → its typed error."""
