"""The chart's yandex-tank Job in the cluster: the seed's profile, shortened to SECONDS, with BFG
and our gun in jobflow's tank image (loadtest/Dockerfile; phantom is in none of the registries
the images are built from), its results copied out of the Job's pod as `make loadtest` copies
them, and judged by the tank's own figures.

The Job belongs to a release of its own, `jobflow-tank` in namespace `jobflow-tank`, installed
beside the release of test_release.py (which ends by uninstalling its own) and removed after.
Both releases use the same data plane, so they share its topics and consumer groups: the tank's
jobs may be carried by either release's processor and converter. They still finish, and that is
what is checked.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from loadtest import tank
from local.cluster.cluster import kubectl
from local.cluster.config import ClusterSettings
from local.cluster.data_plane import postgres_settings
from local.cluster.node import kube_bin
from local.cluster.release import CHART, helm_arguments, namespace_manifests

from tests.chaos.harness import postgres_statuses
from tests.cluster.conftest import helm
from tests.cluster.figures import FIGURES

NAMESPACE = "jobflow-tank"
RELEASE = "jobflow-tank"
SECONDS = 20
SCHEDULE = tank.shortened(tank.schedule_of("seed"), SECONDS)
RATE = tank.const_rate(SCHEDULE)
# The Job of the release's first revision (one run per revision).
JOB = f"{RELEASE}-loadtest-1"


def uninstall(settings: ClusterSettings) -> None:
    helm(settings, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--ignore-not-found")


@dataclass(frozen=True)
class TankRelease:
    settings: ClusterSettings
    installed_at: int
    """Epoch seconds before the install: the Job, and its load, start during it."""


@pytest.fixture(scope="module")
def tank_release(cluster: ClusterSettings) -> Iterator[TankRelease]:
    """The release with the loadtest-bfg profile and the shortened schedule, in a namespace
    made as `python -m local.cluster deploy` makes its own (restricted, the data plane's
    credentials); an earlier run's is uninstalled first, so that the Job is revision 1's."""
    uninstall(cluster)
    installed_at = int(time.time()) - 1
    manifests = "".join(
        "---\n" + yaml.safe_dump(item) for item in namespace_manifests(cluster, NAMESPACE)
    )
    apply = [
        str(kube_bin("kubectl")), f"--kubeconfig={cluster.kubeconfig}",
        "apply", "--server-side", "-f", "-",
    ]  # fmt: skip
    subprocess.run(apply, input=manifests, text=True, check=True)  # noqa: S603
    try:
        started = time.monotonic()
        installed = helm(
            cluster, "install", RELEASE, str(CHART), *helm_arguments(cluster, NAMESPACE),
            f"--values={CHART / 'profiles' / 'loadtest-bfg.yaml'}",
            f"--set-json=loadtest.schedule={json.dumps(SCHEDULE)}",
            "--wait", "--timeout=5m",
        )  # fmt: skip
        assert installed.returncode == 0, installed.stdout + installed.stderr
        FIGURES["tank: second release installed, s"] = round(time.monotonic() - started, 1)
        yield TankRelease(cluster, installed_at)
    finally:
        uninstall(cluster)
        kubectl(cluster, "delete", "namespace", NAMESPACE, "--wait=true", "--timeout=120s")


def job_pod(settings: ClusterSettings) -> dict[str, Any] | None:
    listed = kubectl(
        settings, "-n", NAMESPACE, "get", "pods", "-o", "json",
        f"--selector=batch.kubernetes.io/job-name={JOB}",
    )  # fmt: skip
    items = json.loads(listed)["items"]
    return dict(items[0]) if items else None


# Why a container cannot start that no waiting mends; an image not on the node is one (the
# cluster's images are imported, never pulled).
CANNOT_START = {
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}


def tank_exit(settings: ClusterSettings, timeout_s: float) -> int:
    """The tank container's exit status once it has finished; fails at once if the pod did, or
    if one of its containers cannot start."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pod = job_pod(settings)
        if pod is not None:
            status = pod["status"]
            assert status.get("phase") != "Failed", json.dumps(status, indent=1)
            containers = status.get("initContainerStatuses", []) + status.get(
                "containerStatuses", []
            )
            for container in containers:
                waiting = container["state"].get("waiting", {})
                assert waiting.get("reason") not in CANNOT_START, (container["name"], waiting)
                if container["name"] == "tank" and "terminated" in container["state"]:
                    return int(container["state"]["terminated"]["exitCode"])
        time.sleep(2)
    raise AssertionError(f"the tank did not finish in {timeout_s:.0f} s")


