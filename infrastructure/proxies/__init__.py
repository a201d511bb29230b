"""Connectors: how a state proxy (:mod:`domain.proxy`) reaches its primary.

The port is :class:`~infrastructure.proxies.port.Connector`; the HTTP adapter is
:mod:`infrastructure.proxies.http`. Which category uses which primary is the composition
floor's choice (``XPLATFORM_PROXY_PRIMARIES``, ``ops/wiring/proxies.py``); the runtime runs
the calls beside the entities (:mod:`infrastructure.runtime.remote`).
"""

from infrastructure.proxies.breaker import CircuitBreaker
from infrastructure.proxies.port import Connector, RemoteState

__all__ = ["CircuitBreaker", "Connector", "RemoteState"]
