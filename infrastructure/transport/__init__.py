"""Transports between callers (edges) and state nodes."""

from infrastructure.transport.local import LocalTransport
from infrastructure.transport.port import OutboundSink, Transport

__all__ = ["LocalTransport", "OutboundSink", "Transport"]
