"""Every pod jobflow makes, admitted by a real kube-apiserver under the restricted standard.

The namespace gets k8s/namespace.yaml's Pod Security labels (enforce: restricted). Each pod the
chart makes in each profile (services, operator, PostgreSQL, smoke test, load test, the topics
and connector hook Jobs without Strimzi), each pod of the platform manifests (ClickHouse,
ksqlDB) and the operator's schema apply Job is created as a Pod, by server-side dry-run, in
that namespace: the API server's PodSecurity admission refuses any that breaks the standard.
Strimzi's pods (Kafka, Connect, its operators) are made by Strimzi with its restricted pod
security provider (skaffold.yaml), and are not checked here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from local.config import REPO

from jobflow.operator.jobs import build_job
from tests.kube.apiserver import ControlPlane, api_client, dry_run_create
from tests.kube.chart import PROFILES, kinds, platform_objects, render

# run by make security-check and make chart-check too (tests/targets.mk)
pytestmark = [pytest.mark.security, pytest.mark.chart]

NAMESPACE_MANIFEST = REPO / "k8s" / "namespace.yaml"
WORKLOADS = {"Deployment", "StatefulSet", "Job"}


def pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pod spec of each workload (or Pod) among ``objects``, by kind/name."""
    specs = {}
    for o in objects:
        if o["kind"] in WORKLOADS:
            spec = dict(o["spec"]["template"]["spec"])
            # A StatefulSet's pods get a volume for each claim template.
            claims = [t["metadata"]["name"] for t in o["spec"].get("volumeClaimTemplates", [])]
            spec["volumes"] = spec.get("volumes", []) + [
                {"name": claim, "persistentVolumeClaim": {"claimName": f"{claim}-0"}}
                for claim in claims
            ]
            specs[f"{o['kind']}/{o['metadata']['name']}"] = spec
        elif o["kind"] == "Pod":
            specs[f"Pod/{o['metadata']['name']}"] = o["spec"]
    return specs


def every_pod() -> dict[str, dict[str, Any]]:
    pods: dict[str, dict[str, Any]] = {}
    for profile, arguments in {"default": (), **PROFILES}.items():
        chart = render(*arguments)
        pods |= {f"{profile}:{name}": spec for name, spec in pod_specs(chart).items()}
        schema = next(iter(kinds(chart, "StreamSchema").values()))
        apply_job = build_job("schema", schema["spec"], "SELECT 1", "0" * 64)
        pods[f"{profile}:apply Job"] = apply_job["spec"]["template"]["spec"]
    pods |= {f"k8s:{name}": spec for name, spec in pod_specs(platform_objects()).items()}
    return pods


PODS = every_pod()


@pytest.fixture(scope="module")
def admin(control_plane: ControlPlane) -> client.ApiClient:
    return api_client(control_plane.admin_kubeconfig)


@pytest.fixture(scope="module")
def restricted_namespace(admin: client.ApiClient) -> Iterator[str]:
    """A namespace with k8s/namespace.yaml's labels."""
    labels = yaml.safe_load(NAMESPACE_MANIFEST.read_text())["metadata"]["labels"]
    name = f"restricted-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": name, "labels": labels}})
    yield name
    core.delete_namespace(name)


def as_pod(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    # The ServiceAccounts are not there; which one a pod runs as is no Pod Security matter.
    spec = {key: value for key, value in spec.items() if key != "serviceAccountName"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_the_namespace_enforces_the_restricted_standard() -> None:
    labels = yaml.safe_load(NAMESPACE_MANIFEST.read_text())["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_profile_and_manifest_has_its_pods_here() -> None:
    names = {name.split(":", 1)[1] for name in PODS}
    assert {
        "Deployment/jobflow-receiver",
        "Deployment/jobflow-operator",
        "StatefulSet/jobflow-postgres",
        "Pod/jobflow-smoke-test",
        "Job/jobflow-loadtest-1",
        "Job/jobflow-topics",
        "Job/jobflow-connector",
        "apply Job",
        "StatefulSet/clickhouse",
        "Deployment/ksqldb",
    } <= names


@pytest.mark.parametrize("name", sorted(PODS))
def test_the_api_server_admits_the_pod_under_the_restricted_standard(
    admin: client.ApiClient, restricted_namespace: str, name: str
) -> None:
    dry_run_create(admin, as_pod(f"pod-{uuid.uuid4().hex[:8]}", PODS[name]), restricted_namespace)


def test_a_pod_that_breaks_the_standard_is_refused(
    admin: client.ApiClient, restricted_namespace: str
) -> None:
    spec = json.loads(json.dumps(PODS["default:Deployment/jobflow-receiver"]))
    del spec["securityContext"]["seccompProfile"]
    with pytest.raises(ApiException) as refused:
        dry_run_create(admin, as_pod("broken", spec), restricted_namespace)
    message = json.loads(str(refused.value.body))["message"]
    assert 'violates PodSecurity "restricted:latest": seccompProfile' in message


@pytest.mark.parametrize("name", sorted(PODS))
def test_every_container_has_requests_and_limits(name: str) -> None:
    spec = PODS[name]
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        resources = container.get("resources", {})
        assert {"cpu", "memory"} <= set(resources.get("requests", {})), container["name"]
        assert {"cpu", "memory"} <= set(resources.get("limits", {})), container["name"]


@pytest.mark.parametrize("name", sorted(PODS))
def test_only_the_operator_gets_a_service_account_token(name: str) -> None:
    uses_the_api = name.endswith("Deployment/jobflow-operator")
    assert PODS[name].get("automountServiceAccountToken") is uses_the_api
