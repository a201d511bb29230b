"""The distribution layout: which state nodes may hold shards of which categories, and how
large a share each takes (the seed's "which node holds which share of which categories").

A layout is a list of rules, matched by node *group* (a label a node registers with, e.g.
``eu-hot`` or ``default``). Each rule names the categories the group serves and the
weight of each of its nodes. Categories no rule mentions fall to the ``*`` rule when there
is one. A layout that leaves a category without any group is refused at start
(:class:`~infrastructure.errors.ConfigurationError`): a category nobody may host would
silently turn every message for it into an error.

JSON form (setting ``XPLATFORM_CLUSTER_LAYOUT``)::

    [{"group": "hot", "categories": ["Lot"], "weight": 2, "mirrors": 1},
     {"group": "default", "categories": ["*"]}]

``mirrors`` (0 or 1, default 0): whether each shard of the rule's categories also gets a
standby node (hot mirror, warm takeover; see allocation.py). A category takes it from the
rules that name it, else from the ``*`` rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from infrastructure.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class LayoutRule:
    group: str
    categories: frozenset[str]
    weight: int = 1
    mirrors: int = 0

    def serves(self, category: str) -> bool:
        return category in self.categories or "*" in self.categories


@dataclass(frozen=True)
class Layout:
    rules: tuple[LayoutRule, ...]

    @classmethod
    def everything(cls) -> Layout:
        """Every node serves every category with equal weight (the default)."""
        return cls((LayoutRule("*", frozenset({"*"})),))

    @classmethod
    def parse(cls, text: str) -> Layout:
        try:
            raw = json.loads(text)
            rules = tuple(LayoutRule(str(r["group"]), frozenset(map(str, r["categories"])), int(r.get("weight", 1)),
                                     int(r.get("mirrors", 0)))
                          for r in raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigurationError(f"XPLATFORM_CLUSTER_LAYOUT is not a list of {{group, categories, weight, mirrors}}: "
                                     f"{exc}") from None
        if not rules or any(r.weight < 1 or not r.categories for r in rules):
            raise ConfigurationError("XPLATFORM_CLUSTER_LAYOUT needs rules with categories and weights >= 1")
        if any(r.mirrors not in (0, 1) for r in rules):
            raise ConfigurationError("XPLATFORM_CLUSTER_LAYOUT: mirrors must be 0 or 1 (one standby per shard)")
        return cls(rules)

    def mirrors(self, category: str) -> int:
        """Standbys per shard of ``category``: from the rules naming it, else the ``*`` rules."""
        explicit = [r.mirrors for r in self.rules if category in r.categories]
        return max(explicit or [r.mirrors for r in self.rules if "*" in r.categories] or [0])

    @property
    def any_mirrors(self) -> bool:
        return any(r.mirrors for r in self.rules)

    def check_covers(self, categories: Iterable[str]) -> None:
        """Refuse a layout that leaves a category without any group of nodes."""
        orphans = sorted(c for c in categories if not any(r.serves(c) for r in self.rules))
        if orphans:
            raise ConfigurationError(f"the cluster layout leaves these categories without nodes: {', '.join(orphans)}")

    def weight(self, group: str, category: str) -> int:
        """Share weight of a node of ``group`` for ``category`` (0: may not host it).
        A rule naming the category beats a ``*`` rule; group ``*`` matches any group."""
        explicit = [r for r in self.rules if category in r.categories and r.group in (group, "*")]
        wildcard = [r for r in self.rules if "*" in r.categories and r.group in (group, "*")]
        chosen = explicit or ([] if self._claimed_elsewhere(category, group) else wildcard)
        return max((r.weight for r in chosen), default=0)

    def _claimed_elsewhere(self, category: str, group: str) -> bool:
        """A category named by some rule is hosted only by the groups that name it."""
        return any(category in r.categories for r in self.rules if r.group not in (group, "*"))


def eligible(layout: Layout, category: str, groups: Mapping[str, str]) -> dict[str, int]:
    """node_id → weight of the nodes (``groups``: node_id → group) that may host ``category``."""
    weights = {node: layout.weight(group, category) for node, group in groups.items()}
    return {node: w for node, w in weights.items() if w > 0}


def require_nodes(layout: Layout, categories: Sequence[str], groups: Mapping[str, str]) -> None:
    """Used by tooling: every category has at least one live eligible node."""
    missing = [c for c in categories if not eligible(layout, c, groups)]
    if missing:
        raise ConfigurationError(f"no live node may host: {', '.join(missing)}")
