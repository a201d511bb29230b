"""The query API of read models on the edge (``edge/PROTOCOL.md`` "Reading read models").

``GET /read/{projection}/{key}`` answers one document, ``GET /read/{projection}?field=value``
a filtered list (``limit``, bounded by ``read_max_limit``); both take the consistency a read
needs: ``after=<position token>`` (read-your-writes; repeatable), ``max_lag_ms`` (bounded
staleness), ``wait_ms`` (how long to wait for either, at most ``read_wait_ms``). Without
them a read is eventually consistent: answered from what the read model holds now.

Authenticated like the websocket: ``Authorization: Bearer <JWT>``, checked by the edge's own
verifier (:class:`edge.auth.Verifier`); which documents a caller may read is the
projection's decision, made behind the read port (:class:`infrastructure.read_port.ReadPort`),
which the composition floor hands to the edge like the transport: the edge never talks to a
database itself. Every refusal is a JSON body ``{"error": code, "reason": text}`` with the
status of :data:`STATUS`; nothing a read does changes anything.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from edge.auth import Verifier
from edge.config import EdgeConfig
from edge.errors import AuthError
from edge.metrics import EdgeMetrics
from edge.public import bearer_token
from infrastructure.errors import BadReadQuery, ReadModelError
from infrastructure.read_port import Consistency, Position, ReadPort

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
"""A projection's NAME (``projections/projection.py``)."""
FIELD = re.compile(r"^(?:_id|[A-Za-z][A-Za-z0-9_]{0,63})(?:\.[A-Za-z0-9_]{1,64}){0,3}$")
"""A filterable field: ``_id`` or a name not starting with ``_`` (bookkeeping), up to 3 dots deep."""
RESERVED = frozenset({"limit", "after", "max_lag_ms", "wait_ms"})
DEFAULT_LIMIT = 50
MAX_FILTERS = 8
MAX_TOKENS = 8
MAX_VALUE = 200
MAX_LAG_MS = 3_600_000

STATUS = {"bad_request": 400, "unauthorized": 401, "forbidden": 403, "not_found": 404, "unknown_projection": 404,
          "busy": 503, "read_models_unavailable": 503, "consistency_timeout": 504, "read_failed": 500}
RETRYABLE = frozenset({"busy", "read_models_unavailable", "consistency_timeout"})


