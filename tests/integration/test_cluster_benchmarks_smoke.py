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


def test_bench_failover_heavy_smoke() -> None:
    """Both phases end to end: with standbys every takeover is warm, without them every one cold."""
    result = run("loadtests.bench_failover", "--heavy", "--kills", "1", "--heavy-lots", "2", "--heavy-events", "500",
                 "--small", "50", "--small-loaded", "2")
    assert result["lost_acks"] == 0 and result["heavy_events"] > 500
    warm, cold = result["warm"], result["cold"]
    assert warm["takeovers"]["warm"] >= 1 and warm["takeovers"]["cold"] == 0, warm  # type: ignore[index]
    assert cold["takeovers"]["cold"] >= 1 and cold["takeovers"]["warm"] == 0, cold  # type: ignore[index]
    assert warm["served_again"] == cold["served_again"] == 1, result  # type: ignore[index]  # the kill waited for it
    assert 0 < result["warm_failover_max_s"] < 10 and 0 < result["cold_failover_max_s"] < 10  # type: ignore[operator]
    assert result["mirror_bytes_per_entity"] > 0  # type: ignore[operator]
