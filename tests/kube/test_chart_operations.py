"""What the chart gives operators: disruption budgets, the receiver's and the processor's
autoscalers, metrics
discovery, `helm test`, the yandex-tank Job, documented values and a profile that fits
minikube. Rendered offline; the strict dry-run of every profile is in test_chart.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from loadtest.tank import PROFILE_NAMES, bfg_profile, caseline_ammo
from local.config import CONTRACTS, REPO

from jobflow.components import PIPELINE_SERVICES as SERVICES
from jobflow.smoke import SmokeSettings
from tests.kube.chart import CHART, PROFILES, WITH_PROMETHEUS_OPERATOR, helm, kinds, render

# run by make chart-check too (tests/targets.mk)
pytestmark = pytest.mark.chart

TANK_DOCKERFILE = REPO / "loadtest" / "Dockerfile"


def test_each_service_has_a_disruption_budget_that_selects_its_pods() -> None:
    objects = render()
    budgets = kinds(objects, "PodDisruptionBudget")
    assert set(budgets) == {f"jobflow-{service}" for service in SERVICES}
    deployments = kinds(objects, "Deployment")
    for name, budget in budgets.items():
        assert budget["spec"]["maxUnavailable"] == 1
        assert "minAvailable" not in budget["spec"], "a one-replica service must stay drainable"
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        other_services = set(deployments) - {name}
        for other in other_services:
            other_labels = deployments[other]["spec"]["template"]["metadata"]["labels"]
            assert not budget["spec"]["selector"]["matchLabels"].items() <= other_labels.items()
    assert not kinds(render("--set", "podDisruptionBudget.enabled=false"), "PodDisruptionBudget")


def test_the_receiver_autoscales_on_cpu_and_leaves_replicas_to_the_autoscaler() -> None:
    objects = render()
    (autoscaler,) = kinds(objects, "HorizontalPodAutoscaler").values()
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "jobflow-receiver",
    }
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (1, 4)
    (metric,) = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # Utilisation is relative to the request: without one the autoscaler cannot work.
    receiver = kinds(objects, "Deployment")["jobflow-receiver"]
    assert "replicas" not in receiver["spec"], "helm upgrade would reset what the HPA scaled to"
    assert receiver["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    assert kinds(objects, "Deployment")["jobflow-processor"]["spec"]["replicas"] == 1

    fixed = render("--set", "receiver.autoscaling.enabled=false", "--set", "receiver.replicas=3")
    assert not kinds(fixed, "HorizontalPodAutoscaler")
    assert kinds(fixed, "Deployment")["jobflow-receiver"]["spec"]["replicas"] == 3


def test_the_processor_can_autoscale_on_its_lag_with_keda() -> None:
    assert not kinds(render(), "ScaledObject"), "KEDA is optional: off by default"
    objects = render(
        "--set", "processor.autoscaling.enabled=true",
        "--set", "processor.env.PROCESSOR_GROUP_ID=jobs",
    )  # fmt: skip
    (scaled,) = kinds(objects, "ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] == "jobflow-processor"
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 3)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"] == {
        "bootstrapServers": "jobflow-kafka-bootstrap:9092",
        "consumerGroup": "jobs",
        "topic": "receiver-topic",
        "lagThreshold": "2000",
        "offsetResetPolicy": "earliest",
        "allowIdleConsumers": "false",
    }
    processor = kinds(objects, "Deployment")["jobflow-processor"]
    assert "replicas" not in processor["spec"], "helm upgrade would reset what KEDA scaled to"


def test_the_processor_autoscaler_refuses_more_pods_than_partitions() -> None:
    topics = yaml.safe_load((CONTRACTS / "topics.yaml").read_text())["topics"]
    partitions = next(t["partitions"] for t in topics if t["name"] == "receiver-topic")
    result = helm(
        "template", "jobflow", str(CHART),
        "--set", "processor.autoscaling.enabled=true",
        "--set", f"processor.autoscaling.maxReplicas={partitions + 1}",
    )  # fmt: skip
    assert result.returncode != 0
    assert f"above the {partitions} partitions of receiver-topic" in result.stderr


def test_without_the_prometheus_operator_pods_carry_scrape_annotations() -> None:
    objects = render()
    assert not kinds(objects, "ServiceMonitor")
    for service in SERVICES:
        template = kinds(objects, "Deployment")[f"jobflow-{service}"]["spec"]["template"]
        port = template["spec"]["containers"][0]["ports"][0]["containerPort"]
        assert template["metadata"]["annotations"] == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }


def test_with_the_prometheus_operator_a_service_monitor_selects_exactly_the_services() -> None:
    objects = render(*WITH_PROMETHEUS_OPERATOR)
    (monitor,) = kinds(objects, "ServiceMonitor").values()
    for deployment in kinds(objects, "Deployment").values():
        assert "annotations" not in deployment["spec"]["template"]["metadata"]
    selector = monitor["spec"]["selector"]
    (expression,) = selector["matchExpressions"]
    selected = {
        name
        for name, service in kinds(objects, "Service").items()
        if selector["matchLabels"].items() <= service["metadata"]["labels"].items()
        and service["metadata"]["labels"]["app.kubernetes.io/component"] in expression["values"]
    }
    assert selected == {f"jobflow-{service}" for service in SERVICES}
    (endpoint,) = monitor["spec"]["endpoints"]
    for name in selected:
        assert endpoint["port"] in {
            p["name"] for p in kinds(objects, "Service")[name]["spec"]["ports"]
        }
    assert endpoint["path"] == "/metrics"


@pytest.mark.parametrize(("discovery", "monitors"), [("annotations", 0), ("serviceMonitor", 1)])
def test_metrics_discovery_can_be_forced(discovery: str, monitors: int) -> None:
    objects = render(*WITH_PROMETHEUS_OPERATOR, "--set", f"metrics.discovery={discovery}")
    assert len(kinds(objects, "ServiceMonitor")) == monitors


def test_the_service_monitor_carries_the_labels_a_prometheus_selects_by() -> None:
    objects = render(
        "--set",
        "metrics.discovery=serviceMonitor",
        "--set-string",
        "metrics.serviceMonitorLabels.release=kube-prometheus-stack",
    )
    (monitor,) = kinds(objects, "ServiceMonitor").values()
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_helm_test_runs_the_smoke_command_against_the_release_services() -> None:
    objects = render()
    pod = kinds(objects, "Pod")["jobflow-smoke-test"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["python", "-m", "jobflow", "smoke"]
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    known = {f"SMOKE_{name}".upper() for name in SmokeSettings.model_fields}
    assert set(env) <= known
    assert int(env["SMOKE_TIMEOUT_S"]) < 300, "helm test gives up after 5 minutes"
    services = kinds(objects, "Service")
    for component in ("receiver", "informer"):
        url = env[f"SMOKE_{component.upper()}_URL"]
        host, port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", url).groups()
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}
        assert services[host]["metadata"]["labels"]["app.kubernetes.io/component"] == component
    assert pod["spec"]["restartPolicy"] == "Never"


def test_the_loadtest_is_off_by_default_and_is_the_contract_files_when_on() -> None:
    assert not kinds(render(), "Job")
    objects = render(*PROFILES["loadtest"])
    config = kinds(objects, "ConfigMap")["jobflow-loadtest"]
    files = CONTRACTS / "loadtest"
    assert config["data"] == {
        "seed.yaml": (files / "seed.yaml").read_text(),
        "ramp.yaml": (files / "ramp.yaml").read_text(),
        "ammo.txt": (files / "ammo.txt").read_bytes().decode(),
    }
    (job,) = kinds(objects, "Job").values()
    assert job["metadata"]["name"] == "jobflow-loadtest-1", "a new run for each revision"
    assert job["spec"]["backoffLimit"] == 0
    ready, tank = job["spec"]["template"]["spec"]["initContainers"]
    # The load starts once the pipeline carries a job end to end.
    assert ready["command"] == ["python", "-m", "jobflow", "smoke"]
    assert tank["args"] == [
        "--config=/etc/tank/seed.yaml",
        "--option=phantom.address=jobflow-receiver:8001",
        "--option=phantom.ammofile=/etc/tank/ammo.txt",
        "--option=core.lock_dir=/tmp",
    ]
    # The tank's exit code is kept with its artifacts and the container always succeeds: a
    # failed init container would take the results container, and the artifacts, with it.
    assert tank["command"][:2] == ["sh", "-c"]
    assert tank["command"][2].endswith('; echo "$?" > /results/exit-code')
    assert {"/tmp", "/results"} <= {m["mountPath"] for m in tank["volumeMounts"]}  # noqa: S108
    assert kinds(objects, "Service")["jobflow-receiver"]["spec"]["ports"][0]["port"] == 8001
    mounts = {m["mountPath"]: m["name"] for m in tank["volumeMounts"]}
    assert mounts["/etc/tank"] == "profiles"
    assert tank["workingDir"] in mounts
    (holder,) = job["spec"]["template"]["spec"]["containers"]
    assert {m["mountPath"] for m in holder["volumeMounts"]} == {tank["workingDir"]}


def options(container: dict[str, Any]) -> dict[str, str]:
    """The container's yandex-tank ``--option=KEY=VALUE`` arguments."""
    pairs = [arg.removeprefix("--option=").split("=", 1) for arg in container["args"]]
    return {key: value for key, value in pairs if not key.startswith("--")}


