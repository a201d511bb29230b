"""``ops/dev.sh`` (the README's two commands) uses a project virtualenv unless one is active,
so it works on a distribution's externally managed Python (PEP 668) (issue 11 item 8).

``bash ops/dev.sh python`` runs the same selection as ``run``/``test``/``mutations`` and
prints the Python they would use; XPLATFORM_VENV puts the virtualenv in a temporary place.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _select(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "ops" / "dev.sh"), "python"], env=env, capture_output=True,
                          text=True, timeout=300)


def test_without_an_active_virtualenv_the_project_one_is_created_and_used(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(XPLATFORM_VENV=str(venv), PYTHON=sys.executable)
    first = _select(env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"{venv}/bin/python"
    assert f"created the project virtualenv {venv}" in first.stderr
    prefix = subprocess.run([first.stdout.strip(), "-c", "import sys; print(sys.prefix != sys.base_prefix, sys.prefix)"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert prefix == ["True", str(venv)]  # a real virtualenv: pip installs land there, not in the system
    second = _select(env)
    assert second.returncode == 0 and second.stdout.strip() == f"{venv}/bin/python"
    assert "created" not in second.stderr  # reused, not rebuilt


def test_an_active_virtualenv_is_used_as_is(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {**os.environ, "VIRTUAL_ENV": str(tmp_path / "active"), "XPLATFORM_VENV": str(venv)}
    env.pop("PYTHON", None)
    done = _select(env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "python3" and not venv.exists()
