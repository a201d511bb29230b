"""The edges' access log, with query strings redacted.

Why: tokens are refused in the query string (``?access_token=...`` gets 401 ``missing``:
only the ``Authorization`` header and the ``bearer.`` subprotocol carry them), but aiohttp's
default access log writes the whole request line and the ``Referer``, so a client that
tried would leave a live token in the logs. Here every query value is replaced by ``***``
except the parameters the edges define and that hold no secret (:data:`SAFE_QUERY`), and
the ``Referer`` is not logged.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

SAFE_QUERY = frozenset({"cid", "cursor", "wait", "device", "sub", "role", "after", "limit", "max_lag_ms", "wait_ms"})
"""Query parameters of the edges' own routes; they name things, never prove anything."""


def redacted_path(request: web.BaseRequest) -> str:
    """The request's path and query with every value outside :data:`SAFE_QUERY` as ``***``."""
    path = request.raw_path.partition("?")[0]
    query = request.raw_path.partition("?")[2]
    if not query:
        return path
    shown = [f"{quote(key, safe='')}={quote(value, safe='') if key in SAFE_QUERY else '***'}"
             for key, value in parse_qsl(query, keep_blank_values=True)]
    return f"{path}?{'&'.join(shown)}" if shown else f"{path}?***"


class RedactingAccessLogger(AbstractAccessLogger):
    """``<remote> "<method> <redacted path> HTTP/x.y" <status> <bytes> <seconds> "<user agent>"``."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not self.logger.isEnabledFor(20):  # INFO
            return
        version = request.version
        self.logger.info('%s "%s %s HTTP/%d.%d" %d %d %.6f "%s"', request.remote, request.method,
                         redacted_path(request), version.major, version.minor, response.status,
                         response.body_length, time, request.headers.get("User-Agent", "-"))
