"""``ops/prometheus`` passes Prometheus's own checks: the configuration and the rules load
(``promtool check``), and the alert rules' unit tests pass (``promtool test rules``: each
alert fires on the situation it names and stays quiet on its near miss). promtool comes
with the Debian package ``prometheus`` (installed by ``bash ops/dev.sh test``); missing, it
is a failure."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ops.local.prometheus import prometheus_tool

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "ops" / "prometheus"


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([prometheus_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_config_and_rules_pass_promtool_check() -> None:
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS" in config.stdout and "1 rule files found" in config.stdout
    rules = promtool("check", "rules", *sorted(str(p.relative_to(PROMETHEUS_DIR)) for p in PROMETHEUS_DIR.glob("rules/*.yml")))
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_rule_unit_tests_pass() -> None:
    tested = promtool("test", "rules", "tests/xplatform.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_rule_unit_tests_catch_a_broken_alert(tmp_path: Path) -> None:
    """The unit tests are not vacuous: the fenced-too-long alert narrowed to "lost" (a copy)
    fails them."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, copy)
    rules = copy / "rules" / "xplatform.yml"
    text = rules.read_text()
    assert text.count('state=~"fenced|lost"') == 1
    rules.write_text(text.replace('state=~"fenced|lost"', 'state="lost"'))
    tested = promtool("test", "rules", "tests/xplatform.test.yml", cwd=copy)
    assert tested.returncode != 0 and "XPlatformNodeFencedTooLong" in tested.stdout + tested.stderr
