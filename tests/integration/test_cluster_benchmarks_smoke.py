"""The cluster benchmarks run end to end with tiny parameters (figures come from full runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(module: str, *args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result))
    return result


def test_bench_failover_smoke() -> None:
    result = run("loadtests.bench_failover", "--kills", "1", "--lots", "3")
    assert result["lost_acks"] == 0 and result["acknowledged"] > 0
    assert 0 < result["failover_max_s"] < 10
    assert result["zookeeper"] == {"session_timeout_s": 0.6, "supervised": False}  # next to the gaps they explain
    assert result["longest_gap_s"] >= result["failover_max_s"]  # the kill's gap is one of the run's gaps


def test_bench_drain_smoke() -> None:
    result = run("loadtests.bench_drain", "--drains", "1", "--lots", "3")
    assert result["acknowledged"] > 0 and "max_unavailable_ms" in result and "client_errors" in result
    assert result["zookeeper"] == {"session_timeout_s": 0.6, "supervised": False}
    assert len(result["unavailable_ms"]) == 1 and result["max_unavailable_ms"] == result["unavailable_ms"][0] > 0
