"""Errors of the edge package: one root, each naming what the client or operator sees.

Why typed: the public edge turns each refusal into a documented HTTP status or close code
(``edge/PROTOCOL.md``); a reason string would be matched by hand in several places.
"""

from __future__ import annotations

from infrastructure.errors import ConfigurationError

AUTH_REASONS = ("missing", "expired", "not_yet_valid", "bad_signature", "alg_not_allowed", "unknown_kid",
                "wrong_issuer", "wrong_audience", "malformed")
"""Every reason an :class:`AuthError` can carry (bounded: a Prometheus label)."""


class EdgeError(Exception):
    """Raised when an edge cannot accept a request, a frame or its configuration; root of this package."""


class EdgeConfigurationError(EdgeError, ConfigurationError):
    """Raised at start when edge settings (keys, networks, origins, iss/aud, dev tokens) are
    unusable. Also a :class:`~infrastructure.errors.ConfigurationError`, so ``xplatform``
    reports it like any other bad setting (exit 2, the message names the variables)."""


class AddressInUse(EdgeConfigurationError):
    """Raised at start when the edge's listen address is held by another process (often a
    second ``xplatform run``). The message names the address and the way out (``--port``)."""

    @classmethod
    def at(cls, host: str, port: int) -> AddressInUse:
        """The error for ``host:port``, worded the same wherever the port is bound."""
        return cls(f"cannot listen: {host}:{port} is already in use (another xplatform running?); stop that "
                   "process or pick another port with --port N (or XPLATFORM_EDGE_PORT; 0 = any free port)")


class AuthError(EdgeError):
    """Raised when a token is refused. ``reason`` is one of :data:`AUTH_REASONS`; the text
    never contains the token."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in AUTH_REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail or reason


class KeySourceError(EdgeError):
    """Raised when a JWKS file or URL cannot be read or parsed."""


class FrameError(EdgeError):
    """Raised when a client frame breaks the protocol; ``close_code`` is what the socket closes with."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason


class LimitError(EdgeError):
    """Raised when a new connection would put its user or its address over a connection cap;
    ``scope`` is ``user`` or ``ip`` (the upgrade is refused with HTTP 429)."""

    def __init__(self, scope: str, reason: str) -> None:
        super().__init__(f"{scope}: {reason}")
        self.scope = scope
        self.reason = reason


class ClientError(EdgeError):
    """Raised by the Python client (:mod:`edge.client`) when the edge refuses or ends a connection
    for good, or refuses a read; ``status`` is the HTTP status of a refused upgrade or read, or the
    close code."""

    def __init__(self, status: int, error: str, reason: str = "") -> None:
        super().__init__(f"{status} {error}: {reason}" if reason else f"{status} {error}")
        self.status = status
        self.error = error
        self.reason = reason


class RequestFailed(EdgeError):
    """Raised by :meth:`edge.client.Client.request` when waiting for a reply times out or the
    client was closed; an entity's error reply is not raised (it is a :class:`~edge.client.ClientReply`)."""
