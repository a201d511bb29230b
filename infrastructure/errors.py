"""Errors of the infrastructure package: one root, translated at each adapter's boundary."""

from __future__ import annotations


class InfrastructureError(Exception):
    """Raised when the platform's machinery (not a domain rule) fails; root of this package."""


class ConfigurationError(InfrastructureError):
    """Raised at start when settings are missing, malformed or contradict each other."""


class PersistenceError(InfrastructureError):
    """Raised when the event store cannot be used (unreachable, failed, misconfigured).
    ``transient``: whether the same call may succeed later unchanged (see StoreError)."""

    transient = False


class ConcurrencyConflict(PersistenceError):
    """Raised when an append's expected stream version is not the stream's version:
    someone else wrote the stream. Nothing of the append was stored."""


class StoreError(PersistenceError):
    """Raised when an event store server refuses or cannot answer a call. The client
    library's exception is the ``__cause__``; ``transient`` says whether the same call
    may succeed later unchanged (so a retry is worth it) or needs an operator."""

    transient = False


class StoreUnavailable(StoreError):
    """Raised when the event store cannot be reached: connection refused, name not
    resolved, no cluster member found, or the connection dropped mid-call. For an
    append whose connection dropped mid-call the outcome is unknown (see the adapter
    on how re-sending stays safe)."""

    transient = True


class StoreDeadlineExceeded(StoreError):
    """Raised when the event store did not answer within the configured deadline. For
    an append the outcome is unknown: it may have been written."""

    transient = True


class StoreNotLeader(StoreError):
    """Raised when a write reached a cluster node that is not the leader and following
    the redirect did not help. ``leader`` is the ``host:port`` the node named, if any."""

    transient = True

    def __init__(self, message: str, leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader


class StoreAuthenticationFailed(StoreError):
    """Raised when the event store rejects the configured credentials (wrong user or
    password, or none given where the server requires them)."""


class StoreAccessDenied(StoreError):
    """Raised when the credentials are valid but not allowed to do the operation
    (the stream's ACL or the server's default ACL forbids it)."""


class StoreTlsError(StoreError):
    """Raised when TLS cannot be agreed with the event store: the client expects TLS
    and the server speaks plaintext (or the reverse), or the server's certificate is
    not signed by the configured CA."""


class SubscriptionError(PersistenceError):
    """Raised when a subscription to the event store's event stream fails or is misused."""


class SubscriptionGroupNotFound(SubscriptionError):
    """Raised when a persistent subscription group does not exist (never created, or deleted)."""


class SubscriptionGroupExists(SubscriptionError):
    """Raised when creating a persistent subscription group whose name is already taken."""


class SubscriptionDropped(SubscriptionError):
    """Raised when the server ends a subscription the consumer did not stop (group
    updated or deleted, too many consumers, consumer too slow)."""


class CodecError(InfrastructureError):
    """Raised when a value cannot be encoded or decoded by the msgpack transcoder."""


class RuntimeStopped(InfrastructureError):
    """Raised when a message is given to a state node that is stopping or stopped."""


class WiringError(InfrastructureError):
    """Raised when a process is assembled wrongly: a state node started before it was given
    its router and outbound sink, or given them twice (``StateNode.connect``)."""


class TransportError(InfrastructureError):
    """Raised when a message cannot be routed to or answered by a state node."""


class ConnectorError(InfrastructureError):
    """Raised when a state proxy's connector cannot complete a call to the primary; ``code``
    is what the proxy's callers see (:mod:`domain.errors` ``ProxyError`` subclasses)."""

    code = "primary_unavailable"


class PrimaryUnreachable(ConnectorError):
    """Raised when the primary could not be reached or answered with a server error
    (after the connector's retries of idempotent calls)."""

    code = "primary_unavailable"


class PrimaryRefusedCall(ConnectorError):
    """Raised when the primary refused the call (HTTP 4xx, a malformed answer): never retried."""

    code = "primary_refused"


class CircuitOpenError(ConnectorError):
    """Raised when the connector's circuit breaker is open: the call is not attempted."""

    code = "circuit_open"


class ReadModelError(InfrastructureError):
    """Raised when a query of a read model cannot be answered as asked (the read port,
    :mod:`infrastructure.read_port`); ``code`` is the error the query API answers with."""

    code = "read_failed"


class UnknownReadModel(ReadModelError):
    """Raised when a query names a read model (projection) this process does not serve."""

    code = "unknown_projection"


class ReadNotAllowed(ReadModelError):
    """Raised when the caller's claims do not let it read the document (or any document of
    the read model): the projection decides (``Projection.read_filter`` / ``may_read``)."""

    code = "forbidden"


class DocumentNotFound(ReadModelError):
    """Raised when the read model has no (live) document under the key asked for."""

    code = "not_found"


class BadReadQuery(ReadModelError):
    """Raised when a query is malformed: a position token that is not ``<stream>@<version>``,
    a filter on a reserved field, a limit or a wait out of range."""

    code = "bad_request"


class ReadModelBehind(ReadModelError):
    """Raised when the read model did not reach the consistency a query asked for (the
    position of its read-your-writes token, or ``max_lag_ms``) within the query's wait:
    nothing is wrong with the query; retry later or read eventually consistent."""

    code = "consistency_timeout"


class ReadModelUnavailable(ReadModelError):
    """Raised when the read models cannot be reached: their database is down, still
    starting, or read models are off in this process (the reason says which)."""

    code = "read_models_unavailable"
