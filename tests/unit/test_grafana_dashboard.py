"""ops/grafana holds together without a Grafana: the dashboard's panels name the provisioned
datasource, do not overlap, and query something; the provisioning files point where the
README says; the README describes the dashboard's rows as they are (in order). Whether the
queries work is tests/integration/test_prometheus_rules.py's job (a real Prometheus)."""

from __future__ import annotations

import yaml

from tests.support.monitoring import GRAFANA_DIR, dashboard, dashboard_queries, panels


def test_panels_use_the_provisioned_datasource_and_do_not_overlap() -> None:
    board = dashboard()
    source = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "xplatform.yml").read_text())["datasources"][0]
    assert source["type"] == "prometheus"
    every = panels(board)
    assert len({p["id"] for p in every}) == len(every)
    cells: set[tuple[int, int]] = set()
    for panel in every:
        if panel["type"] == "timeseries":
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]
            assert panel["targets"] and all(t["datasource"]["uid"] == source["uid"] and t["expr"] for t in panel["targets"])
            assert panel.get("description"), f"{panel['title']}: say what it shows"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    assert len(dashboard_queries()) >= 30


def test_dashboard_provider_and_readme_rows() -> None:
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "xplatform.yml").read_text())["providers"][0]
    readme = (GRAFANA_DIR / "README.md").read_text()
    assert provider["type"] == "file" and f":{provider['options']['path']}" in readme  # the mount the README shows
    rows = [p["title"] for p in dashboard()["panels"] if p["type"] == "row"]
    described = [line.split("**")[1] for line in readme.splitlines() if line[:1].isdigit() and "**" in line]
    assert described == rows
