"""Transports between callers (edges) and state nodes."""

from infrastructure.transport.local import LocalTransport

__all__ = ["LocalTransport"]
