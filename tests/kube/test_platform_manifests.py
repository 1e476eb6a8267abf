"""The platform manifests (k8s/strimzi, k8s/ksqldb, k8s/clickhouse) on a real kube-apiserver.

Every object of every YAML document there is created by server-side dry-run with strict field
validation, the Strimzi ones against the Strimzi 1.2.0 CRDs of ../shared/strimzi-crds/: a wrong
or unknown field fails here, not on a user's minikube. Nothing is persisted. The rest checks that
the manifests agree with each other and with the data contracts (charts/jobflow/files/topics.yaml,
the chart's Kafka values): cluster and bootstrap names, replication within the broker count, the
restricted pod security settings, no password in a file.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import yaml
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from tests.kube.apiserver import ControlPlane, api_client, dry_run_create, eventually

REPO = Path(__file__).resolve().parents[2]
MANIFEST_DIRS = ("strimzi", "ksqldb", "clickhouse")
TOPICS = REPO / "charts" / "jobflow" / "files" / "topics.yaml"
CHART_VALUES = REPO / "charts" / "jobflow" / "values.yaml"
STRIMZI_API = "kafka.strimzi.io/v1"
CLICKHOUSE_CREDENTIALS = "clickhouse-credentials"


def manifest_files() -> list[Path]:
    return sorted(path for d in MANIFEST_DIRS for path in (REPO / "k8s" / d).glob("*.yaml"))


def load_objects() -> list[tuple[str, dict[str, Any]]]:
    """(file:kind/name, object) of every non-empty document of every manifest file."""
    found = []
    for path in manifest_files():
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                label = (
                    f"{path.relative_to(REPO)}:{document['kind']}/{document['metadata']['name']}"
                )
                found.append((label, document))
    return found


OBJECTS = load_objects()


def objects_of(kind: str, api_version: str | None = None) -> list[dict[str, Any]]:
    return [
        o
        for _, o in OBJECTS
        if o["kind"] == kind and (api_version is None or o["apiVersion"] == api_version)
    ]


def the(kind: str, api_version: str | None = None) -> dict[str, Any]:
    found = objects_of(kind, api_version)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def broker_count() -> int:
    """Brokers of the jobflow cluster: the replicas of its node pools with the broker role."""
    cluster = the("Kafka", STRIMZI_API)["metadata"]["name"]
    return sum(
        int(pool["spec"]["replicas"])
        for pool in objects_of("KafkaNodePool", STRIMZI_API)
        if pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        and "broker" in pool["spec"]["roles"]
    )


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def workloads() -> list[dict[str, Any]]:
    return [o for _, o in OBJECTS if o["kind"] in {"Deployment", "StatefulSet"}]


# The control plane, the Strimzi CRDs, a namespace. ----------------------------------------------


@pytest.fixture(scope="module")
def admin(control_plane: ControlPlane) -> client.ApiClient:
    return api_client(control_plane.admin_kubeconfig)


@pytest.fixture(scope="module")
def namespace(admin: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(admin)
    name = f"platform-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    eventually(lambda: core.read_namespace(name).status.phase == "Active")
    yield name
    core.delete_namespace(name)


def rejection(admin: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> str:
    """The API server's message refusing ``manifest`` in a strict dry run."""
    with pytest.raises(ApiException) as refused:
        dry_run_create(admin, manifest, namespace)
    assert 400 <= refused.value.status < 500
    return str(json.loads(str(refused.value.body))["message"])


# Every object is accepted by the API server. ----------------------------------------------------


