"""The production topology under ops/deploy/ cannot run here (no Docker engine, no
Kubernetes), so it is checked statically: every Kubernetes object against the API schema
of its kind (kubernetes-validate, strict: unknown fields are errors; schemas ship in the
package, no network), the compose file against the Compose Specification schema
(vendored in check-jsonschema), and the structure the platform relies on: three-node
KurrentDB, ZooKeeper and MongoDB groups that name each other consistently, settings that
exist, secrets referenced rather than inlined, and commands the CLI really has.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import io
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from edge.config import EdgeConfig
from infrastructure.settings import Settings
from ops.cli import main as xplatform

DEPLOY = Path(__file__).resolve().parents[2] / "ops" / "deploy"
K8S_VERSION = "1.30.0"
SETTINGS_FIELDS = {f"XPLATFORM_{name.upper()}" for name, _, _ in Settings().describe()}


def k8s_objects() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in k8s_objects() if doc["kind"] == kind}


def cli_commands() -> set[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        xplatform(["--help"])
    return set(re.search(r"\{([a-z,-]+)\}", out.getvalue()).group(1).split(","))  # type: ignore[union-attr]


def check_platform_env(env: dict[str, str]) -> Settings:
    """Every XPLATFORM_* name is a real setting and the values make valid Settings."""
    names = {k for k in env if k.startswith("XPLATFORM_")}
    assert names <= SETTINGS_FIELDS, names - SETTINGS_FIELDS
    filled = {k: ("secret-from-the-cluster" if v is None else v) for k, v in env.items()}
    filled["XPLATFORM_EVENTSTOREDB_TLS_CA_FILE"] = __file__  # mounted from a secret there; any file here
    settings = Settings.from_env(filled)
    assert settings.store == "eventstoredb"
    return settings


def check_edge_env(settings: Settings) -> None:
    """What `xplatform edge` builds from these settings starts (iss/aud set) and keeps
    /metrics off the public port."""
    config = EdgeConfig.from_settings(settings, dev_tokens=False)
    assert config.jwt_issuer and config.jwt_audience
    assert config.metrics_port != config.port


# ---------------------------------------------------------------------------- kubernetes
@pytest.mark.parametrize("name,doc", k8s_objects(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_every_kubernetes_object_matches_its_api_schema(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "xplatform"


def test_the_validator_would_catch_a_typo() -> None:
    statefulset = dict(by_kind("StatefulSet")["zk"])
    statefulset["spec"] = {**statefulset["spec"], "replcas": 3}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, K8S_VERSION, strict=True)


def test_three_node_groups_with_quorum_budgets_and_matching_services() -> None:
    statefulsets, services, budgets = by_kind("StatefulSet"), by_kind("Service"), by_kind("PodDisruptionBudget")
    for name in ("kurrentdb", "zk", "mongo"):
        sts = statefulsets[name]
        labels = sts["spec"]["template"]["metadata"]["labels"]
        assert sts["spec"]["replicas"] == 3
        assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
        headless = services[sts["spec"]["serviceName"]]
        assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["selector"].items() <= labels.items()
        assert budgets[name]["spec"]["minAvailable"] == 2
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        anti = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        assert anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"


def env_of(container: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_kurrentdb_cluster_settings_agree() -> None:
    [container] = by_kind("StatefulSet")["kurrentdb"]["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert env["KURRENTDB_CLUSTER_SIZE"] == "3" and env["KURRENTDB_DISCOVER_VIA_DNS"] == "true"
    assert env["KURRENTDB_CLUSTER_DNS"] == "kurrentdb.xplatform.svc.cluster.local"
    assert env["KURRENTDB_DEFAULT_ADMIN_PASSWORD"] is None  # from a secret, never inline
    assert "KURRENTDB_INSECURE" not in env and env["KURRENTDB_CERTIFICATE_FILE"].startswith("/etc/kurrentdb/certs")


def test_zookeeper_and_mongo_members_name_each_other() -> None:
    [zk] = by_kind("StatefulSet")["zk"]["spec"]["template"]["spec"]["containers"]
    servers = env_of(zk)["ZOO_SERVERS"].split()
    assert servers == [f"server.{i + 1}=zk-{i}.zk-hs.xplatform.svc.cluster.local:2888:3888;2181" for i in range(3)]
    [init] = by_kind("Job")["mongo-rs-init"]["spec"]["template"]["spec"]["containers"]
    script = " ".join(init["command"])
    assert all(f"mongo-{i}.mongo.xplatform.svc.cluster.local:27017" in script for i in range(3))
    [mongod] = by_kind("StatefulSet")["mongo"]["spec"]["template"]["spec"]["containers"]
    assert mongod["args"][:2] == ["--replSet", "rs0"] and "--keyFile" in mongod["args"]


def test_platform_process_uses_real_settings_and_commands() -> None:
    config = by_kind("ConfigMap")["xplatform-settings"]["data"]
    state = by_kind("StatefulSet")["xplatform-state"]
    edge = by_kind("Deployment")["xplatform-edge"]
    for workload, command in ((state, "state-node"), (edge, "edge")):
        [container] = workload["spec"]["template"]["spec"]["containers"]
        settings = check_platform_env({**config, **env_of(container)})
        assert container["args"][0] == command and command in cli_commands()
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == settings.metrics_port and settings.metrics_host == "0.0.0.0"  # pod network
        if command == "edge":
            check_edge_env(settings)
    assert state["spec"]["replicas"] == 3 and state["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    [node] = state["spec"]["template"]["spec"]["containers"]
    advertised = {e["name"]: e for e in node["env"]}["XPLATFORM_TRANSPORT_HOST"]
    assert advertised["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"  # peers reach the pod, not 0.0.0.0
    service = by_kind("Service")["xplatform-edge"]
    assert service["spec"]["selector"].items() <= edge["spec"]["template"]["metadata"]["labels"].items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {8080}  # metrics are not published


def test_cluster_secrets_are_mounted_files_and_edges_never_get_the_state_secret() -> None:
    config = by_kind("ConfigMap")["xplatform-settings"]["data"]
    for workload, keys in ((by_kind("StatefulSet")["xplatform-state"], {"state-secret", "edge-secret", "zookeeper-password"}),
                           (by_kind("Deployment")["xplatform-edge"], {"edge-secret", "zookeeper-password"})):
        pod = workload["spec"]["template"]["spec"]
        [container] = pod["containers"]
        env = {**config, **env_of(container)}
        [volume] = [v for v in pod["volumes"] if v["secret"]["secretName"] == "xplatform-cluster"]
        assert {item["key"] for item in volume["secret"]["items"]} == keys
        [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        wanted = {"XPLATFORM_CLUSTER_EDGE_SECRET_FILE": "edge-secret", "XPLATFORM_ZOOKEEPER_PASSWORD_FILE": "zookeeper-password"}
        if "state-secret" in keys:
            wanted["XPLATFORM_CLUSTER_SECRET_FILE"] = "state-secret"
        else:
            assert "XPLATFORM_CLUSTER_SECRET_FILE" not in env
        for variable, key in wanted.items():
            assert env[variable] == f"{mount['mountPath']}/{key}"
        assert "XPLATFORM_CLUSTER_INSECURE" not in env
    services = compose()["services"]
    declared = compose()["secrets"]
    for name, keys in (("state-node-1", {"state-secret", "edge-secret", "zookeeper-password"}),
                       ("edge-1", {"edge-secret", "zookeeper-password"})):
        assert set(services[name]["secrets"]) == keys and keys <= set(declared)
        env = services[name]["environment"]
        assert env["XPLATFORM_CLUSTER_EDGE_SECRET_FILE"] == "/run/secrets/edge-secret"
        assert env["XPLATFORM_ZOOKEEPER_PASSWORD_FILE"] == "/run/secrets/zookeeper-password"
        assert env.get("XPLATFORM_CLUSTER_SECRET_FILE") == ("/run/secrets/state-secret" if "state-secret" in keys else None)


# ---------------------------------------------------------------------------- compose
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads((importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
                         / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []


def test_compose_topology_is_consistent() -> None:
    services = compose()["services"]
    nodes = [f"kurrentdb{i}" for i in (1, 2, 3)]
    for node in nodes:
        env = services[node]["environment"]
        assert env["KURRENTDB_CLUSTER_SIZE"] == "3"
        assert set(env["KURRENTDB_GOSSIP_SEED"].replace(":2113", "").split(",")) == set(nodes) - {node}
    assert sorted(services[f"zk{i}"]["environment"]["ZOO_MY_ID"] for i in (1, 2, 3)) == ["1", "2", "3"]
    assert services["zk1"]["environment"]["ZOO_SERVERS"].split() == [
        f"server.{i}=zk{i}:2888:3888;2181" for i in (1, 2, 3)]
    init = " ".join(services["mongo-init"]["command"])
    assert all(f"mongo{i}:27017" in init for i in (1, 2, 3))
    for name, command in (("state-node-1", "state-node"), ("state-node-3", "state-node"), ("edge-1", "edge"),
                          ("edge-2", "edge")):
        platform = services[name]
        assert "secrets.env" in platform["env_file"]  # the password comes from there, never inline
        settings = check_platform_env({**platform["environment"], "XPLATFORM_EVENTSTOREDB_PASSWORD": None})
        assert platform["command"][0] == command and command in cli_commands()
        if command == "edge":
            check_edge_env(settings)
            assert all(str(settings.metrics_port) not in published for published in platform["ports"])
    assert services["state-node-2"]["environment"]["XPLATFORM_TRANSPORT_HOST"] == "state-node-2"
    uri = services["state-node-1"]["environment"]["XPLATFORM_EVENTSTOREDB_URI"]
    assert {t.split(":")[0] for t in uri.split("://")[1].split(",")} == set(nodes)
    volumes = set(compose()["volumes"])
    for service in services.values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert source in volumes or source.startswith((".", "/")), source


def test_dockerfile_installs_the_package_and_runs_the_cli() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install \.", dockerfile, re.M)
    assert 'ENTRYPOINT ["xplatform"]' in dockerfile and re.search(r"^USER ", dockerfile, re.M)
    for copied in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert (DEPLOY.parents[1] / copied).exists(), copied
