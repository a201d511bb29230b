"""``xplatform run`` serves the entity module XPLATFORM_ENTITIES names - one written to a
temporary directory, on PYTHONPATH - over its websocket edge; ``edge`` and ``state-node``
refuse a wrong topic at start with one line (issue 11 item 1)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.xplatform_run import served

ROOT = Path(__file__).resolve().parents[2]

NOTES = '''
"""A domain that is not the sample: a shared note anyone may create and edit."""
from collections.abc import Mapping
from typing import Any

from domain import Context, Entity, client_message, event


class Note(Entity):
    CATEGORY = "Note"

    def initialise(self) -> None:
        self.text = ""

    def may_create(self, ctx: Context, claims: Mapping[str, Any]) -> bool:
        return True

    def on_connect(self, ctx: Context, claims: Mapping[str, Any], reconnect: bool) -> Any:
        return {"text": self.text}

    @client_message("write")
    def write(self, ctx: Context, text: str) -> str:
        self._written(text=text)
        return self.text

    @event("Written")
    def _written(self, text: str) -> None:
        self.text = text


ENTITIES = [Note]
'''


def _env(tmp_path: Path, entities: str) -> dict[str, str]:
    (tmp_path / "pkgs" / "xp_notes").mkdir(parents=True, exist_ok=True)
    (tmp_path / "pkgs" / "xp_notes" / "__init__.py").write_text(textwrap.dedent(NOTES))
    env = {**os.environ, "XPLATFORM_DATA_DIR": str(tmp_path / "data"), "XPLATFORM_ENTITIES": entities,
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path / "pkgs")])}
    env.pop("XPLATFORM_EDGE_DEV_TOKENS", None)
    return env


def test_run_serves_an_entity_module_named_by_the_setting(tmp_path: Path) -> None:
    with served(tmp_path, _env(tmp_path, "xp_notes:ENTITIES")) as url:
        asyncio.run(_write_a_note(url))


async def _write_a_note(url: str) -> None:
    import aiohttp

    from edge.client import connect
    from edge.errors import ClientError

    async with aiohttp.ClientSession() as session, \
            session.get(f"{url}dev/token", params={"sub": "ann", "role": "writer"}) as resp:
        token = (await resp.json())["token"]
    client = await connect(url, "Note", "n1", token)
    try:
        assert client.welcome == {"text": ""}  # Note.on_connect's answer
        reply = await client.request({"type": "write", "text": "hello"})
        assert reply.ok and reply.payload == "hello"
    finally:
        await client.close()
    with pytest.raises(ClientError, match="404"):  # the sample is not served any more: no such category
        lot = await connect(url, "Lot", "l1", token)
        await lot.close()


@pytest.mark.parametrize("command", [["run", "--port", "0"], ["edge", "--port", "0"], ["state-node"]])
def test_every_process_refuses_a_wrong_topic_in_one_line(tmp_path: Path, command: list[str]) -> None:
    env = {**_env(tmp_path, "xp_notes:NOTES"), "XPLATFORM_ZOOKEEPER_HOSTS": "127.0.0.1:1"}  # never reached
    done = subprocess.run([sys.executable, "-m", "ops.cli", *command], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "xplatform: EntityTopicError: XPLATFORM_ENTITIES topic 'xp_notes:NOTES': module 'xp_notes' has no "
        "attribute 'NOTES'"]