def test_there_are_manifests_for_each_component() -> None:
    kinds = {(o["apiVersion"], o["kind"]) for _, o in OBJECTS}
    assert {
        (STRIMZI_API, "Kafka"),
        (STRIMZI_API, "KafkaNodePool"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"),
        ("v1", "Service"),
        ("monitoring.coreos.com/v1", "PodMonitor"),
    } <= kinds
    for directory in MANIFEST_DIRS:
        assert (REPO / "k8s" / directory / "README.md").is_file()
    assert all("namespace" not in o["metadata"] for _, o in OBJECTS), "applied with -n jobflow"


@pytest.mark.parametrize(("label", "manifest"), OBJECTS, ids=[label for label, _ in OBJECTS])
def test_the_api_server_accepts_it(
    admin: client.ApiClient,
    strimzi_crds: list[str],
    prometheus_operator_crds: list[str],
    namespace: str,
    label: str,
    manifest: dict[str, Any],
) -> None:
    dry_run_create(admin, manifest, namespace)
    # A dry run validates and defaults, and stores nothing.
    resource = dynamic.DynamicClient(admin).resources.get(  # type: ignore[no-untyped-call]
        api_version=manifest["apiVersion"], kind=manifest["kind"]
    )
    with pytest.raises(ApiException) as missing:
        resource.get(name=manifest["metadata"]["name"], namespace=namespace)
    assert missing.value.status == 404, label


def test_an_unknown_field_in_the_kafka_resource_is_rejected(
    admin: client.ApiClient, strimzi_crds: list[str], namespace: str
) -> None:
    kafka = copy.deepcopy(the("Kafka", STRIMZI_API))
    kafka["spec"]["kafka"]["bogusField"] = True
    assert 'unknown field "spec.kafka.bogusField"' in rejection(admin, namespace, kafka)


def test_a_v1beta2_only_field_is_rejected(
    admin: client.ApiClient, strimzi_crds: list[str], namespace: str
) -> None:
    """v1 moved replicas and storage to the node pools: the old layout fails loudly."""
    kafka = copy.deepcopy(the("Kafka", STRIMZI_API))
    kafka["spec"]["kafka"]["replicas"] = 1
    assert 'unknown field "spec.kafka.replicas"' in rejection(admin, namespace, kafka)


# The manifests agree with each other and with the data contracts. --------------------------------


def test_cluster_and_bootstrap_names_match_the_chart() -> None:
    kafka = the("Kafka", STRIMZI_API)
    name = kafka["metadata"]["name"]
    assert name == "jobflow"
    plain = [listener for listener in kafka["spec"]["kafka"]["listeners"] if not listener["tls"]]
    assert [(p["type"], p["port"]) for p in plain] == [("internal", 9092)]
    bootstrap = f"{name}-kafka-bootstrap:9092"  # Strimzi's <cluster>-kafka-bootstrap Service
    assert bootstrap == "jobflow-kafka-bootstrap:9092"

    values = yaml.safe_load(CHART_VALUES.read_text())
    assert values["kafka"]["clusterName"] == name
    assert values["kafka"]["bootstrapServers"] == bootstrap

    ksqldb = the("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(ksqldb)["KSQL_BOOTSTRAP_SERVERS"] == bootstrap
    pools = objects_of("KafkaNodePool", STRIMZI_API)
    assert all(p["metadata"]["labels"]["strimzi.io/cluster"] == name for p in pools)
    roles = {role for p in pools for role in p["spec"]["roles"]}
    assert roles == {"controller", "broker"}, "KRaft needs controllers and brokers"


def test_replication_fits_the_brokers() -> None:
    brokers = broker_count()
    assert brokers >= 1
    config = the("Kafka", STRIMZI_API)["spec"]["kafka"]["config"]
    assert config["auto.create.topics.enable"] is False
    min_isr = int(config["min.insync.replicas"])
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "default.replication.factor",
        "min.insync.replicas",
    ):
        assert 1 <= int(config[key]) <= brokers, key
    assert int(config["transaction.state.log.min.isr"]) <= int(
        config["transaction.state.log.replication.factor"]
    )

    topics = yaml.safe_load(TOPICS.read_text())["topics"]
    assert topics
    for topic in topics:
        replicas = int(topic["replicas"])
        assert 1 <= replicas <= brokers, f"{topic['name']}: {replicas} replicas, {brokers} brokers"
        topic_min_isr = int(topic.get("config", {}).get("min.insync.replicas", min_isr))
        assert topic_min_isr <= replicas, f"{topic['name']}: min.insync.replicas > replicas"

    ksqldb = env_of(the("Deployment")["spec"]["template"]["spec"]["containers"][0])
    for key in (
        "KSQL_KSQL_INTERNAL_TOPIC_REPLICAS",
        "KSQL_KSQL_STREAMS_REPLICATION_FACTOR",
        "KSQL_KSQL_SINK_REPLICAS",
    ):
        assert 1 <= int(ksqldb[key]) <= brokers, key


def test_ksqldb_and_clickhouse_read_committed_records_only() -> None:
    ksqldb = env_of(the("Deployment")["spec"]["template"]["spec"]["containers"][0])
    assert ksqldb["KSQL_KSQL_STREAMS_PROCESSING_GUARANTEE"] == "exactly_once_v2"
    assert ksqldb["KSQL_KSQL_STREAMS_CONSUMER_ISOLATION_LEVEL"] == "read_committed"

    config_map = the("ConfigMap")
    kafka = ElementTree.fromstring(config_map["data"]["kafka.xml"]).find("kafka")  # noqa: S314 - ours
    assert kafka is not None
    assert kafka.findtext("isolation_level") == "read_committed"
    pod = the("StatefulSet")["spec"]["template"]["spec"]
    (volume,) = (v for v in pod["volumes"] if v.get("configMap"))
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    (mount,) = (m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert mount["mountPath"] == "/etc/clickhouse-server/config.d/kafka.xml"
    assert mount["subPath"] == "kafka.xml"


def test_clickhouse_credentials_come_from_a_secret_not_a_file() -> None:
    assert objects_of("Secret") == [], "no Secret (and no password) in the manifests"
    container = the("StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    env = env_of(container)
    for variable, key in (("CLICKHOUSE_USER", "username"), ("CLICKHOUSE_PASSWORD", "password")):
        assert env[variable] == {"secretKeyRef": {"name": CLICKHOUSE_CREDENTIALS, "key": key}}
    assert env["CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT"] == "0"
    readme = (REPO / "k8s" / "clickhouse" / "README.md").read_text()
    assert f"create secret generic {CLICKHOUSE_CREDENTIALS}" in readme


@pytest.mark.parametrize(
    "workload", workloads(), ids=lambda w: f"{w['kind']}/{w['metadata']['name']}"
)
def test_pods_are_locked_down(workload: dict[str, Any]) -> None:
    pod = workload["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "add" not in context["capabilities"]
        assert ":" in container["image"]
        assert not container["image"].endswith(":latest"), "pin the image"
        assert {"requests", "limits"} <= set(container["resources"])
        assert container["readinessProbe"]
        assert container["livenessProbe"]


def test_the_pod_monitors_scrape_the_port_strimzi_serves_metrics_on() -> None:
    kafka = the("Kafka")
    assert kafka["spec"]["kafka"]["metricsConfig"] == {"type": "strimziMetricsReporter"}
    assert "kafkaExporter" in kafka["spec"]
    monitors = {m["metadata"]["name"]: m for m in objects_of("PodMonitor")}
    (endpoint,) = monitors["strimzi-kafka"]["spec"]["podMetricsEndpoints"]
    # Strimzi names its metrics port tcp-prometheus (9404) on every component.
    assert endpoint["port"] == "tcp-prometheus"
    (expression,) = monitors["strimzi-kafka"]["spec"]["selector"]["matchExpressions"]
    assert "Kafka" in expression["values"]
    entity = monitors["strimzi-entity-operator"]["spec"]["selector"]["matchLabels"]
    assert entity["strimzi.io/name"] == f"{kafka['metadata']['name']}-entity-operator"
