"""What the chart reads from the cluster (`lookup`), through real `helm install`, `upgrade` and
`uninstall`.

`lookup` only sees a cluster during install and upgrade, never under `helm template`, so these
run helm against the real kube-apiserver of tests/kube (no kubelet: the objects are stored,
no pod runs). They check what a user relies on: a password generated on install, kept by every
upgrade and by an uninstall, a Secret the user made used as it is, no password anywhere but in
the Secrets; and the API server allowed by NetworkPolicy at exactly its own endpoints.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kube.apiserver import ControlPlane, api_client
from tests.kube.chart import CHART, helm

# run by make security-check and make chart-check too (tests/targets.mk)
pytestmark = [pytest.mark.security, pytest.mark.chart]

DATABASE_SECRETS = ("jobflow-postgres", "clickhouse-credentials")
HTTP_NOT_FOUND = 404
# The name of a Secret the user made.
USERS_OWN = "my-postgres"


class Release:
    """A release of the chart in a namespace of its own."""

    def __init__(self, kubeconfig: Path, namespace: str, core: client.CoreV1Api) -> None:
        self.kubeconfig, self.namespace, self.core = kubeconfig, namespace, core

    def helm(self, *arguments: str) -> str:
        result = helm(
            *arguments, "--namespace", self.namespace, "--kubeconfig", str(self.kubeconfig)
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def install(self, *values: str) -> None:
        self.helm("upgrade", "--install", "jobflow", str(CHART), *values)

    def credentials(self, name: str) -> dict[str, str]:
        data = self.core.read_namespaced_secret(name, self.namespace).data
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    def exists(self, name: str) -> bool:
        try:
            self.core.read_namespaced_secret(name, self.namespace)
        except ApiException as exc:
            if exc.status == HTTP_NOT_FOUND:
                return False
            raise
        return True


@pytest.fixture
def release(
    control_plane: ControlPlane, strimzi_crds: list[str], jobflow_crds: list[str]
) -> Iterator[Release]:
    core = client.CoreV1Api(api_client(control_plane.admin_kubeconfig))
    namespace = f"secrets-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace}})
    yield Release(control_plane.admin_kubeconfig, namespace, core)
    core.delete_namespace(namespace)


def test_passwords_are_generated_on_install_and_kept_by_upgrades_and_uninstall(
    release: Release,
) -> None:
    release.install()
    installed = {name: release.credentials(name) for name in DATABASE_SECRETS}
    for credentials in installed.values():
        assert credentials["username"] == "jobflow"
        assert len(credentials["password"]) == 32
    assert (
        installed["jobflow-postgres"]["password"] != installed["clickhouse-credentials"]["password"]
    )

    release.install("--set", "receiver.replicas=2")
    release.install()
    assert {name: release.credentials(name) for name in DATABASE_SECRETS} == installed

    release.helm("uninstall", "jobflow")
    assert all(release.exists(name) for name in DATABASE_SECRETS), "the data outlives the release"
    release.install()
    assert {name: release.credentials(name) for name in DATABASE_SECRETS} == installed


def test_a_secret_the_user_made_is_used_as_it_is(release: Release) -> None:
    mine = {"username": "owner", "password": "chosen-by-the-user"}
    release.core.create_namespaced_secret(
        release.namespace, {"metadata": {"name": USERS_OWN}, "stringData": mine}
    )
    release.install("--set", f"postgres.credentialsSecret={USERS_OWN}")
    assert release.credentials(USERS_OWN) == mine
    assert not release.exists("jobflow-postgres")
    statefulset = client.AppsV1Api(release.core.api_client).read_namespaced_stateful_set(
        "jobflow-postgres", release.namespace
    )
    volumes = {v.name: v.secret for v in statefulset.spec.template.spec.volumes}
    assert volumes["credentials"].secret_name == USERS_OWN


def test_no_password_is_in_a_config_map_or_the_values(release: Release) -> None:
    """Helm's own record of the release (a Secret) holds the generated Secrets as rendered:
    what a chart that generates a password cannot avoid. Nothing else may hold one, plain or
    base64-encoded."""
    release.install("--set", "informer.backend=postgres")
    passwords = [release.credentials(name)["password"] for name in DATABASE_SECRETS]
    forms = [*passwords, *(base64.b64encode(p.encode()).decode() for p in passwords)]
    config_maps = release.core.list_namespaced_config_map(release.namespace).items
    values = release.helm("get", "values", "jobflow", "--all", "--output", "json")
    for text in (json.dumps([c.data for c in config_maps]), values):
        assert not any(form in text for form in forms)
    stored = release.helm("get", "manifest", "jobflow")
    outside_secrets = [d for d in stored.split("\n---") if "\nkind: Secret\n" not in d]
    assert not any(form in "".join(outside_secrets) for form in forms)


@pytest.fixture
def api_server_endpoints(release: Release) -> Iterator[tuple[set[str], set[int]]]:
    """The EndpointSlice default/kubernetes as a cluster's API server keeps it (minikube's
    address and port). The test API server, on loopback, keeps none of its own."""
    discovery = client.DiscoveryV1Api(release.core.api_client)
    discovery.create_namespaced_endpoint_slice(
        "default",
        {
            "metadata": {
                "name": "kubernetes",
                "labels": {"kubernetes.io/service-name": "kubernetes"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["192.168.49.2"]}],
            "ports": [{"name": "https", "port": 8443, "protocol": "TCP"}],
        },
    )
    yield {"192.168.49.2/32"}, {8443}
    discovery.delete_namespaced_endpoint_slice("kubernetes", "default")


def test_the_api_server_is_allowed_at_exactly_its_endpoints(
    release: Release, api_server_endpoints: tuple[set[str], set[int]]
) -> None:
    """The other lookup: the operator's and Connect's way to the API server is what the
    cluster's EndpointSlice default/kubernetes says, not the values' fallback."""
    release.install()
    addresses, ports = api_server_endpoints
    networking = client.NetworkingV1Api(release.core.api_client)
    operator = networking.read_namespaced_network_policy("jobflow-operator", release.namespace)
    (rule,) = operator.spec.egress or []
    assert {peer.ip_block.cidr for peer in rule.to} == addresses
    assert {port.port for port in rule.ports} == ports
    connect = networking.read_namespaced_network_policy("jobflow-connect", release.namespace)
    assert any(
        {peer.ip_block.cidr for peer in rule.to if peer.ip_block} == addresses
        and {port.port for port in rule.ports} == ports
        for rule in connect.spec.egress or []
    )
