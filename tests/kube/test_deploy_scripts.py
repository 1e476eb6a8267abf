"""The deploy steps that skaffold.yaml and the Makefile run with kubectl, run with a real
kubectl against the real control plane: the namespace manifest and k8s/ensure-secrets.sh."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest
from kubernetes import client
from local.config import REPO

from tests.kube.apiserver import ControlPlane, api_client, binaries

# run by make chart-check too (tests/targets.mk)
pytestmark = pytest.mark.chart

ENSURE_SECRETS = REPO / "k8s" / "ensure-secrets.sh"


def run(control_plane: ControlPlane, *command: str | Path) -> subprocess.CompletedProcess[str]:
    kubectl_dir = binaries().kubectl.parent
    env = {
        **os.environ,
        "KUBECONFIG": str(control_plane.admin_kubeconfig),
        "PATH": f"{kubectl_dir}{os.pathsep}{os.environ['PATH']}",
    }
    return subprocess.run(  # noqa: S603
        [str(part) for part in command], env=env, capture_output=True, text=True, check=False
    )


def secret_data(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, str]:
    data = core.read_namespaced_secret(name, namespace).data
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def test_the_jobflow_namespace_is_the_manifest_with_its_pod_security_labels(
    control_plane: ControlPlane,
) -> None:
    applied = run(control_plane, ENSURE_SECRETS, "jobflow")
    assert applied.returncode == 0, applied.stderr
    core = client.CoreV1Api(api_client(control_plane.admin_kubeconfig))
    labels = core.read_namespace("jobflow").metadata.labels or {}
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def test_secrets_are_generated_once_and_kept(control_plane: ControlPlane) -> None:
    core = client.CoreV1Api(api_client(control_plane.admin_kubeconfig))
    first = run(control_plane, ENSURE_SECRETS)
    assert first.returncode == 0, first.stderr
    clickhouse = secret_data(core, "jobflow", "clickhouse-credentials")
    grafana = secret_data(core, "monitoring", "grafana-admin")
    assert clickhouse["username"] == "jobflow"
    assert grafana["admin-user"] == "admin"
    for password in (clickhouse["password"], grafana["admin-password"]):
        assert len(password) == 32
        int(password, 16)
    assert clickhouse["password"] != grafana["admin-password"]

    again = run(control_plane, ENSURE_SECRETS, "jobflow", "monitoring")
    assert again.returncode == 0, again.stderr
    assert "secret jobflow/clickhouse-credentials exists: kept" in again.stdout
    assert secret_data(core, "jobflow", "clickhouse-credentials") == clickhouse
    assert secret_data(core, "monitoring", "grafana-admin") == grafana


@pytest.mark.parametrize("part", ["grafana", ""])
def test_an_unknown_part_is_refused(control_plane: ControlPlane, part: str) -> None:
    refused = run(control_plane, ENSURE_SECRETS, part)
    assert refused.returncode == 2
    assert "unknown part" in refused.stderr