class ReadApi:
    """The read routes of one edge. See the module docstring."""

    def __init__(self, reads: ReadPort, verifier: Verifier, config: EdgeConfig, metrics: EdgeMetrics) -> None:
        self.reads = reads
        self.verifier = verifier
        self.config = config
        self.metrics = metrics
        self.waiting = 0

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/read/{projection}", self.many), web.get("/read/{projection}/{key}", self.one)]

    async def one(self, request: web.Request) -> web.Response:
        async def answer(claims: Mapping[str, Any], consistency: Consistency) -> dict[str, Any]:
            key = request.match_info["key"]
            if not key or len(key) > MAX_VALUE:
                raise BadReadQuery(f"a document key is 1-{MAX_VALUE} characters")
            return {"document": await self.reads.get(request.match_info["projection"], key, claims, consistency)}

        return await self._serve(request, answer)

    async def many(self, request: web.Request) -> web.Response:
        async def answer(claims: Mapping[str, Any], consistency: Consistency) -> dict[str, Any]:
            limit = _int(request.query, "limit", DEFAULT_LIMIT, 1, self.config.read_max_limit)
            documents, more = await self.reads.find(request.match_info["projection"], _filters(request.query), limit,
                                                    claims, consistency)
            return {"documents": documents, "more": more}

        return await self._serve(request, answer)

    async def _serve(self, request: web.Request, answer: Any) -> web.Response:
        started = time.perf_counter()
        outcome = "ok"
        try:
            try:
                claims = await self.verifier.verify(bearer_token(request))
            except AuthError as exc:
                self.metrics.auth_failures[exc.reason].inc()
                outcome = "unauthorized"
                return _refusal(401, exc.reason, exc.detail)
            projection = request.match_info["projection"]
            if not NAME.match(projection) or projection not in self.reads.projections():
                outcome = "unknown_projection"
                return _refusal(404, outcome, f"no read model {projection[:80]!r} (served: "
                                f"{', '.join(sorted(self.reads.projections()))})")
            consistency = self._consistency(request.query)
            if not consistency.eventual and self.waiting >= self.config.read_max_waiting:
                outcome = "busy"
                return _refusal(503, outcome, "too many reads are waiting for their consistency here; retry shortly")
            self.waiting += not consistency.eventual
            self.metrics.reads_waiting.set(self.waiting)
            try:
                body = await answer(claims, consistency)
            finally:
                self.waiting -= not consistency.eventual
                self.metrics.reads_waiting.set(self.waiting)
            return web.Response(body=json.dumps(body, default=_plain, separators=(",", ":")).encode(),
                                content_type="application/json", headers={"Cache-Control": "no-store"})
        except ReadModelError as exc:
            outcome = exc.code if exc.code in STATUS else "read_failed"
            return _refusal(STATUS[outcome], outcome, str(exc))
        finally:
            self.metrics.reads[outcome].inc()
            self.metrics.read_duration.observe(time.perf_counter() - started)

    def _consistency(self, query: MultiMapping[str]) -> Consistency:
        tokens = query.getall("after", [])
        if len(tokens) > MAX_TOKENS:
            raise BadReadQuery(f"at most {MAX_TOKENS} position tokens (after=) per read")
        after = tuple(Position.parse(token) for token in tokens)
        max_lag_ms = _int(query, "max_lag_ms", None, 0, MAX_LAG_MS)
        wait_ms = _int(query, "wait_ms", None, 0, int(self.config.read_wait_ms))
        wait_s = (self.config.read_wait_ms if wait_ms is None else wait_ms) / 1000
        return Consistency(after, None if max_lag_ms is None else float(max_lag_ms), wait_s)


def _int(query: MultiMapping[str], name: str, default: Any, low: int, high: int) -> Any:
    values = query.getall(name, [])
    if not values:
        return default
    text = values[0]
    if len(values) > 1 or not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise BadReadQuery(f"{name} must be given once, a whole number from {low} to {high}")
    return int(text)


def _filters(query: MultiMapping[str]) -> dict[str, tuple[Any, ...]]:
    """``field=value`` parameters: the value as text, and as a number too when it is one
    (``high_amount=100`` matches 100 and "100")."""
    filters: dict[str, tuple[Any, ...]] = {}
    for name in query:
        if name in RESERVED:
            continue
        values = query.getall(name)
        if not FIELD.match(name) or len(values) > 1 or len(values[0]) > MAX_VALUE:
            raise BadReadQuery(f"filter {name[:80]!r}: a field name (letters, digits, _ and up to 3 dots; not "
                               f"starting with _ except _id) given once, with a value of at most {MAX_VALUE} characters")
        value = values[0]
        filters[name] = (value, int(value)) if re.fullmatch(r"-?[0-9]{1,18}", value) else (value,)
        if len(filters) > MAX_FILTERS:
            raise BadReadQuery(f"at most {MAX_FILTERS} filters per read")
    return filters


def _refusal(status: int, error: str, reason: str) -> web.Response:
    body: dict[str, Any] = {"error": error, "reason": reason}
    if error in RETRYABLE:
        body["retryable"] = True
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


def _plain(value: Any) -> Any:
    """JSON for what documents may hold beyond JSON: times as ISO 8601, the rest as text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


READS_KEY = web.AppKey("xplatform_read_api", ReadApi)


def add_read_api(app: web.Application, api: ReadApi) -> None:
    """Mount the query API's routes on ``app``."""
    app[READS_KEY] = api
    app.add_routes(api.routes())


__all__ = ["ReadApi", "add_read_api"]
