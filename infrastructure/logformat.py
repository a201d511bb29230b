"""Log lines of every process: text for people, JSON for log pipelines (``XPLATFORM_LOG_FORMAT``).

One choice, the standard library: :mod:`logging` with :class:`JsonFormatter` below, no
structlog. Every module already logs through ``logging.getLogger(__name__)``, and so do
aiohttp, kazoo and eventsourcing: one formatter on the root handler makes every line of
the process structured, where a second logging API would cover only our own lines.

Each process's entry point calls :func:`configure_logging` once (``ops/cli.py`` for
``xplatform run``, ``state-node``, ``edge`` and the rest; the edge workers of ``run
--workers``; the catch-up projector). A JSON line is one object:

- ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``;
- ``node``: the process's node ID (``XPLATFORM_NODE_ID``; an edge worker's ID);
- ``msg``: the formatted message, the same words as the text format;
- the fields the call site passed with ``extra=``, by convention ``entity`` (``Category/id``),
  ``message_id``, ``connection_id``, ``state_node`` (the node that processed a message) and
  whatever else the line is about (the slow-message line of :mod:`edge.hops` adds
  ``round_trip_ms``, ``hops_ms`` and ``skipped``);
- ``exc``: the traceback, when there is one.

Values that are not JSON types are written as strings: a log line never fails to format.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from infrastructure.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
"""Attributes every LogRecord has: not fields of a line (``extra=`` adds the others)."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record. See the module docstring."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "node": self.node, "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(settings: Settings, node: str | None = None, text_format: str = TEXT_FORMAT) -> None:
    """Log to stderr at ``settings.log_level`` in ``settings.log_format``; ``node`` names the
    process in JSON lines (default: ``settings.node_id``). Like ``logging.basicConfig``, it
    does nothing when the root logger already has handlers."""
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(node or settings.node_id))
    else:
        handler.setFormatter(logging.Formatter(text_format))
    logging.basicConfig(level=settings.log_level, handlers=[handler])
