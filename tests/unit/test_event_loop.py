"""The serving processes' event loop (infrastructure/event_loop.py, setting ``event_loop``)."""

from __future__ import annotations

import asyncio

import pytest

from infrastructure import event_loop
from infrastructure.errors import ConfigurationError
from infrastructure.settings import Settings


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_on_uvloop_where_it_is_installed() -> None:
    settings = Settings.from_env({})
    assert settings.event_loop == "auto"
    assert event_loop.loop_name(settings) == "uvloop"  # a dependency on Linux: installed with the platform
    assert event_loop.run(_loop_module(), settings).startswith("uvloop")


def test_asyncio_runs_on_the_standard_loop() -> None:
    settings = Settings.from_env({"XPLATFORM_EVENT_LOOP": "asyncio"})
    assert event_loop.loop_name(settings) == "asyncio"
    assert event_loop.run(_loop_module(), settings).startswith("asyncio")


@pytest.mark.parametrize("value", ["", "tokio", "UVLOOP"])
def test_an_unknown_loop_is_refused_at_start_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigurationError, match="XPLATFORM_EVENT_LOOP must be one of auto, uvloop, asyncio"):
        Settings.from_env({"XPLATFORM_EVENT_LOOP": value})
