"""``module:ATTRIBUTE`` topics: how settings name code a process loads (entity classes,
``XPLATFORM_ENTITIES``; projections, ``XPLATFORM_PROJECTIONS``), resolved at start so a
wrong one is one line naming it, never a failure at the first message."""

from __future__ import annotations

import importlib


def topic_members(topic: str, setting: str, example: str, error: type[Exception]) -> list[object]:
    """What ``topic`` names, as a list (an attribute that is a list/tuple gives its members).
    Raises ``error`` with a message naming ``setting`` and the topic when it is malformed, its
    module is missing or fails to import, the attribute is missing, or the list is empty;
    what the members must be is the caller's to check."""
    module_name, colon, attribute = topic.partition(":")
    if not colon or not module_name or not attribute:
        raise error(f"{setting} topic {topic!r} must be module:ATTRIBUTE (e.g. {example})")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise error(f"{setting} topic {topic!r}: no module {module_name!r} "
                        "(is its directory on PYTHONPATH, or its package installed?)") from None
        raise error(f"{setting} topic {topic!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # the module's own code failed: name it, keep the cause
        raise error(f"{setting} topic {topic!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    value: object = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise error(f"{setting} topic {topic!r}: module {module_name!r} has no attribute {attribute!r}")
        value = getattr(value, part)
    members = list(value) if isinstance(value, (list, tuple)) else [value]
    if not members:
        raise error(f"{setting} topic {topic!r} is an empty list")
    return members


__all__ = ["topic_members"]