def test_the_bfg_loadtest_runs_our_gun_on_the_profile_merged_into_bfg_yaml() -> None:
    objects = render(*PROFILES["loadtest-bfg"])
    config = kinds(objects, "ConfigMap")["jobflow-loadtest"]
    # What loadtest/tank.py derives for local runs, from the same files.
    assert {name: yaml.safe_load(config["data"][f"{name}.yaml"]) for name in PROFILE_NAMES} == {
        name: bfg_profile(name) for name in PROFILE_NAMES
    }
    assert config["data"]["ammo.txt"] == caseline_ammo().decode() == "create_job\t\n"
    (job,) = kinds(objects, "Job").values()
    assert "annotations" not in job["metadata"], "no checkov skip: the image has a version tag"
    _, tank = job["spec"]["template"]["spec"]["initContainers"]
    (holder,) = job["spec"]["template"]["spec"]["containers"]
    # Named like the services' images, which the same values place.
    receiver = kinds(objects, "Deployment")["jobflow-receiver"]["spec"]["template"]["spec"]
    receiver_image = receiver["containers"][0]["image"]
    assert tank["image"] == holder["image"] == receiver_image.replace("-receiver:", "-tank:")
    assert tank["args"][0] == "--config=/etc/tank/seed.yaml"
    given = options(tank)
    port = kinds(objects, "Service")["jobflow-receiver"]["spec"]["ports"][0]["port"]
    assert given["bfg.gun_config.target_url"] == f"http://jobflow-receiver:{port}/api/v1/create/job"
    gun = re.search(r"^COPY loadtest/gun\.py (\S+)$", TANK_DOCKERFILE.read_text(), re.MULTILINE)
    assert gun is not None
    assert given["bfg.gun_config.module_path"] == gun.group(1)
    assert given["bfg.ammofile"] == "/etc/tank/ammo.txt"
    # The artifacts (bfgout.log) and the acknowledged ids are where the results are copied from.
    for key in ("bfg.gun_config.acked_ids_dir", "core.artifacts_base_dir"):
        assert given[key].startswith(f"{tank['workingDir']}/"), key
    assert not [key for key in given if key.startswith("phantom.")]
    assert "bfg.load_profile.schedule" not in given, "the profile's own schedule"

    short = render(*PROFILES["loadtest-bfg"], "--set-json", 'loadtest.schedule="const(25, 20s)"')
    (job,) = kinds(short, "Job").values()
    _, tank = job["spec"]["template"]["spec"]["initContainers"]
    assert options(tank)["bfg.load_profile.schedule"] == "const(25, 20s)"
    refused = helm("template", "jobflow", str(CHART), "--set", "loadtest.schedule=x';rm")
    assert refused.returncode != 0


