"""A real control plane (etcd, kube-apiserver, kube-controller-manager) for the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kube import apiserver
from tests.kube.apiserver import ControlPlane

# A cold build of the binaries (module download and compile) takes about 10 minutes on 2 cores:
# the first test to need the control plane gets that much longer than the usual timeout.
COLD_BUILD_TIMEOUT_S = 3600
HTTP_CONFLICT = 409


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    users = [item for item in items if "control_plane" in getattr(item, "fixturenames", ())]
    if users and config.pluginmanager.hasplugin("timeout") and apiserver.build_needed():
        users[0].add_marker(pytest.mark.timeout(COLD_BUILD_TIMEOUT_S))


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with apiserver.control_plane(tmp_path_factory.mktemp("kube")) as plane:
        yield plane


# The workplace keeps shared data beside the repository; JOBFLOW_SHARED_DIR points elsewhere.
SHARED = Path(os.environ.get("JOBFLOW_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))
STRIMZI_CRDS = SHARED / "strimzi-crds"
JOBFLOW_CRDS = Path(__file__).resolve().parents[2] / "charts" / "jobflow" / "crds"


def install_crds(control_plane: ControlPlane, paths: list[Path]) -> list[str]:
    """Install the CRDs in ``paths`` (again is fine) and wait until each is Established."""
    extensions = client.ApiextensionsV1Api(apiserver.api_client(control_plane.admin_kubeconfig))
    kinds = []
    for path in paths:
        for document in yaml.safe_load_all(path.read_text()):
            if not document or document.get("kind") != "CustomResourceDefinition":
                continue
            kinds.append(document["spec"]["names"]["kind"])
            try:
                extensions.create_custom_resource_definition(document)
            except ApiException as exc:
                if exc.status != HTTP_CONFLICT:
                    raise

            def established(name: str = document["metadata"]["name"]) -> bool:
                status = extensions.read_custom_resource_definition(name).status
                conditions = status.conditions if status else None
                return any(c.type == "Established" and c.status == "True" for c in conditions or [])

            apiserver.eventually(established)
    return kinds


@pytest.fixture(scope="session")
def strimzi_crds(control_plane: ControlPlane) -> list[str]:
    """Strimzi 1.2.0's CRDs installed on the control plane; the names of their kinds."""
    if not STRIMZI_CRDS.is_dir():
        pytest.skip(f"Strimzi CRDs not found at {STRIMZI_CRDS}")
    return install_crds(control_plane, sorted(STRIMZI_CRDS.glob("*.yaml")))


@pytest.fixture(scope="session")
def jobflow_crds(control_plane: ControlPlane) -> list[str]:
    """The chart's own CRDs (charts/jobflow/crds/) installed on the control plane."""
    return install_crds(control_plane, sorted(JOBFLOW_CRDS.glob("*.yaml")))


@pytest.fixture(scope="session")
def prometheus_operator_crds(control_plane: ControlPlane) -> list[str]:
    """The Prometheus Operator's ServiceMonitor, PodMonitor and PrometheusRule CRDs (pinned in
    tools/kube/build.sh) installed on the control plane; the names of their kinds."""
    return install_crds(
        control_plane, sorted(apiserver.binaries().prometheus_operator_crds.glob("*.yaml"))
    )


@pytest.fixture(scope="session")
def keda_crds(control_plane: ControlPlane) -> list[str]:
    """KEDA's ScaledObject CRD (pinned in tools/kube/build.sh) installed on the control plane."""
    return install_crds(control_plane, sorted(apiserver.binaries().keda_crds.glob("*.yaml")))
