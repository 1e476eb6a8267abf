"""A real control plane (etcd, kube-apiserver, kube-controller-manager) for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kube import apiserver
from tests.kube.apiserver import ControlPlane

# A cold build of the binaries (module download and compile) takes about 10 minutes on 2 cores:
# the first test to need the control plane gets that much longer than the usual timeout.
COLD_BUILD_TIMEOUT_S = 3600


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    users = [item for item in items if "control_plane" in getattr(item, "fixturenames", ())]
    if users and config.pluginmanager.hasplugin("timeout") and apiserver.build_needed():
        users[0].add_marker(pytest.mark.timeout(COLD_BUILD_TIMEOUT_S))


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with apiserver.control_plane(tmp_path_factory.mktemp("kube")) as plane:
        yield plane