def copy_results(settings: ClusterSettings, destination: Path) -> None:
    """/results of the Job's pod, then the sign that lets its results container finish."""
    pod = job_pod(settings)
    assert pod is not None
    name = pod["metadata"]["name"]
    kubectl(settings, "-n", NAMESPACE, "wait", "--for=condition=Ready", f"pod/{name}",
            "--timeout=120s")  # fmt: skip
    kubectl(settings, "-n", NAMESPACE, "cp", "-c", "results", f"{name}:/results", str(destination))
    kubectl(settings, "-n", NAMESPACE, "exec", name, "-c", "results", "--",
            "touch", "/results/.copied")  # fmt: skip
    kubectl(settings, "-n", NAMESPACE, "wait", "--for=condition=complete", f"job/{JOB}",
            "--timeout=120s")  # fmt: skip


@pytest.mark.timeout(900)
def test_the_tank_job_runs_the_seed_profile_shortened_without_errors(
    tank_release: TankRelease, tmp_path: Path
) -> None:
    settings = tank_release.settings
    # The Job first waits for one job through the pipeline (up to the smoke check's 180 s).
    code = tank_exit(settings, timeout_s=420)
    FIGURES["tank: Job done after install began, s"] = round(
        time.time() - tank_release.installed_at, 1
    )
    assert code == 0, "the tank container runs the tank and always exits 0"
    results = tmp_path / "results"
    copy_results(settings, results)

    # yandex-tank moves its log into the run's artifacts when it ends.
    logs = sorted(results.glob("artifacts/*/tank.log"))
    tank_log = logs[-1].read_text()[-3000:] if logs else "(no tank.log)"
    assert (results / "exit-code").read_text().strip() == "0", tank_log
    shots = tank.read_shots(results)
    # The tank's own record (bfgout.log): what the schedule sent, give or take its last second,
    # every answer a 200 and no network error.
    assert RATE * (SECONDS - 1) <= len(shots) <= RATE * SECONDS, (len(shots), tank_log)
    assert Counter(shot.proto_code for shot in shots) == {200: len(shots)}
    assert Counter(shot.net_code for shot in shots) == {0: len(shots)}
    answered = [shot.answered_at for shot in shots]
    rps = len(shots) / max(max(answered) - min(answered), 1)
    errors = sum(not shot.ok for shot in shots)
    FIGURES["tank: RPS, errors"] = f"{rps:.1f}, {errors}"
    latencies = [shot.latency_ms for shot in shots]
    FIGURES["tank: requests, p50 / p99 ms"] = (
        f"{len(shots)}, {tank.quantile(latencies, 0.5):.1f} / {tank.quantile(latencies, 0.99):.1f}"
    )

    # The gun's record of the ids the receiver acknowledged: each once, and each finished in
    # the data plane's PostgreSQL.
    acked = Counter(tank.read_acked_ids(results / "acked"))
    assert len(acked) == RATE * SECONDS
    assert max(acked.values()) == 1
    postgres = postgres_settings(settings)

    def unfinished() -> list[str] | None:
        statuses = postgres_statuses(tank_release.installed_at, postgres)
        missing = [job for job in acked if statuses.get(job) != ["finish"]]
        return missing or None

    deadline = time.monotonic() + 120
    while (missing := unfinished()) and time.monotonic() < deadline:
        time.sleep(2)
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged jobs not finished"
    FIGURES["tank: acknowledged jobs finished in PostgreSQL"] = len(acked)
