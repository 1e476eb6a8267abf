"""The release on a real node, in the order a user meets it: helm install, helm test, the
README's curl commands through kubectl port-forward, the operator's apply Jobs, helm uninstall.

Each test depends on the ones before it (one release for the module, installed once).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from local.clickhouse_compat import adapt_for_clickhouse_18
from local.cluster.config import ClusterSettings
from local.cluster.data_plane import stack_settings
from local.cluster.images import service_image
from local.cluster.node import kube_bin
from local.cluster.release import NAMESPACE, RELEASE
from local.config import CONTRACTS

from jobflow.__main__ import SERVICES
from jobflow.schema.statements import split_statements
from tests.cluster.conftest import helm, kubectl, pods
from tests.cluster.figures import FIGURES
from tests.polling import eventually

UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_install_brings_every_service_ready_from_images_built_here(
    release: ClusterSettings,
) -> None:
    running = [pod for pod in pods(release) if pod["status"]["phase"] == "Running"]
    by_component = {
        pod["metadata"]["labels"]["app.kubernetes.io/component"]: pod for pod in running
    }
    assert set(SERVICES) <= set(by_component), f"running: {sorted(by_component)}"
    for component in SERVICES:
        pod = by_component[component]
        assert ready(pod), f"{component} is not Ready: {pod['status']}"
        (container,) = pod["status"]["containerStatuses"]
        assert container["image"] == service_image(component)
        assert container["restartCount"] == 0, f"{component} restarted"
    labels = json.loads(kubectl(release, "get", "namespace", NAMESPACE, "-o", "json"))
    assert labels["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # Nothing was pulled: the kubelet says "Pulling" before every pull it tries.
    events = kubectl(release, "-n", NAMESPACE, "get", "events", "-o", "json")
    reasons = {event["reason"] for event in json.loads(events)["items"]}
    assert "Pulling" not in reasons
    assert "Failed" not in reasons, "a pod failed to start"
    FIGURES["pods Ready"] = len(running)


def test_helm_test_runs_one_job_through_the_pipeline(release: ClusterSettings) -> None:
    started = time.monotonic()
    tested = helm(release, "test", RELEASE, "--namespace", NAMESPACE, "--logs", "--timeout=5m")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "Phase:          Succeeded" in tested.stdout
    assert '"step":"finished"' in tested.stdout
    FIGURES["helm test, s"] = round(time.monotonic() - started, 1)


@contextmanager
def port_forward(settings: ClusterSettings, service: str, port: int) -> Iterator[str]:
    """``kubectl port-forward svc/SERVICE :PORT`` on loopback; yields the local base URL."""
    command = [
        str(kube_bin("kubectl")), f"--kubeconfig={settings.kubeconfig}", "-n", NAMESPACE,
        "port-forward", "--address=127.0.0.1", f"svc/{service}", f":{port}",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: S603
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match, f"kubectl port-forward said: {line!r}"
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_readme_user_path_through_port_forward(release: ClusterSettings) -> None:
    with (
        port_forward(release, f"{RELEASE}-receiver", 8001) as receiver,
        port_forward(release, f"{RELEASE}-informer", 8004) as informer,
    ):
        created = httpx.post(f"{receiver}/api/v1/create/job", timeout=10)
        assert created.status_code == 200, created.text
        job = created.json()
        assert set(job) == {"id", "create_date", "sleep", "data_size"}
        assert UUID_PATTERN.match(job["id"])

        def finished() -> dict[str, Any] | None:
            answer = httpx.get(f"{informer}/info/{job['id']}", timeout=10).json()
            return answer if answer["status"] == "finish" else None

        status = eventually(finished, timeout_s=60, what="the job finished, by the informer")
        assert set(status) == {"id", "status", "create_date", "finish_date"}
        unknown = httpx.get(f"{informer}/info/{uuid.UUID(int=0)}", timeout=10)
        assert unknown.json() == {"id": str(uuid.UUID(int=0)), "status": "unknown"}
        assert httpx.get(f"{informer}/info/not-a-uuid", timeout=10).status_code == 422
        refused = httpx.post(f"{receiver}/api/v1/create/job", json={"sleep": -1}, timeout=10)
        assert refused.status_code == 422


def stream_schema(settings: ClusterSettings, name: str) -> dict[str, Any]:
    found = kubectl(settings, "-n", NAMESPACE, "get", "streamschema", name, "-o", "json")
    return dict(json.loads(found))


def phase(settings: ClusterSettings, name: str) -> str | None:
    status = stream_schema(settings, name).get("status", {})
    return status.get("phase") if status.get("phase") in ("Succeeded", "Failed") else None


def test_the_charts_clickhouse_schema_fails_on_clickhouse_18_with_the_jobs_reason(
    release: ClusterSettings,
) -> None:
    """The canonical DDL needs a current ClickHouse: on the data plane's 18.16 its apply Job
    really runs, ClickHouse refuses the first statement, and the schema says Failed."""
    name = f"{RELEASE}-clickhouse"
    assert eventually(lambda: phase(release, name), timeout_s=240) == "Failed"
    status = stream_schema(release, name)["status"]
    assert status["conditions"][0]["reason"] == "BackoffLimitExceeded"
    job = json.loads(
        kubectl(release, "-n", NAMESPACE, "get", "job", status["jobName"], "-o", "json")
    )
    assert job["status"]["failed"] >= 1


@pytest.fixture
def adapted_schema(release: ClusterSettings) -> Iterator[str]:
    """A StreamSchema like the chart's, whose statements are the canonical ones adapted for
    ClickHouse 18.16 (local/clickhouse_compat.py, as the local stack applies them)."""
    name = f"{RELEASE}-clickhouse-18"
    schema = stream_schema(release, f"{RELEASE}-clickhouse")
    canonical = split_statements((CONTRACTS / "clickhouse" / "schema.sql").read_text())
    adapted = adapt_for_clickhouse_18(canonical, lambda _: None)
    spec = dict(schema["spec"])
    spec["statements"] = {"inline": "".join(f"{statement};\n" for statement in adapted)}
    manifest = {
        "apiVersion": schema["apiVersion"],
        "kind": "StreamSchema",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }
    command = [str(kube_bin("kubectl")), f"--kubeconfig={release.kubeconfig}", "apply", "-f", "-"]
    subprocess.run(command, input=json.dumps(manifest), text=True, check=True)  # noqa: S603
    yield name
    kubectl(release, "-n", NAMESPACE, "delete", "streamschema", name, "--wait=true")


def test_an_apply_job_creates_clickhouses_tables_and_the_jobs_reach_them(
    release: ClusterSettings, adapted_schema: str
) -> None:
    started = time.monotonic()
    assert eventually(lambda: phase(release, adapted_schema), timeout_s=240) == "Succeeded"
    FIGURES["StreamSchema Succeeded after, s"] = round(time.monotonic() - started, 1)
    clickhouse = stack_settings(release).clickhouse_url

    def rows() -> int | None:
        query = "SELECT count() FROM jobs FINAL"
        answer = httpx.post(clickhouse, content=query, timeout=10)
        return int(answer.text) if answer.status_code == 200 and int(answer.text) else None

    # The jobs of the tests above, read by the Kafka engine from the start of the topic.
    count = eventually(rows, timeout_s=120, what="rows in ClickHouse's jobs")
    assert count % 2 == 0, "each job has its create and its finish row"
    FIGURES["ClickHouse rows (create + finish)"] = count
