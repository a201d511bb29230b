"""What the wheel ships: the product packages and the ``xplatform`` command, never the local
development and test tools (``ops/local``: the test JWT secret, process-cluster harness,
server launchers) nor tests or benchmarks (issue 11 item 3)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_ships_the_product_and_not_the_local_tools(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: the build writes build/ and *.egg-info next to pyproject.toml
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("domain", "infrastructure", "edge", "projections", "ops", "tests", "loadtests"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-q", "-w", str(tmp_path / "wheel")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    [wheel] = (tmp_path / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    packages = {name.split("/", 1)[0] for name in names if "/" in name and ".dist-info/" not in name}
    assert packages == {"domain", "infrastructure", "edge", "projections", "ops"}, packages
    assert not [n for n in names if n.startswith("ops/local/")]
    assert "ops/wiring/dev.py" in names and "ops/cli.py" in names
    assert "xplatform = ops.cli:main" in entry_points
