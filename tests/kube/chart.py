"""Rendering the Helm chart for the offline checks."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml
from local.config import REPO

from tests.kube.apiserver import binaries

CHART = REPO / "charts" / "jobflow"
# The values files skaffold's profiles (and make deploy PROFILE=...) install with.
PROFILES = {path.stem: ("--values", str(path)) for path in sorted(CHART.glob("profiles/*.yaml"))}
# helm template on a cluster that serves the Prometheus Operator's kinds.
WITH_PROMETHEUS_OPERATOR = (
    "--api-versions",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "--api-versions",
    "monitoring.coreos.com/v1/PrometheusRule",
)


# The processor's optional KEDA ScaledObject, switched on.
WITH_KEDA = ("--set", "processor.autoscaling.enabled=true")


def helm(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [str(binaries().helm), *arguments], capture_output=True, text=True, check=False
    )


def render(*arguments: str) -> list[dict[str, Any]]:
    """The objects ``helm template`` renders for release jobflow in namespace jobflow."""
    result = helm("template", "jobflow", str(CHART), "--namespace", "jobflow", *arguments)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def platform_objects() -> list[dict[str, Any]]:
    """Every object of the platform manifests (k8s/*/*.yaml)."""
    return [
        document
        for path in sorted((REPO / "k8s").glob("*/*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def kinds(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The objects of one kind, by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}
