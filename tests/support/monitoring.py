"""What ops/prometheus and ops/grafana ask of the platform's metrics, as data for tests:
every dashboard query, every rule expression, and the metric selectors inside them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "ops" / "prometheus"
GRAFANA_DIR = ROOT / "ops" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "xplatform.json"

GRAFANA_VARIABLES = {"$__rate_interval": "1m"}
"""Grafana's variables the dashboard uses, as a test evaluates them (1 m: many samples at the
test's 1 s scrape interval)."""

_SELECTOR = re.compile(r'(?<![\w:"])((?:[a-z_]+:)?xplatform_[A-Za-z0-9_:]*|up)\b\s*(\{[^}]*\})?')


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it comes from (for failure messages)."""

    origin: str
    expr: str
    kind: str  # "panel", "record" or "alert"


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(board: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every panel, rows' nested (collapsed) panels included, in order."""
    found = []
    for panel in (board or dashboard())["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_queries() -> list[Expression]:
    queries = []
    for panel in panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append(Expression(f"panel {panel['title']!r} target {target['refId']}", expr, "panel"))
    return queries


def rule_expressions() -> list[Expression]:
    found = []
    for path in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                kind = "record" if "record" in rule else "alert"
                found.append(Expression(f"{path.name} {kind} {rule.get('record') or rule.get('alert')}", rule["expr"], kind))
    return found


def recorded_names() -> list[str]:
    return [e.origin.rsplit(" ", 1)[1] for e in rule_expressions() if e.kind == "record"]


def selectors(expr: str) -> list[str]:
    """The series selectors (name and label matchers) of ``xplatform_*`` metrics, recording
    rules and ``up`` in ``expr``."""
    return sorted({name + (matchers or "") for name, matchers in _SELECTOR.findall(expr)})


def metric_names(expr: str) -> list[str]:
    return sorted({name for name, _ in _SELECTOR.findall(expr)})
