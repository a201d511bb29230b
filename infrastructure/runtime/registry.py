"""Which entity class serves which category on this platform."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from domain.entity import Entity
from infrastructure.errors import ConfigurationError


class EntityTypes:
    """Category → entity class. Refuses two classes for one category at start."""

    def __init__(self, classes: Iterable[type[Entity]] = ()) -> None:
        self._by_category: dict[str, type[Entity]] = {}
        for cls in classes:
            self.register(cls)

    def register(self, cls: type[Entity]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Entity)):
            raise ConfigurationError(f"{cls!r} is not an Entity subclass")
        existing = self._by_category.get(cls.CATEGORY)
        if existing is not None and existing is not cls:
            raise ConfigurationError(f"category {cls.CATEGORY!r} is served by both {existing.__qualname__} and {cls.__qualname__}")
        self._by_category[cls.CATEGORY] = cls

    def get(self, category: str) -> type[Entity] | None:
        return self._by_category.get(category)

    def __getitem__(self, category: str) -> type[Entity]:
        return self._by_category[category]

    def __iter__(self) -> Iterator[type[Entity]]:
        return iter(self._by_category.values())

    @property
    def categories(self) -> list[str]:
        return sorted(self._by_category)
