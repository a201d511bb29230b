"""``xplatform new NAME`` writes a package whose own sandbox test passes, that ruff accepts,
and that ``xplatform run`` serves with only XPLATFORM_ENTITIES set; a bad name or an existing
target is refused in one line with nothing written (issue 11 item 6)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.xplatform_run import served

ROOT = Path(__file__).resolve().parents[2]


def _xplatform(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _new(tmp_path: Path, name: str = "shop") -> Path:
    """``xplatform new`` run elsewhere, writing into ``tmp_path/pkgs`` via --dir."""
    (tmp_path / "pkgs").mkdir()
    done = _xplatform(tmp_path, "new", name, "--dir", str(tmp_path / "pkgs"))
    assert done.returncode == 0, done.stderr
    assert f"XPLATFORM_ENTITIES={name}.entities:ENTITIES" in done.stdout
    return tmp_path / "pkgs"


def test_generated_package_passes_its_own_sandbox_test_and_ruff(tmp_path: Path) -> None:
    pkgs = _new(tmp_path)
    assert sorted(p.name for p in (pkgs / "shop").iterdir()) == ["README.md", "__init__.py", "entities.py",
                                                                  "test_entities.py"]
    assert "XPLATFORM_ENTITIES=shop.entities:ENTITIES" in (pkgs / "shop" / "README.md").read_text()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pkgs), str(ROOT)])}
    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "shop"], cwd=pkgs,
                            env=env, capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "2 passed" in tested.stdout
    from ruff.__main__ import find_ruff_bin  # in the test extra: the suite has it

    # the project's own rules, with the package as the user's first party and the platform as a library
    linted = subprocess.run([find_ruff_bin(), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"),
                             "--config", "lint.isort.known-first-party = ['shop']",
                             "--config", "lint.isort.known-third-party = ['domain', 'infrastructure']", "shop"],
                            cwd=pkgs, capture_output=True, text=True, timeout=120)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_run_serves_the_generated_package_over_a_websocket(tmp_path: Path) -> None:
    pkgs = _new(tmp_path)
    env = {**os.environ, "XPLATFORM_DATA_DIR": str(tmp_path / "data"), "XPLATFORM_ENTITIES": "shop.entities:ENTITIES",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(pkgs)])}
    env.pop("XPLATFORM_EDGE_DEV_TOKENS", None)
    with served(tmp_path, env) as url:
        asyncio.run(_add(url))


async def _add(url: str) -> None:
    import aiohttp

    from edge.client import connect

    async with aiohttp.ClientSession() as session, session.get(f"{url}dev/token", params={"sub": "ann"}) as resp:
        token = (await resp.json())["token"]
    client = await connect(url, "ShopCounter", "c1", token)
    try:
        assert client.welcome == {"total": 0}  # on_connect's answer
        reply = await client.request({"type": "add", "amount": 5})
        assert reply.ok and reply.payload == 5
        refused = await client.request({"type": "add", "amount": -1})
        assert not refused.ok and refused.code == "rejected"
    finally:
        await client.close()


@pytest.mark.parametrize(("name", "message"), [
    ("my-shop", "ScaffoldError: 'my-shop' is not a valid Python package name"),
    ("class", "ScaffoldError: 'class' is not a valid Python package name"),
    ("json", "ScaffoldError: 'json' is already an importable module"),
    ("taken", "ScaffoldError: taken already exists; nothing written"),
])
def test_bad_name_or_existing_target_is_refused_and_nothing_written(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep me")
    done = _xplatform(tmp_path, "new", name)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"xplatform: {message}"), line
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["mine.txt", "taken"]
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep me"