def test_the_seed_profile_is_the_seeds_load() -> None:
    seed = yaml.safe_load((CONTRACTS / "loadtest" / "seed.yaml").read_text())
    assert seed["phantom"]["load_profile"] == {"load_type": "rps", "schedule": "const(25, 300s)"}
    assert "autostop" not in seed, "the acceptance run counts every error instead of stopping"
    ramp = yaml.safe_load((CONTRACTS / "loadtest" / "ramp.yaml").read_text())
    assert ramp["phantom"]["load_profile"]["schedule"].startswith("line(1, ")


def test_the_ammo_is_one_post_to_create_job_whose_size_is_its_length() -> None:
    ammo = (CONTRACTS / "loadtest" / "ammo.txt").read_bytes()
    header, request = ammo.split(b"\n", 1)
    size, tag = header.split(b" ")
    assert int(size) == len(request)
    assert tag == b"create_job"
    assert request.startswith(b"POST /api/v1/create/job HTTP/1.1\r\n")
    assert request.endswith(b"\r\n\r\n")
    assert b"\r\nContent-Length: 0\r\n" in request, "the seed's curl posts no body"


def values_keys(path: Path) -> list[tuple[int, str]]:
    """(line number, key) of every mapping key in a values file, nested ones included."""
    keys = []
    for number, line in enumerate(path.read_text().splitlines()):
        match = re.match(r"^\s*([A-Za-z][A-Za-z0-9]*):", line)
        if match:
            keys.append((number, match.group(1)))
    return keys


