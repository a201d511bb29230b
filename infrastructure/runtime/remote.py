"""Running state proxies' remote calls beside the entities (see :mod:`domain.proxy`).

A proxy's handler never does I/O: it asks for a call with a ``RemoteCall`` effect. The
state node hands the effect here once the call's start is durable (like any effect);
:class:`RemoteCalls` runs it as a task on the event loop with the category's connector,
bounded by the call's timeout, and delivers the outcome to the proxy as a ``RemoteResult``
message through the node like any other message. The entity keeps taking messages
meanwhile, and other entities never wait for a primary: a slow primary holds only its own
tasks. A result whose proxy moved to another node is refused there by ownership (the new
owner's deadline timer re-issues the call).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from domain.effects import RemoteCall
from domain.errors import NoConnector, PrimaryTimeout
from domain.messages import Inbound, RemoteResult, remote_result_id
from domain.refs import EntityRef
from infrastructure.errors import ConnectorError
from infrastructure.metrics import ProxyMetrics
from infrastructure.proxies.port import Connector

log = logging.getLogger(__name__)


class RemoteCalls:
    """Runs ``RemoteCall`` effects with the connector of the proxy's category. See the module docstring."""

    def __init__(self, connectors: Mapping[str, Connector], metrics: ProxyMetrics | None = None,
                 now: Callable[[], float] = time.time, on_close: Callable[[], object] | None = None) -> None:
        self.connectors = dict(connectors)
        self.metrics = metrics or ProxyMetrics()
        self.now = now
        self._on_close = on_close
        self._deliver: Callable[[EntityRef, Inbound], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, deliver: Callable[[EntityRef, Inbound], None]) -> None:
        """Where results go (the state node's ``deliver``); set by the node it serves."""
        self._deliver = deliver

    def start(self, ref: EntityRef, call: RemoteCall) -> None:
        """Run ``call`` for the proxy ``ref`` beside it (event-loop thread)."""
        task = asyncio.get_running_loop().create_task(self._run(ref, call), name=f"xplatform-remote-{ref}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, ref: EntityRef, call: RemoteCall) -> None:
        connector = self.connectors.get(ref.category)
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            if connector is None:
                raise ConnectorError(f"no connector for {ref.category} (XPLATFORM_PROXY_PRIMARIES)")
            async with asyncio.timeout(call.timeout_s):
                if call.kind == "command":
                    await connector.command(ref, call.command or {}, call.key)
                remote = await connector.pull(ref)
            result = RemoteResult(remote_result_id(call.op, call.attempt), self.now(), call.op, call.attempt, True,
                                  remote.state, remote.version, remote.etag, remote.at)
        except TimeoutError:
            result = self._failure(call, PrimaryTimeout.code, f"no answer from the primary within {call.timeout_s:g} s")
        except ConnectorError as exc:
            result = self._failure(call, exc.code if connector is not None else NoConnector.code, str(exc))
        except asyncio.CancelledError:
            raise  # shutting down: the deadline timer of the next owner re-issues it
        except Exception as exc:  # a connector bug must not lose the answer
            log.exception("connector of %s failed on %s", ref.category, call.kind)
            result = self._failure(call, "primary_unavailable", f"connector failed: {type(exc).__name__}")
        finally:
            self.metrics.in_flight.dec()
        self.metrics.calls.labels(ref.category, call.kind, "ok" if result.ok else result.error).inc()
        self.metrics.call_duration.labels(call.kind).observe(time.perf_counter() - started)
        if self._deliver is not None:
            self._deliver(ref, result)

    def _failure(self, call: RemoteCall, code: str, reason: str) -> RemoteResult:
        return RemoteResult(remote_result_id(call.op, call.attempt), self.now(), call.op, call.attempt, False,
                            error=code, reason=reason[:300])

    async def close(self) -> None:
        """Cancel calls in flight (their proxies' deadline timers re-issue them on the next
        owner), close the connectors and what they share."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for connector in self.connectors.values():
            await connector.close()
        if self._on_close is not None:
            closing = self._on_close()
            if asyncio.iscoroutine(closing):
                await closing

