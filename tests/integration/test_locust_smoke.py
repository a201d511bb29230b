"""The locust load test runs: a few seconds headless against ``xplatform run`` (a real process,
real websockets) with its CSV written; every kind of request the users make was recorded
(connects, commands timed to their durable REPLY, pushes' freshness, reconnect churn) and
none failed, and no user code raised."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.monitoring import ROOT
from tests.support.xplatform_run import served

USERS = 12


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_headless_locust_run_records_every_request_kind_and_no_failure(tmp_path: Path) -> None:
    env = {**os.environ, "XPLATFORM_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}
    with served(tmp_path, env) as url:
        run = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
             "-u", str(USERS), "-r", str(USERS), "-t", "6s", "--host", url.rstrip("/"), "--csv", str(tmp_path / "smoke"),
             "--only-summary", "--lot-prefix", f"smoke-{uuid.uuid4().hex[:6]}", "--freshness-every", "1",
             "--stop-timeout", "5"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr  # locust exits 1 on any failure
    stats = {(row["Type"], row["Name"]): row for row in _rows(tmp_path / "smoke_stats.csv")}
    counts = {key: int(row["Request Count"]) for key, row in stats.items()}
    for key in [("WS", "connect"), ("MSG", "register"), ("MSG", "bid"), ("MSG", "chat"),
                ("PUSH", "state (freshness)"), ("PUSH", "chat (freshness)")]:
        assert counts.get(key, 0) > 0, (key, counts)
    assert counts.get(("WS", "connect"), 0) + counts.get(("WS", "reconnect"), 0) > USERS, counts  # churn happened
    aggregated = stats[("", "Aggregated")]
    assert int(aggregated["Request Count"]) == sum(counts[k] for k in counts if k != ("", "Aggregated"))
    assert int(aggregated["Failure Count"]) == 0, _rows(tmp_path / "smoke_failures.csv")
    assert _rows(tmp_path / "smoke_failures.csv") == []
    assert _rows(tmp_path / "smoke_exceptions.csv") == [], run.stderr