def test_values_yaml_documents_every_key() -> None:
    path = CHART / "values.yaml"
    lines = path.read_text().splitlines()
    # resources' {cpu, memory}, documented by "resources"; the fields of the NetworkPolicyPeers
    # in networkPolicy.peers, documented by each peer.
    inline_maps = {"requests", "limits", "podSelector", "namespaceSelector", "matchLabels"}
    undocumented = []
    for number, key in values_keys(path):
        if key in inline_maps:
            continue
        above = number - 1
        while above >= 0 and lines[above].lstrip().startswith("#") and "# --" not in lines[above]:
            above -= 1
        if above < 0 or "# --" not in lines[above]:
            undocumented.append(f"{number + 1}: {key}")
    assert not undocumented


# What minikube itself asks for (kube-system: apiserver 250m, controller-manager 200m,
# scheduler 100m, etcd 100m + 100Mi, coredns 100m + 70Mi, storage-provisioner), and the Strimzi
# cluster operator's chart defaults (200m, 384Mi).
MINIKUBE_SYSTEM = {"cpu": 0.85, "memory": 170 * 2**20}
STRIMZI_OPERATOR = {"cpu": 0.2, "memory": 384 * 2**20}
# kube-prometheus-stack's pods that monitoring/ does not size (the Prometheus Operator,
# kube-state-metrics, node-exporter, Grafana's sidecars and the config reloaders): generous
# estimates of what they use.
MONITORING_UNSIZED = {"cpu": 0.3, "memory": 512 * 2**20}
MINIKUBE = {"cpu": 4.0, "memory": 8 * 2**30}


def quantity(value: str | int | float) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    text = str(value)
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def requests_of(resources: dict[str, Any] | None) -> dict[str, float]:
    wanted = (resources or {}).get("requests", {})
    return {name: quantity(wanted.get(name, 0)) for name in ("cpu", "memory")}


def platform_requests() -> list[dict[str, float]]:
    found = []
    kafka = list(yaml.safe_load_all((REPO / "k8s" / "strimzi" / "kafka.yaml").read_text()))
    for document in kafka:
        if document["kind"] == "KafkaNodePool":
            found.append(requests_of(document["spec"]["resources"]))
        if document["kind"] == "Kafka":
            entity = document["spec"]["entityOperator"]
            found += [
                requests_of(entity[o]["resources"]) for o in ("topicOperator", "userOperator")
            ]
            found.append(requests_of(document["spec"]["kafkaExporter"]["resources"]))
    clickhouse = yaml.safe_load_all((REPO / "k8s" / "clickhouse" / "clickhouse.yaml").read_text())
    for document in clickhouse:
        if document["kind"] == "StatefulSet":
            found += [
                requests_of(c.get("resources"))
                for c in document["spec"]["template"]["spec"]["containers"]
            ]
    return found


def monitoring_requests() -> list[dict[str, float]]:
    """What monitoring/'s values ask for, plus what that chart runs unsized by them."""
    values = yaml.safe_load((REPO / "monitoring" / "kube-prometheus-stack.yaml").read_text())
    return [
        requests_of(values["prometheus"]["prometheusSpec"]["resources"]),
        requests_of(values["alertmanager"]["alertmanagerSpec"]["resources"]),
        requests_of(values["grafana"]["resources"]),
        MONITORING_UNSIZED,
    ]


def test_the_lite_profile_fits_a_four_cpu_eight_gib_minikube() -> None:
    objects = render(*PROFILES["lite"])
    assert not any(
        c["name"] == "ksqldb" for o in objects for c in o.get("spec", {}).get("containers", [])
    )
    wanted = [MINIKUBE_SYSTEM, STRIMZI_OPERATOR, *platform_requests(), *monitoring_requests()]
    most_replicas = {
        hpa["spec"]["scaleTargetRef"]["name"]: hpa["spec"]["maxReplicas"]
        for hpa in kinds(objects, "HorizontalPodAutoscaler").values()
    }
    for manifest in objects:
        if manifest["kind"] in {"Deployment", "StatefulSet"}:
            name = manifest["metadata"]["name"]
            replicas = most_replicas.get(name, manifest["spec"].get("replicas", 1))
            for container in manifest["spec"]["template"]["spec"]["containers"]:
                wanted += [requests_of(container["resources"])] * replicas
        if manifest["kind"] == "KafkaConnect":
            wanted += [requests_of(manifest["spec"]["resources"])] * manifest["spec"]["replicas"]
    for resource in ("cpu", "memory"):
        total = sum(w[resource] for w in wanted)
        # A quarter stays free for the apply Jobs, the helm test pod and rollouts' surges.
        assert total <= 0.75 * MINIKUBE[resource], (resource, total)


