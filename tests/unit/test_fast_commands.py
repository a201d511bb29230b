"""The fast call path of ``@event`` command methods (domain/commands.py) makes the same
events as the eventsourcing library's path, and leaves everything unusual to the library."""

from __future__ import annotations

from typing import Any

import pytest
from eventsourcing.domain import BoundCommandMethodDecorator, event

from domain.commands import FastCommand
from domain.entity import Entity


class Shelf(Entity):
    def initialise(self) -> None:
        self.items: list[Any] = []

    @event("Stocked")
    def stock(self, item: str, count: int = 1, note: str | None = None) -> None:
        self.items.append((item, count, note))


def _fields(e: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(e).items() if k != "timestamp"}


def _library(shelf: Shelf, *args: Any, **kwargs: Any) -> None:
    decorator = type(shelf).__dict__["stock"].decorator
    BoundCommandMethodDecorator(decorator, shelf).trigger(*args, **kwargs)


def test_command_methods_take_the_fast_path() -> None:
    assert isinstance(Shelf.__dict__["stock"], FastCommand)


@pytest.mark.parametrize(("args", "kwargs"), [
    ((), {"item": "pen"}),  # defaults filled in
    ((), {"item": "pen", "count": 3, "note": "blue"}),
    (("pen", 2), {}),  # positional: the library's path
    (("pen",), {"note": "x"}),
])
def test_fast_and_library_paths_make_equal_events_and_state(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    fast, slow = Shelf.blank("a"), Shelf.blank("a")
    fast.stock(*args, **kwargs)
    _library(slow, *args, **kwargs)
    [made] = fast.collect_events()
    [expected] = slow.collect_events()
    assert type(made) is type(expected)
    assert _fields(made) == _fields(expected)
    assert made.timestamp.tzinfo is not None and fast.version == slow.version == 1
    assert fast.items == slow.items


@pytest.mark.parametrize("kwargs", [{}, {"item": "pen", "colour": "red"}, {"count": 2}])
def test_wrong_arguments_fail_as_the_library_says_and_change_nothing(kwargs: dict[str, Any]) -> None:
    fast, slow = Shelf.blank("a"), Shelf.blank("a")
    with pytest.raises(TypeError) as fast_error:
        fast.stock(**kwargs)
    with pytest.raises(TypeError) as slow_error:
        _library(slow, **kwargs)
    assert str(fast_error.value) == str(slow_error.value)
    assert fast.version == 0 and fast.items == [] and not fast.collect_events()
