"""XPLATFORM_ENTITIES: the entity classes every process serves, resolved in one function;
each wrong setting fails at start with an EntityTopicError naming the topic (issue 11 item 1).
The end-to-end case (``xplatform run`` serving a module from a temporary directory) is in
tests/unit/test_run_own_entities.py."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.auction import Bidder, Lot
from domain.presence import Room, UserState
from domain.stock import Order, StockLevel
from infrastructure.errors import ConfigurationError
from infrastructure.runtime.entity_modules import EntityTopicError, entity_types_from, resolve_entities
from infrastructure.settings import Settings
from ops.wiring.dev import build_platform

MODULE = '''
from domain import Entity

class Note(Entity):
    CATEGORY = "Note"

class OtherNote(Entity):
    CATEGORY = "Note"

class Plain:
    CATEGORY = "Plain"

NOT_ENTITIES = [Note, Plain]
BOTH = (Note, OtherNote)
BASE = Entity
EMPTY = ()
'''


@pytest.fixture
def notes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module ``xp_notes_<id>`` on sys.path (as a directory on PYTHONPATH would be)."""
    name = f"xp_notes_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    (tmp_path / f"{name}_broken.py").write_text("import no_such_dependency_xp\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in (name, f"{name}_broken"):
        sys.modules.pop(module, None)


def test_the_default_is_the_three_samples() -> None:
    types = entity_types_from(Settings())
    assert list(types) == [Lot, Bidder, UserState, Room, StockLevel, Order]
    assert types.categories == ["Bidder", "Lot", "Order", "Room", "StockLevel", "UserState"]


def test_several_topics_classes_and_lists(notes: str) -> None:
    types = resolve_entities(f" {notes}:Note , domain.auction:ENTITIES,domain.auction:Lot")
    assert types.categories == ["Bidder", "Lot", "Note"]  # the same class twice is one class


@pytest.mark.parametrize(("topic", "says"), [
    ("{m}", "must be module:ATTRIBUTE"),
    ("{m}:", "must be module:ATTRIBUTE"),
    ("xp_no_such_module_at_all:ENTITIES", "no module 'xp_no_such_module_at_all'"),
    ("{m}_broken:X", "failed: No module named 'no_such_dependency_xp'"),
    ("{m}:MISSING", "has no attribute 'MISSING'"),
    ("{m}:Plain", "is not an Entity subclass"),
    ("{m}:NOT_ENTITIES", "is not an Entity subclass"),
    ("{m}:EMPTY", "is an empty list"),
    ("{m}:BASE", "has no CATEGORY"),
    ("{m}:BOTH", "category 'Note' is claimed by both"),
    ("{m}:Note,{m}:OtherNote", "category 'Note' is claimed by both"),
    (" , ", "names no entity module"),
])
def test_a_wrong_setting_is_refused_naming_the_topic(notes: str, topic: str, says: str) -> None:
    setting = topic.format(m=notes)
    with pytest.raises(EntityTopicError) as refused:
        resolve_entities(setting)
    assert isinstance(refused.value, ConfigurationError)  # xplatform: one line, exit 2
    assert says in str(refused.value)
    if setting.strip(" ,"):
        assert repr(setting.split(",")[-1].strip()) in str(refused.value)  # names the (last) topic it tried


def test_the_platform_refuses_to_start_before_opening_anything(tmp_path: Path) -> None:
    settings = Settings(store="sqlite", data_dir=str(tmp_path / "data"), entities="domain.auction:Nothing")
    with pytest.raises(EntityTopicError, match="domain.auction:Nothing"):
        build_platform(settings)
    assert not (tmp_path / "data").exists()  # no journal was opened


def test_the_setting_comes_from_the_environment() -> None:
    settings = Settings.from_env({"XPLATFORM_ENTITIES": "domain.auction:Lot"})
    assert entity_types_from(settings).categories == ["Lot"]