def test_the_default_profile_sets_every_resource() -> None:
    for manifest in render("--set", "loadtest.enabled=true"):
        if manifest["kind"] not in {"Deployment", "StatefulSet", "Job", "Pod"}:
            continue
        spec = (
            manifest["spec"] if manifest["kind"] == "Pod" else manifest["spec"]["template"]["spec"]
        )
        for container in spec["containers"] + spec.get("initContainers", []):
            assert set(container["resources"]) == {"requests", "limits"}, manifest["metadata"]


def test_the_dashboard_config_map_carries_the_dashboard_file_for_grafanas_sidecar() -> None:
    (dashboards,) = (
        m
        for m in kinds(render(), "ConfigMap").values()
        if m["metadata"]["name"].endswith("-dashboards")
    )
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    committed = (CONTRACTS / "monitoring" / "services-dashboard.json").read_text()
    assert dashboards["data"] == {"jobflow-services.json": committed.rstrip("\n")}
    assert not [
        m
        for m in kinds(render("--set", "metrics.dashboards.enabled=false"), "ConfigMap").values()
        if m["metadata"]["name"].endswith("-dashboards")
    ]


def test_the_alert_rules_are_a_prometheus_rule_when_the_cluster_serves_that_kind() -> None:
    (rule,) = kinds(render(*WITH_PROMETHEUS_OPERATOR), "PrometheusRule").values()
    assert rule["spec"] == yaml.safe_load((CONTRACTS / "monitoring" / "rules.yaml").read_text())
    assert kinds(render(), "PrometheusRule") == {}
    assert kinds(render("--set", "metrics.alertRules.enabled=true"), "PrometheusRule")
    assert (
        kinds(
            render(*WITH_PROMETHEUS_OPERATOR, "--set", "metrics.alertRules.enabled=false"),
            "PrometheusRule",
        )
        == {}
    )


def test_kafka_connect_serves_its_metrics_by_the_local_stacks_jmx_exporter_rules() -> None:
    """The states the connector alert reads: Strimzi runs the JMX exporter with the file the
    local Connect worker's javaagent reads."""
    objects = render()
    (connect,) = kinds(objects, "KafkaConnect").values()
    metrics = connect["spec"]["metricsConfig"]
    assert metrics["type"] == "jmxPrometheusExporter"
    reference = metrics["valueFrom"]["configMapKeyRef"]
    config_map = kinds(objects, "ConfigMap")[reference["name"]]
    rules = (CONTRACTS / "monitoring" / "connect-metrics.yaml").read_text()
    assert config_map["data"] == {reference["key"]: rules}


# Strimzi's release ships these dashboards under packaging/examples/metrics/grafana-dashboards/.
STRIMZI_DASHBOARDS = {
    "strimzi-kafka",
    "strimzi-kraft",
    "strimzi-kafka-exporter",
    "strimzi-kafka-connect",
    "strimzi-operators",
}


def test_grafana_fetches_strimzis_dashboards_of_the_deployed_strimzi_release() -> None:
    values = yaml.safe_load((REPO / "monitoring" / "kube-prometheus-stack.yaml").read_text())
    (strimzi,) = (
        release
        for config in yaml.safe_load_all((REPO / "skaffold.yaml").read_text())
        for release in config.get("deploy", {}).get("helm", {}).get("releases", [])
        if release["name"] == "strimzi-cluster-operator"
    )
    base = (
        "https://raw.githubusercontent.com/strimzi/strimzi-kafka-operator/"
        f"{strimzi['version']}/packaging/examples/metrics/grafana-dashboards"
    )
    dashboards = values["grafana"]["dashboards"]["strimzi"]
    assert set(dashboards) == STRIMZI_DASHBOARDS
    for name, dashboard in dashboards.items():
        assert dashboard == {"url": f"{base}/{name}.json", "datasource": "Prometheus"}
    (provider,) = values["grafana"]["dashboardProviders"]["dashboardproviders.yaml"]["providers"]
    assert provider["name"] == "strimzi"
    # The Kafka Exporter feeds the consumer-lag dashboard, for every group of the pipeline.
    (kafka,) = (
        document
        for document in yaml.safe_load_all((REPO / "k8s" / "strimzi" / "kafka.yaml").read_text())
        if document and document["kind"] == "Kafka"
    )
    assert kafka["spec"]["kafkaExporter"]["groupRegex"] == ".*"
