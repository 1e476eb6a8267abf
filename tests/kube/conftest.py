"""A real control plane (etcd, kube-apiserver, kube-controller-manager) for the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from xml.etree import ElementTree

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


REPO = Path(__file__).resolve().parents[2]
JOBFLOW_CRDS = REPO / "charts" / "jobflow" / "crds"
STRIMZI_POM = REPO / "tools" / "strimzi" / "pom.xml"
STRIMZI_CRDS_SCRIPT = REPO / "tools" / "strimzi" / "crds.sh"

# Test inputs that no package registry serves live beside the repository, in ../shared (CI has
# it there); JOBFLOW_SHARED_DIR points elsewhere. The README's test section lists them.
SHARED = Path(os.environ.get("JOBFLOW_SHARED_DIR", REPO.parent / "shared"))


def require_shared_file(path: Path, origin: str) -> None:
    """Fail in CI, skip elsewhere, when ``path`` (under SHARED) is missing; ``origin`` says where
    the file comes from. CI always has ../shared, so there a missing file is a broken check that a
    skip would hide; a user's clone may not, and the skip's reason (pytest -ra) says what was not
    checked and how to have it checked."""
    if path.is_file():
        return
    message = (
        f"{path} is missing: it is {origin}. Put it there, or set JOBFLOW_SHARED_DIR to a folder "
        f"holding {path.relative_to(SHARED)}"
    )
    if os.environ.get("CI", "").lower() in {"true", "1"}:
        pytest.fail(message)
    pytest.skip(message)


def strimzi_version() -> str:
    """The Strimzi release the chart and k8s/strimzi are checked against (tools/strimzi/pom.xml)."""
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    pom = ElementTree.parse(STRIMZI_POM)  # noqa: S314 - ours
    version = pom.findtext("m:properties/m:strimzi.version", "", namespace)
    assert version, f"no strimzi.version in {STRIMZI_POM}"
    return version


@cache
def strimzi_crd_files() -> list[Path]:
    """That release's CRDs, generated from its jars on Maven Central by tools/strimzi/crds.sh when
    missing or stale (about 10 s; nothing when up to date)."""
    apiserver.run_build_script(STRIMZI_CRDS_SCRIPT)
    return sorted((apiserver.local_dir() / "kube" / "crds" / "strimzi").glob("*.yaml"))


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
    """The CRDs of the Strimzi release pinned in tools/strimzi/pom.xml installed on the control
    plane; the names of their kinds."""
    return install_crds(control_plane, strimzi_crd_files())


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
