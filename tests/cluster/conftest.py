"""jobflow on a real one-node cluster on this machine (``make test-cluster``).

The session brings the node up and builds the images (``python -m local.cluster up`` and
``images``, both idempotent and cached), then installs the release as a user would
(``python -m local.cluster deploy``: helm upgrade --install --wait). What each step measured is
printed at the end of the run, whether it passed or not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
from local.cluster.cluster import kubectl
from local.cluster.config import ClusterSettings
from local.cluster.node import kube_bin
from local.cluster.release import NAMESPACE, RELEASE

from tests.cluster.figures import FIGURES


def run_cluster_command(command: str) -> float:
    """``python -m local.cluster COMMAND``, its output shown; seconds it took."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "local.cluster", command], check=False)  # noqa: S603
    assert done.returncode == 0, f"python -m local.cluster {command} failed (see above)"
    return time.monotonic() - started


@pytest.fixture(scope="session")
def cluster() -> ClusterSettings:
    FIGURES["node up, s"] = round(run_cluster_command("up"), 1)
    FIGURES["images built and imported, s"] = round(run_cluster_command("images"), 1)
    return ClusterSettings()


def helm(settings: ClusterSettings, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [str(kube_bin("helm")), f"--kubeconfig={settings.kubeconfig}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603


@pytest.fixture(scope="session")
def release(cluster: ClusterSettings) -> ClusterSettings:
    """The release installed from scratch (an earlier run's is uninstalled first)."""
    helm(cluster, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--ignore-not-found")
    FIGURES["helm install --wait, s"] = round(run_cluster_command("deploy"), 1)
    return cluster


def pods(settings: ClusterSettings) -> list[dict[str, Any]]:
    listed = json.loads(kubectl(settings, "-n", NAMESPACE, "get", "pods", "-o", "json"))
    return list(listed["items"])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("jobflow on this machine's cluster")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")
