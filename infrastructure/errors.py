"""Errors of the infrastructure package: one root, translated at each adapter's boundary."""

from __future__ import annotations


class InfrastructureError(Exception):
    """Raised when the platform's machinery (not a domain rule) fails; root of this package."""


class ConfigurationError(InfrastructureError):
    """Raised at start when settings are missing, malformed or contradict each other."""


class PersistenceError(InfrastructureError):
    """Raised when the event store cannot be used (unreachable, failed, misconfigured)."""


class ConcurrencyConflict(PersistenceError):
    """Raised when an append's expected stream version is not the stream's version:
    someone else wrote the stream. Nothing of the append was stored."""


class CodecError(InfrastructureError):
    """Raised when a value cannot be encoded or decoded by the msgpack transcoder."""


class RuntimeStopped(InfrastructureError):
    """Raised when a message is given to a state node that is stopping or stopped."""


class TransportError(InfrastructureError):
    """Raised when a message cannot be routed to or answered by a state node."""
