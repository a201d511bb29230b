"""``xplatform new NAME``: write a minimal entity package a new user can test in the
sandbox and serve with ``xplatform run`` unchanged (issue 11 item 6).

The package holds one entity (a counter: the smallest thing with a command, an event, an
invariant and a state to show), its sandbox test and a README with the settings line.
The templates live here, apart from the CLI, so they can be read as the example they are."""

from __future__ import annotations

import importlib.util
import keyword
from pathlib import Path

from infrastructure.errors import InfrastructureError


class ScaffoldError(InfrastructureError):
    """Raised when ``xplatform new`` is asked for a name that is not a Python package name
    or a target that already exists; nothing is written."""


ENTITIES_TEMPLATE = '''\
"""The {name} package's entities: serve them with
``XPLATFORM_ENTITIES={name}.entities:ENTITIES xplatform run``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain import Context, Entity, Rejected, client_message, event


class {cls}(Entity):
    """A counter anyone connected may add to: one command, one event, one invariant."""

    CATEGORY = "{cls}"
    MAX_AMOUNT = 1000

    def initialise(self) -> None:
        """State before any event: nothing added yet."""
        self.total = 0

    def on_connect(self, ctx: Context, claims: Mapping[str, Any], reconnect: bool) -> Any:
        """A client connects: send it the current state."""
        return {{"total": self.total}}

    @client_message("add")
    def add(self, ctx: Context, amount: int) -> int:
        """Add ``amount`` to the total and answer the new total."""
        self.check_can_add(amount)
        self._added(amount=amount)
        return self.total

    def check_can_add(self, amount: Any) -> None:
        """Invariant: an amount is a whole number from 1 to MAX_AMOUNT."""
        if not isinstance(amount, int) or isinstance(amount, bool) or not 1 <= amount <= self.MAX_AMOUNT:
            raise Rejected(f"amount must be a whole number from 1 to {{self.MAX_AMOUNT}}")

    @event("Added")
    def _added(self, amount: int) -> None:
        """The event: applied now and on every reload, so it only changes state."""
        self.total += amount


ENTITIES = [{cls}]
'''

TEST_TEMPLATE = '''\
"""Sandbox tests of {cls}: every event goes through the real codec, no server."""

from __future__ import annotations

from domain import EntityRef
from infrastructure.testkit import Sandbox

from {name}.entities import {cls}


def test_add_stores_an_event_and_changes_the_state() -> None:
    kit = Sandbox({cls})
    ref = EntityRef("{cls}", "c1")
    assert kit.connect(ref, "conn-ann", {{"sub": "ann"}}).reply.payload == {{"total": 0}}
    result = kit.client(ref, "conn-ann", {{"type": "add", "amount": 3}})
    assert result.ok and result.reply.payload == 3
    assert result.event_names == ["Added"]
    assert kit.state(ref).total == 3
    kit.restart()  # reloaded from the stored events, as after a failover
    assert kit.state(ref).total == 3


def test_a_bad_amount_is_refused_and_stores_nothing() -> None:
    kit = Sandbox({cls})
    ref = EntityRef("{cls}", "c1")
    kit.connect(ref, "conn-ann", {{"sub": "ann"}})
    result = kit.client(ref, "conn-ann", {{"type": "add", "amount": 0}})
    assert not result.ok and result.reply.code == "rejected"
    assert result.events == [] and kit.state(ref).total == 0
'''

README_TEMPLATE = '''\
# {name}

One entity, `{cls}` (`{name}/entities.py`), and its sandbox test (`{name}/test_entities.py`).

Test it (no server), from the directory holding `{name}/`:

    python -m pytest {name}

Serve it (websockets at `/ws/{cls}/<id>`):

    XPLATFORM_ENTITIES={name}.entities:ENTITIES xplatform run
'''


def _class_name(name: str) -> str:
    """``my_shop`` -> ``MyShopCounter``: the suffix keeps it clear of the names the module imports."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_")) + "Counter"


def new_package(name: str, directory: Path) -> Path:
    """Write package ``name`` under ``directory`` and return its path; refuse (ScaffoldError,
    nothing written) a name that is not a Python identifier or is already an importable
    module, or a target that exists."""
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ScaffoldError(f"{name!r} is not a valid Python package name (letters, digits, '_'; not a keyword)")
    target = directory / name
    if target.exists() or target.is_symlink():
        raise ScaffoldError(f"{target} already exists; nothing written")
    if not directory.is_dir():
        raise ScaffoldError(f"{directory} is not a directory; nothing written")
    if importlib.util.find_spec(name) is not None:  # e.g. 'json', 'domain': one of the two would be hidden
        raise ScaffoldError(f"{name!r} is already an importable module; choose another name, nothing written")
    fields = {"name": name, "cls": _class_name(name)}
    files = {
        "__init__.py": f'"""{name}: entities for X Platform (made by xplatform new)."""\n',
        "entities.py": ENTITIES_TEMPLATE.format(**fields),
        "test_entities.py": TEST_TEMPLATE.format(**fields),
        "README.md": README_TEMPLATE.format(**fields),
    }
    target.mkdir()
    for filename, text in files.items():
        (target / filename).write_text(text)
    return target
