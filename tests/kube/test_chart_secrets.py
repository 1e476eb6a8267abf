"""The chart's generated credentials, through real `helm install`, `upgrade` and `uninstall`.

`lookup` only sees a cluster during install and upgrade, never under `helm template`, so these
run helm against the real kube-apiserver of tests/kube (no kubelet: the objects are stored,
no pod runs). They check what a user relies on: a password generated on install, kept by every
upgrade and by an uninstall, a Secret the user made used as it is, and no password anywhere but
in the Secrets.
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


def test_no_password_is_stored_outside_the_secrets(release: Release) -> None:
    release.install("--set", "informer.backend=postgres")
    passwords = [release.credentials(name)["password"] for name in DATABASE_SECRETS]
    stored = release.helm("get", "manifest", "jobflow")
    config_maps = release.core.list_namespaced_config_map(release.namespace).items
    values = release.helm("get", "values", "jobflow", "--all", "--output", "json")
    for text in (stored, json.dumps([c.data for c in config_maps]), values):
        assert not any(password in text for password in passwords)
