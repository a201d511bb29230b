"""The changes a projection handler declares, and what they do to a document.

A handler never writes: it returns changes to documents of its read model, each naming the
document by ``key`` (its ``_id``):

- :class:`Set` fields (dotted paths reach into maps: ``"lots.vase"``; build paths from
  untrusted segments such as entity IDs with :func:`path`, which escapes ``.`` and ``$``);
- :class:`Unset` fields;
- :class:`Increment` numeric fields (a missing field counts from 0);
- :class:`Push` values onto a list field, keeping only the last ``cap`` items (a bounded
  "recent" list: documents must stay small);
- :class:`Delete` the document.

A change to a document that does not exist creates it (except Unset and Delete, which then
do nothing). The changes of one event to one document are applied together, atomically, in
MongoDB as in the sandbox; two of them touching the same field (or a field and a map
inside it) is a :class:`~projections.errors.ChangeError`, as is a field name starting with
``_`` (reserved: ``_id`` and the bookkeeping) or ``$``. Values must be what a document can
hold (None, bool, int of 64 bits, float, str, datetime, lists and string-keyed maps of
them): the sandbox refuses the rest as MongoDB would. A datetime is kept as MongoDB keeps
it: in UTC, to the millisecond (a naive one is taken as UTC).

:func:`apply_changes` is the in-memory meaning of a change, used by the sandbox and by the
MongoDB writer's view of documents within a batch; ``tests/projections/test_mongo_model.py``
checks that MongoDB's update operators give the same documents.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from projections.errors import ChangeError

INT64 = (-(2**63), 2**63 - 1)


def escape_segment(segment: str) -> str:
    """``segment`` made safe as one field name: ``%``, ``.`` and ``$`` percent-escaped."""
    return segment.replace("%", "%25").replace(".", "%2E").replace("$", "%24")


def path(*segments: str) -> str:
    """A dotted field path from segments, each escaped (``path("lots", "a.b")`` →
    ``"lots.a%2Eb"``): use it whenever a segment comes from data (an entity ID, a user)."""
    return ".".join(escape_segment(str(s)) for s in segments)


@dataclass(frozen=True, slots=True)
class Set:
    """Set ``fields`` (path → value) of document ``key``."""

    key: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Unset:
    """Remove ``fields`` (paths) of document ``key``; a missing field is no change."""

    key: str
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Increment:
    """Add to numeric ``fields`` (path → amount, negative to subtract) of document ``key``."""

    key: str
    fields: Mapping[str, int | float]


@dataclass(frozen=True, slots=True)
class Push:
    """Append ``values`` to the list at ``field`` of document ``key``, then keep only the
    last ``cap`` items (None: no cap; keep documents bounded, prefer a cap)."""

    key: str
    field: str
    values: tuple[Any, ...]
    cap: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove document ``key``."""

    key: str


Change = Set | Unset | Increment | Push | Delete
CHANGE_TYPES = (Set, Unset, Increment, Push, Delete)


# ---------------------------------------------------------------------- validation
def _check_path(field_path: object) -> tuple[str, ...]:
    if not isinstance(field_path, str) or not field_path:
        raise ChangeError(f"a field path is a non-empty string, not {field_path!r}")
    parts = tuple(field_path.split("."))
    if any(not part for part in parts):
        raise ChangeError(f"field path {field_path!r} has an empty segment")
    if parts[0].startswith("_"):
        raise ChangeError(f"field {field_path!r}: names starting with '_' are reserved (use path() for data)")
    if any(part.startswith("$") for part in parts):
        raise ChangeError(f"field path {field_path!r} has a segment starting with '$' (use path() for data)")
    return parts


def plain(value: Any) -> Any:
    """``value`` as a document holds it (maps → dict, tuples → list), or ChangeError."""
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, datetime):  # as a document stores it: UTC, milliseconds (BSON dates)
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).replace(microsecond=aware.microsecond // 1000 * 1000)
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise ChangeError(f"integer {value} does not fit in 64 bits")
        return value
    if isinstance(value, Mapping):
        out = {}
        for name, item in value.items():
            if not isinstance(name, str) or name.startswith("$") or "." in name:
                raise ChangeError(f"map key {name!r} must be a string without '.' and not starting with '$'")
            out[name] = plain(item)
        return out
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    raise ChangeError(f"a document cannot hold a {type(value).__name__} ({value!r})")


def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]


