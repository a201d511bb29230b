"""State proxies' connectors, as every process that hosts a state node builds them.

``XPLATFORM_PROXY_PRIMARIES`` names each proxy category's primary ('Category=http://...');
this module makes one HTTP connector per category, all on the process's one client
session, each with its own circuit breaker (its state on the node's registry as
``xplatform_proxy_circuit_state{category}``), and the runner that the state node hands its
proxies' calls to (:mod:`infrastructure.runtime.remote`).
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from infrastructure.errors import ConfigurationError
from infrastructure.metrics import ProxyMetrics
from infrastructure.proxies.breaker import CircuitBreaker
from infrastructure.proxies.http import HttpConnector, HttpSessions
from infrastructure.proxies.port import Connector
from infrastructure.runtime.entity_modules import resolve_entities
from infrastructure.runtime.remote import RemoteCalls
from infrastructure.settings import Settings
from ops.warehouse import SAMPLE_PROXY, SampleWarehouse


def parse_primaries(spec: str) -> dict[str, str]:
    """'Category=URL,...' → {category: URL}. Raises ConfigurationError naming the setting."""
    primaries: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        category, sep, url = item.partition("=")
        parts = urlsplit(url.strip())
        if not sep or not category.strip() or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"XPLATFORM_PROXY_PRIMARIES item {item!r} must be Category=http(s)://host[:port]/path")
        if category.strip() in primaries:
            raise ConfigurationError(f"XPLATFORM_PROXY_PRIMARIES names {category.strip()!r} twice")
        primaries[category.strip()] = url.strip()
    return primaries


def build_remote_calls(settings: Settings, registry: CollectorRegistry) -> RemoteCalls:
    """The runner of the node's proxies' calls, with an HTTP connector per configured
    primary (none configured: every call ends with ``no_connector``)."""
    metrics = ProxyMetrics(registry)
    sessions = HttpSessions()
    connectors: dict[str, Connector] = {}
    for category, url in parse_primaries(settings.proxy_primaries).items():
        breaker = CircuitBreaker(settings.proxy_breaker_failures, settings.proxy_breaker_open_s,
                                 on_change=functools.partial(metrics.circuit, category))
        metrics.circuit_state.labels(category).set(0)
        connectors[category] = HttpConnector(url, sessions, request_timeout_s=settings.proxy_request_timeout_s,
                                             retries=settings.proxy_retries, backoff_s=settings.proxy_retry_backoff_s,
                                             breaker=breaker)
    return RemoteCalls(connectors, metrics, on_close=sessions.close)


def start_sample_warehouse(settings: Settings) -> tuple[Settings, SampleWarehouse | None]:
    """``xplatform run``'s sample primary: when it serves the sample proxy (``StockLevel``),
    ``XPLATFORM_PROXY_PRIMARIES`` names none for it and ``XPLATFORM_RUN_SAMPLE_WAREHOUSE`` is
    on, start the sample warehouse (:mod:`ops.warehouse`, a child process) and return the
    settings naming it as that primary; else the settings unchanged and None. The caller
    stops it. Not waited for: a pull before it listens ends ``primary_unavailable``."""
    if (not settings.run_sample_warehouse or SAMPLE_PROXY in parse_primaries(settings.proxy_primaries)
            or SAMPLE_PROXY not in resolve_entities(settings.entities).categories):
        return settings, None
    warehouse = SampleWarehouse.start()
    primaries = ",".join(filter(None, (settings.proxy_primaries.strip(), f"{SAMPLE_PROXY}={warehouse.url}")))
    return settings.with_(proxy_primaries=primaries), warehouse
