"""checkov on the chart rendered in every profile and on the platform manifests.

checkov 3.3.30 (in .venv-checkov, `make checkov-env`) runs its Kubernetes checks once over all
of them. Zero failed checks is the bar: what it flags is fixed, or skipped with its reason next
to it, either for one object (a checkov.io/skipN annotation) or everywhere (.checkov.yaml, one
line each).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from local.config import REPO

from tests.kube.chart import PROFILES, WITH_KEDA, WITH_PROMETHEUS_OPERATOR, helm

# run by make security-check and make chart-check too (tests/targets.mk)
pytestmark = [pytest.mark.security, pytest.mark.chart]

CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
CONFIG = REPO / ".checkov.yaml"
RENDERINGS = {
    "default": (),
    **PROFILES,
    "prometheus-operator-and-keda": (*WITH_PROMETHEUS_OPERATOR, *WITH_KEDA),
}
# A reason says why, in a few words at least.
SKIP = re.compile(r"^CKV_K8S_\d+=.{30,}$")


def render_into(folder: Path, name: str, *arguments: str) -> None:
    result = helm(
        "template", "jobflow", str(REPO / "charts" / "jobflow"), "-n", "jobflow", *arguments
    )
    assert result.returncode == 0, result.stderr
    (folder / f"{name}.yaml").write_text(result.stdout)


def checkov(folder: Path) -> dict[str, Any]:
    """checkov's Kubernetes report on every file under ``folder``."""
    if not CHECKOV.exists():
        pytest.fail("checkov is not installed: make checkov-env")
    result = subprocess.run(  # noqa: S603
        [str(CHECKOV), "--config-file", str(CONFIG), "-d", str(folder), "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    # 0: nothing failed; 1: something did. Anything else is checkov itself failing.
    assert result.returncode in {0, 1}, result.stderr
    report = json.loads(result.stdout)
    assert report["check_type"] == "kubernetes"
    return dict(report)


def failures(report: dict[str, Any]) -> dict[str, list[str]]:
    found = defaultdict(list)
    for check in report["results"]["failed_checks"]:
        found[check["file_path"]].append(f"{check['check_id']} {check['resource']}")
    return dict(found)


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("checkov")
    for name, arguments in RENDERINGS.items():
        render_into(folder, name, *arguments)
    shutil.copytree(REPO / "k8s", folder / "k8s", ignore=shutil.ignore_patterns("Dockerfile"))
    return folder, checkov(folder)


def test_every_profile_and_manifest_passes_every_check(
    scanned: tuple[Path, dict[str, Any]],
) -> None:
    _, report = scanned
    assert not failures(report)
    summary = report["summary"]
    assert summary["passed"] > 0
    assert summary["resource_count"] > 0
    scanned_files = {c["file_path"] for c in report["results"]["passed_checks"]}
    assert {f"/{name}.yaml" for name in RENDERINGS} <= scanned_files
    assert {"/k8s/clickhouse/clickhouse.yaml", "/k8s/ksqldb/ksqldb.yaml"} <= scanned_files


def test_each_skip_for_one_object_gives_its_reason(scanned: tuple[Path, dict[str, Any]]) -> None:
    folder, report = scanned
    annotations = [
        value
        for path in folder.rglob("*.yaml")
        for document in yaml.safe_load_all(path.read_text())
        if document
        for key, value in (document["metadata"].get("annotations") or {}).items()
        if key.startswith("checkov.io/skip")
    ]
    assert annotations
    assert all(SKIP.match(value) for value in annotations), annotations
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
    assert skipped == {value.split("=", 1)[0] for value in annotations}


def test_each_skip_everywhere_gives_its_reason_on_its_line() -> None:
    entries = [line.strip() for line in CONFIG.read_text().splitlines() if "- CKV_" in line]
    assert entries == [entry for entry in entries if re.fullmatch(r"- CKV_K8S_\d+ # .{40,}", entry)]
    assert len(entries) == len(yaml.safe_load(CONFIG.read_text())["skip-check"])


def test_a_pod_that_breaks_a_check_fails_it(tmp_path: Path) -> None:
    render_into(
        tmp_path, "writable", "--set", "containerSecurityContext.readOnlyRootFilesystem=false"
    )
    failed = failures(checkov(tmp_path))
    assert any(f.startswith("CKV_K8S_22 Deployment.") for f in failed["/writable.yaml"]), failed