def check_changes(changes: object) -> list[Change]:
    """The changes a handler returned, checked and normalised (values made plain), or
    ChangeError. None means no changes."""
    if changes is None:
        return []
    if isinstance(changes, CHANGE_TYPES):
        changes = [changes]
    if not isinstance(changes, Iterable) or isinstance(changes, (str, bytes, Mapping)):
        raise ChangeError(f"a handler returns a list of changes, not {type(changes).__name__}")
    out: list[Change] = []
    touched: dict[str, list[tuple[str, ...]]] = {}
    deleted: set[str] = set()
    for change in changes:
        if not isinstance(change, CHANGE_TYPES):
            raise ChangeError(f"{change!r} is not a change (Set, Unset, Increment, Push, Delete)")
        key = change.key
        if not isinstance(key, str) or not key:
            raise ChangeError(f"a document key is a non-empty string, not {key!r}")
        if key in deleted or (isinstance(change, Delete) and key in touched):
            raise ChangeError(f"document {key!r}: Delete together with other changes of one event")
        paths: list[str]
        if isinstance(change, Set):
            paths = list(change.fields)
            change = Set(key, {p: plain(v) for p, v in change.fields.items()})
        elif isinstance(change, Unset):
            fields = (change.fields,) if isinstance(change.fields, str) else tuple(change.fields)
            paths = list(fields)
            change = Unset(key, fields)
        elif isinstance(change, Increment):
            for p, amount in change.fields.items():
                if isinstance(amount, bool) or not isinstance(amount, (int, float)):
                    raise ChangeError(f"increment of {p!r} by {amount!r}: not a number")
            paths = list(change.fields)
            change = Increment(key, {p: plain(v) for p, v in change.fields.items()})
        elif isinstance(change, Push):
            if change.cap is not None and (isinstance(change.cap, bool) or not isinstance(change.cap, int) or change.cap < 1):
                raise ChangeError(f"push cap must be a positive integer or None, not {change.cap!r}")
            paths = [change.field]
            change = Push(key, change.field, tuple(plain(list(change.values))), change.cap)
        else:
            deleted.add(key)
            out.append(change)
            continue
        mine = touched.setdefault(key, [])
        for field_path in paths:
            parts = _check_path(field_path)
            if any(_overlaps(parts, other) for other in mine):
                raise ChangeError(f"document {key!r}: field {field_path!r} changed twice by one event")
            mine.append(parts)
        out.append(change)
    return out


# ---------------------------------------------------------------------- meaning
def _parent(doc: dict[str, Any], parts: Sequence[str], create: bool) -> dict[str, Any] | None:
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            if not create:
                return None
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ChangeError(f"field {'.'.join(parts)!r}: {part!r} is not a map")
        node = child
    return node


def apply_changes(doc: dict[str, Any] | None, key: str, changes: Iterable[Change]) -> dict[str, Any] | None:
    """Document ``key`` after ``changes`` (those of one event for this key, checked), or
    None when it is deleted or never existed. ``doc`` is not modified."""
    out = None if doc is None else copy.deepcopy(doc)
    for change in changes:
        if isinstance(change, Delete):
            out = None
            continue
        if isinstance(change, Unset):
            if out is not None:
                for field_path in change.fields:
                    parts = field_path.split(".")
                    parent = _parent(out, parts, create=False)
                    if parent is not None:
                        parent.pop(parts[-1], None)
            continue
        if out is None:
            out = {"_id": key}
        if isinstance(change, Set):
            for field_path, value in change.fields.items():
                parts = field_path.split(".")
                parent = _parent(out, parts, create=True)
                assert parent is not None
                parent[parts[-1]] = copy.deepcopy(value)
        elif isinstance(change, Increment):
            for field_path, amount in change.fields.items():
                parts = field_path.split(".")
                parent = _parent(out, parts, create=True)
                assert parent is not None
                current = parent.get(parts[-1], 0)
                if isinstance(current, bool) or not isinstance(current, (int, float)):
                    raise ChangeError(f"increment of {field_path!r}: the field holds {current!r}, not a number")
                parent[parts[-1]] = current + amount
        elif isinstance(change, Push):
            parts = change.field.split(".")
            parent = _parent(out, parts, create=True)
            assert parent is not None
            current = parent.get(parts[-1])
            if current is None:
                current = []
            if not isinstance(current, list):
                raise ChangeError(f"push to {change.field!r}: the field holds {current!r}, not a list")
            items = current + copy.deepcopy(list(change.values))
            parent[parts[-1]] = items[-change.cap:] if change.cap is not None else items
    return out


__all__ = ["Change", "Delete", "Increment", "Push", "Set", "Unset", "apply_changes", "check_changes", "path"]
