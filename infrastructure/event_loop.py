"""The event loop a serving process runs on: uvloop where it is installed, by setting.

Why a choice at all: a hot entity's fan-out is one socket write per viewer per tick and its
bids are thousands of small reads and writes per second; uvloop does each of these in C
where asyncio's own loop runs Python. The gain is small but steady (the ``event_loop``
setting gives what it measured); the choice also lets an operator rule the loop out.
Everything above the loop is the same code on both; the tests run the in-process parts on
asyncio's loop and the started processes on the default, so both stay exercised.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

from infrastructure.errors import ConfigurationError
from infrastructure.settings import Settings

T = TypeVar("T")


def loop_name(settings: Settings) -> str:
    """'uvloop' or 'asyncio': what :func:`run` will use with ``settings``."""
    if settings.event_loop == "asyncio":
        return "asyncio"
    if importlib.util.find_spec("uvloop") is not None:
        return "uvloop"
    if settings.event_loop == "uvloop":
        raise ConfigurationError("XPLATFORM_EVENT_LOOP=uvloop but uvloop is not installed "
                                 "(pip install uvloop, or XPLATFORM_EVENT_LOOP=auto)")
    return "asyncio"


def run(main: Coroutine[Any, Any, T], settings: Settings) -> T:
    """``asyncio.run(main)`` on the loop ``settings`` choose (:func:`loop_name`)."""
    if loop_name(settings) == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
