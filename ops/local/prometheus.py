"""A real Prometheus server (Debian package ``prometheus``) on a free loopback port, and its
``promtool``: for the tests that load ``ops/prometheus`` and evaluate its rules and the
dashboard's queries against live platform processes, and for local development.

A server that cannot start raises :class:`ServerStartError` with its log (in tests: a
failure, never a skip). It is stopped by the PID we started.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.local.servers import ServerDirectory, ServerStartError, free_port


def prometheus_tool(name: str) -> str:
    """Path of ``prometheus`` or ``promtool``; ServerStartError naming the package if missing."""
    found = shutil.which(name)
    if found is None:
        raise ServerStartError(f"{name!r} not found: install the Debian package 'prometheus' (bash ops/dev.sh test does)")
    return found


class QueryError(RuntimeError):
    """Raised when Prometheus refuses a query (it does not parse, or its evaluation failed)."""


@dataclass
class PrometheusServer(ServerDirectory):
    """``prometheus --config.file=<config>`` with its data in a temporary directory."""

    port: int
    root: Path
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, config: Path, timeout: float = 60.0) -> PrometheusServer:
        root = Path(tempfile.mkdtemp(prefix="xplatform-prometheus-"))
        port = free_port()
        log = open(root / "server.log", "wb")  # noqa: SIM115 - owned by the process lifetime
        process = subprocess.Popen(
            [prometheus_tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT)
        server = cls(port, root, process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerStartError(f"prometheus exited with {process.returncode}:\n{server.log()}")
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return server
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        server.stop()
        raise ServerStartError(f"prometheus not ready within {timeout}s:\n{server.log()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a success, else QueryError with Prometheus's error."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as failed:  # 400/422: the error is in the JSON body
            body = json.load(failed)
        if body.get("status") != "success":
            raise QueryError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) ``expr`` evaluates to now."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])
