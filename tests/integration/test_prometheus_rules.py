"""A real Prometheus (Debian ``prometheus``) loads ops/prometheus/prometheus.yml as shipped
(only the targets files and the intervals are the test's), scrapes live processes — a state
node, an edge and a projector (into a MongoDB-wire server) of a real cluster (ZooKeeper,
PostgreSQL) and an ``xplatform run`` — after a little traffic, and evaluates every rule and every dashboard query through its HTTP API:

- every metric the rules and the dashboard name is one the processes expose (Prometheus's
  metadata of the scraped targets): a metric renamed in code fails here, not in production;
- every recording rule and dashboard query parses and returns data (a histogram quantile of
  an idle histogram is NaN: data), except those that only read counters whose label children
  appear with their first event (LAZY: nothing to count in a healthy test cluster) — those
  must parse;
- every alert expression parses; in every expression each series selector (label matchers
  included) returns data;
- the unserved-shards rule counts none for the cluster's one serving node;
- Prometheus evaluated every rule group without an error.

A Prometheus that cannot start fails the test with its log.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from edge.client import connect
from infrastructure.runtime.entity_modules import resolve_entities
from infrastructure.settings import SAMPLE_ENTITIES
from ops.local.prometheus import PrometheusServer, QueryError
from tests.support.chat_load import token
from tests.support.cluster import Cluster
from tests.support.monitoring import (
    PROMETHEUS_DIR,
    ROOT,
    Expression,
    dashboard_queries,
    metric_names,
    recorded_names,
    rule_expressions,
    selectors,
)
from tests.support.servers import MongoWireServer
from tests.support.xplatform_run import served

LAZY = {
    "xplatform_node_entities_released_total": "released{reason}: only when a shard moves away",
    "xplatform_transport_auth_failures_total": "auth failures{side,reason}: only on a refused handshake",
    "xplatform_transport_refused_messages_total": "refused{reason}: only on a refused delivery",
}
"""Counters whose label children are created by their first event (a healthy test cluster has
none); a query reading only these must parse, and the metric must be exposed (metadata)."""


def _family(name: str) -> str:
    """The metric family a sample name belongs to (as Prometheus's metadata names it)."""
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


async def _traffic(urls: dict[str, str]) -> None:
    """On each edge: an auctioneer opens a lot, a bidder registers and bids, both chat; the
    clients heartbeat fast so LATENCY frames arrive. Counters and label children exist then."""
    async with aiohttp.ClientSession() as session:
        for kind, url in urls.items():
            if kind == "dev":
                tokens = {}
                for sub, role in (("ann", "auctioneer"), ("bob", "bidder")):
                    async with session.get(f"{url}/dev/token", params={"sub": sub, "role": role}) as resp:
                        tokens[role] = str((await resp.json())["token"])
            else:
                tokens = {"auctioneer": token("ann", "auctioneer"), "bidder": token("bob", "bidder")}
            lot = f"lot-{uuid.uuid4().hex[:6]}"
            auctioneer = await connect(url, "Lot", lot, tokens["auctioneer"], heartbeat_s=0.2)
            bidder = await connect(url, "Lot", lot, tokens["bidder"], heartbeat_s=0.2)
            try:
                assert (await auctioneer.request({"type": "open", "title": "Vase"})).ok
                assert (await bidder.request({"type": "register", "limit": 1000})).ok
                for amount in range(1, 6):
                    reply = await bidder.request({"type": "bid", "amount": amount})
                    assert reply.ok, reply
                assert (await bidder.request({"type": "chat", "text": "hello"})).ok
                await asyncio.sleep(1.0)  # a few heartbeats and LATENCY reports
            finally:
                await bidder.close()
                await auctioneer.close()


def _prometheus_dir(tmp_path: Path, targets: dict[str, list[str]]) -> Path:
    """A copy of ops/prometheus with the targets files of this test and 1 s intervals."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, copy)
    config_path = copy / "prometheus.yml"
    config = yaml.safe_load(config_path.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config_path.write_text(yaml.safe_dump(config))
    files = {"xplatform-state": "state-nodes.json", "xplatform-edge": "edges.json", "xplatform-dev": "dev.json",
             "xplatform-projector": "projectors.json"}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(files), jobs  # the test feeds every job of the shipped config
    for job, name in files.items():
        assert jobs[job]["file_sd_configs"][0]["files"] == [f"targets/{name}"]
        (copy / "targets" / name).write_text(json.dumps([{"targets": targets[job], "labels": {"cluster": "test"}}]))
    return copy


def _host_port(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0]


def _until(check: Any, timeout: float) -> Any:
    """Poll ``check`` (returns a falsy list of problems when done) until it is done or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        problems = check()
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(1.0)


def test_every_rule_and_dashboard_query_evaluates_against_live_processes(cluster: Cluster, tmp_path: Path) -> None:
    node = cluster.start("state-node", "node-a")
    edge = cluster.start("edge", "edge-1", XPLATFORM_EDGE_HEARTBEAT_S="0.5")
    mongo = MongoWireServer.start()
    try:
        projector = cluster.start("projector", "projector-1", XPLATFORM_MONGO_URI=mongo.uri, XPLATFORM_METRICS_PORT="0",
                                  XPLATFORM_PROJECTOR_LAG_INTERVAL_S="0.5")
        _evaluate_live(cluster, node, edge, projector, tmp_path)
    finally:
        cluster.stop_all()  # the projector before its database
        mongo.stop()


def _evaluate_live(cluster: Cluster, node: Any, edge: Any, projector: Any, tmp_path: Path) -> None:
    node_metrics, edge_metrics, projector_metrics = (
        p.ready_line.split("(metrics: ", 1)[1].split(")", 1)[0] for p in (node, edge, projector))
    edge_url = edge.ready_line.split("ready on ")[1].strip().rstrip("/")
    env = {**os.environ, "XPLATFORM_DATA_DIR": str(tmp_path / "dev-data"), "PYTHONPATH": str(ROOT),
           "XPLATFORM_EDGE_HEARTBEAT_S": "0.5"}
    with served(tmp_path, env) as dev_url:
        asyncio.run(_traffic({"cluster": edge_url, "dev": dev_url.rstrip("/")}))
        config = _prometheus_dir(tmp_path, {"xplatform-state": [_host_port(node_metrics)],
                                            "xplatform-edge": [_host_port(edge_metrics)],
                                            "xplatform-dev": [_host_port(dev_url)],
                                            "xplatform-projector": [_host_port(projector_metrics)]})
        prometheus = PrometheusServer.start(config / "prometheus.yml")
        try:
            _evaluate(prometheus)
        except BaseException:
            print(f"----- prometheus\n{prometheus.log()}\n{cluster.logs()}")
            raise
        finally:
            prometheus.destroy()


def _evaluate(prometheus: PrometheusServer) -> None:
    up = _until(lambda: [] if len(prometheus.query("up == 1")) == 4 else prometheus.query("up"), 60)
    assert not up, f"not every target is scraped: {up}"

    rules = rule_expressions()
    panels = dashboard_queries()
    recorded = set(recorded_names())
    names = {name for e in rules + panels for name in metric_names(e.expr)} - recorded - {"up"}

    def unknown_metrics() -> list[str]:
        known = set(prometheus.api("metadata"))
        return sorted(name for name in names if _family(name) not in known and _family(name.removesuffix("_total")) not in known)

    missing = _until(unknown_metrics, 30)
    assert not missing, f"named by the rules or the dashboard, exposed by no process: {missing}"

    def lazy_only(e: Expression) -> bool:
        used = set(metric_names(e.expr)) - recorded
        return bool(used) and used <= set(LAZY)

    def empty() -> list[str]:
        problems = []
        for e in rules + panels:
            try:
                result = prometheus.query(e.expr)  # parses and evaluates
                if lazy_only(e):
                    continue
                if e.kind != "alert" and not result:  # an alert's result is the situation's business
                    problems.append(f"{e.origin}: no data for {e.expr}")
                for selector in selectors(e.expr):  # label matchers too (an `or` can hide a renamed label)
                    if selector.split("{")[0] not in LAZY and not prometheus.query(selector):
                        problems.append(f"{e.origin}: {selector} has no data")
            except QueryError as refused:
                problems.append(f"{e.origin}: {refused} in {e.expr}")
        return problems

    problems = _until(empty, 90)
    assert not problems, "\n".join(problems)

    unserved = prometheus.query("cluster_category:xplatform_cluster_shards_unserved:count")
    served_categories = set(resolve_entities(SAMPLE_ENTITIES).categories)  # the cluster's default entities
    assert {r["metric"]["category"] for r in unserved} == served_categories  # node-a serves every shard
    assert all(float(r["value"][1]) == 0 for r in unserved), unserved

    groups = prometheus.api("rules")["groups"]
    evaluated = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert len(evaluated) == len(rules)
    failing = {name: rule.get("lastError") for name, rule in evaluated.items() if rule["health"] != "ok"}
    assert not failing, failing


@pytest.mark.parametrize("lazy", sorted(LAZY))
def test_lazy_metrics_are_only_read_where_their_absence_is_expected(lazy: str) -> None:
    """LAZY is an exception list, not a hiding place: each entry is used by the dashboard or
    the rules, and no alert reads it (an alert on a series that may not exist never fires)."""
    uses = [e for e in rule_expressions() + dashboard_queries() if lazy in metric_names(e.expr)]
    assert uses and all(e.kind == "panel" for e in uses)
