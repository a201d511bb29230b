"""The HTTP connector: a primary reached over HTTP/JSON.

The primary's side of the contract (what a primary, or an adapter in front of one, serves):

- ``GET <base>/<entity id>`` → 200 with JSON ``{"state": <any>, "version": <int>?, "at":
  <epoch seconds>?}``; an ``ETag`` header, if any, is kept as the state's ETag.
- ``POST <base>/<entity id>/commands`` with JSON ``<command>`` and header
  ``Idempotency-Key: <key>`` → any 2xx once applied (or already applied under that key);
  a 4xx refuses the command (``primary_refused``: never retried).

Behaviour: one ``aiohttp.ClientSession`` per process (:class:`HttpSessions`, shared by every
connector: connection pooling, one DNS cache); each request bounded by
``XPLATFORM_PROXY_REQUEST_TIMEOUT_S``; pulls (idempotent) retried after a network error or a
5xx, ``XPLATFORM_PROXY_RETRIES`` times with doubling backoff from
``XPLATFORM_PROXY_RETRY_BACKOFF_S``; commands never retried here (a POST whose answer was
lost may have been applied; the proxy re-sends it with the same key only to primaries that
honour keys); a circuit breaker per primary (:mod:`infrastructure.proxies.breaker`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from domain.refs import EntityRef
from infrastructure.errors import ConnectorError, PrimaryRefusedCall, PrimaryUnreachable
from infrastructure.proxies.breaker import CircuitBreaker
from infrastructure.proxies.port import RemoteState

IDEMPOTENCY_HEADER = "Idempotency-Key"


class HttpSessions:
    """The process's one HTTP client session, made on first use (inside the event loop)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(raise_for_status=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpConnector:
    """A primary over HTTP. See the module docstring."""

    def __init__(self, base_url: str, sessions: HttpSessions, *, request_timeout_s: float, retries: int,
                 backoff_s: float, breaker: CircuitBreaker, sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.sessions = sessions
        self.timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self.retries = retries
        self.backoff_s = backoff_s
        self.breaker = breaker
        self._sleep = sleep

    def url(self, ref: EntityRef, suffix: str = "") -> str:
        return f"{self.base_url}/{quote(ref.entity_id, safe='')}{suffix}"

    async def pull(self, ref: EntityRef) -> RemoteState:
        state: RemoteState = await self._guarded(self._get_with_retries(ref))
        return state

    async def command(self, ref: EntityRef, command: Mapping[str, Any], key: str) -> None:
        await self._guarded(self._post(ref, command, key))

    async def close(self) -> None:
        """Nothing of its own: the session belongs to :class:`HttpSessions`."""

    async def _guarded(self, call: Coroutine[Any, Any, Any]) -> Any:
        """Run one call (its retries included) through the breaker: a call that failed after
        its retries is one failure."""
        try:
            self.breaker.before()
        except ConnectorError:
            call.close()  # the coroutine never runs
            raise
        try:
            result = await call
        except PrimaryRefusedCall:
            self.breaker.succeeded()  # an answer, a refusal too, shows the primary is up
            raise
        except BaseException:  # unreachable, a server error, cancelled (the proxy's timeout passed)
            self.breaker.failed()
            raise
        self.breaker.succeeded()
        return result

    async def _get_with_retries(self, ref: EntityRef) -> RemoteState:
        attempt = 0
        while True:
            try:
                return await self._get(ref)
            except PrimaryUnreachable:
                if attempt >= self.retries:
                    raise
            await self._sleep(self.backoff_s * 2 ** attempt)
            attempt += 1

    async def _get(self, ref: EntityRef) -> RemoteState:
        try:
            async with self.sessions.get().get(self.url(ref), timeout=self.timeout) as response:
                _check(response)
                body = await response.json(content_type=None)
                etag = response.headers.get("ETag")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PrimaryUnreachable(f"GET {self.url(ref)}: {type(exc).__name__} {exc}"[:300]) from None
        except ValueError:
            raise PrimaryRefusedCall(f"GET {self.url(ref)}: the answer is not JSON") from None
        return _remote_state(body, etag)

    async def _post(self, ref: EntityRef, command: Mapping[str, Any], key: str) -> None:
        try:
            async with self.sessions.get().post(self.url(ref, "/commands"), json=dict(command),
                                                headers={IDEMPOTENCY_HEADER: key}, timeout=self.timeout) as response:
                _check(response)
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PrimaryUnreachable(f"POST {self.url(ref, '/commands')}: {type(exc).__name__} {exc}"[:300]) from None


def _check(response: aiohttp.ClientResponse) -> None:
    if response.status >= 500:
        raise PrimaryUnreachable(f"{response.method} {response.url}: HTTP {response.status}")
    if response.status >= 400:
        raise PrimaryRefusedCall(f"{response.method} {response.url}: HTTP {response.status}")


def _remote_state(body: Any, etag: str | None) -> RemoteState:
    """The primary's JSON answer as a RemoteState; a malformed one is a refusal."""
    if not isinstance(body, dict) or "state" not in body:
        raise PrimaryRefusedCall("the primary's answer must be a JSON object with 'state'")
    version, at = body.get("version"), body.get("at")
    if version is not None and type(version) is not int:
        raise PrimaryRefusedCall("the primary's 'version' must be an integer")
    if at is not None and (not isinstance(at, (int, float)) or isinstance(at, bool) or not math.isfinite(at)):
        raise PrimaryRefusedCall("the primary's 'at' must be a number (epoch seconds)")
    return RemoteState(body["state"], version, etag, None if at is None else float(at))
