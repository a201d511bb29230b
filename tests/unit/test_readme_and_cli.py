"""The README's sandbox example runs as written, and the CLI's commands work."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_sandbox_example_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    [block] = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(block.strip().splitlines()) <= 12  # "in ten lines" (plus imports)
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - our own README


def _xplatform(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XPLATFORM_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run([sys.executable, "-m", "infrastructure.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_run_command_drives_the_sample_domain(tmp_path: Path) -> None:
    done = _xplatform(tmp_path, "run", "--lot", "smoke")
    assert done.returncode == 0, done.stderr
    assert "rejected: bid must be at least 110" in done.stdout
    assert 'final state of Lot/smoke: {"lot": "smoke", "status": "closed"' in done.stdout
    assert (tmp_path / "data" / "events.sqlite3").exists()
    inspected = _xplatform(tmp_path, "inspect", "Lot", "smoke")
    assert inspected.returncode == 0 and "BidAccepted" in inspected.stdout and "Closed" in inspected.stdout


def test_bad_configuration_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    env = {**os.environ, "XPLATFORM_STORE": "oracle"}
    done = subprocess.run([sys.executable, "-m", "infrastructure.cli", "settings"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "ConfigurationError: XPLATFORM_STORE must be one of" in done.stderr


def test_benchmarks_smoke(tmp_path: Path) -> None:
    """Tiny parameters: the scripts run and print their JSON keys (figures come from full runs)."""
    for module, args, keys in [
        ("loadtests.bench_persistence", ["--events", "300", "--single-events", "50", "--entities", "10"],
         {"group_commit_events_per_s", "hot_entity_events_per_s", "single_save_events_per_s"}),
        ("loadtests.bench_runtime", ["--rate", "200", "--seconds", "0.5", "--entities", "500"],
         {"reply_p50_ms", "reply_p99_ms", "activation_ms", "bytes_per_entity"}),
    ]:
        done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert keys <= result.keys() and result.get("errors", 0) == 0
        assert all(result[k] > 0 for k in keys)
