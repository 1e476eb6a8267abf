"""The release on a real node, in the order a user meets it: helm install, helm test, the
README's curl commands through kubectl port-forward, the operator's apply Jobs, helm uninstall.

Each test depends on the ones before it (one release for the module, installed once).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from local.clickhouse_compat import adapt_for_clickhouse_18
from local.cluster.cluster import kubectl
from local.cluster.config import ClusterSettings
from local.cluster.data_plane import postgres_settings, stack_settings
from local.cluster.images import service_image
from local.cluster.network import in_namespace
from local.cluster.node import kube_bin
from local.cluster.release import CHART, NAMESPACE, RELEASE, helm_arguments
from local.config import CONTRACTS, REPO

from jobflow.components import PIPELINE_SERVICES, SERVICES
from jobflow.core.settings import KafkaSettings
from jobflow.schema.migrations import MARKER, load_directory
from tests.chaos.harness import clickhouse_counts, postgres_statuses
from tests.cluster.conftest import helm, pods
from tests.cluster.figures import FIGURES
from tests.polling import eventually
from tests.stack.topics import partition_end_offsets, records_since

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
    done = ("Succeeded", "Failed", "Drifted")
    return status.get("phase") if status.get("phase") in done else None


def test_the_charts_clickhouse_schema_fails_on_clickhouse_18_with_the_jobs_reason(
    release: ClusterSettings,
) -> None:
    """The canonical migrations need a current ClickHouse: on the data plane's 18.16 their apply
    Job really runs, ClickHouse refuses the first statement, and the schema says Failed. Once an
    earlier run's adapted migrations (adapted_schema) are recorded there, the canonical ones are
    refused before any statement runs: their checksums are not the recorded ones."""
    name = f"{RELEASE}-clickhouse"
    assert eventually(lambda: phase(release, name), timeout_s=240) == "Failed"
    status = stream_schema(release, name)["status"]
    if status["conditions"][0]["reason"] == "Refused":
        assert status["message"].startswith("refused: 0001_jobs changed"), status["message"]
        return
    assert status["conditions"][0]["reason"] == "BackoffLimitExceeded"
    # ClickHouse's own words, from the failed pod's termination message: the first statement
    # 18.16 refuses (which one depends on what an earlier run left in the data plane).
    assert "DB::Exception" in status["message"], status["message"]
    job = json.loads(
        kubectl(release, "-n", NAMESPACE, "get", "job", status["jobName"], "-o", "json")
    )
    assert job["status"]["failed"] >= 1


@pytest.fixture(scope="module")
def adapted_schema(release: ClusterSettings) -> Iterator[str]:
    """A StreamSchema like the chart's, whose migrations are the canonical ones adapted for
    ClickHouse 18.16 (local/clickhouse_compat.py, as the local stack applies them)."""
    name = f"{RELEASE}-clickhouse-18"
    schema = stream_schema(release, f"{RELEASE}-clickhouse")
    # The placeholder stays one, for the apply Job to fill from the schema's parameters.
    placeholders = {"kafka_broker_list": "${kafka_broker_list}"}
    canonical = load_directory(CONTRACTS / "clickhouse" / "migrations", placeholders)
    bundle = ""
    for migration in canonical:
        adapted = adapt_for_clickhouse_18(list(migration.statements), lambda _: None)
        bundle += f"{MARKER}{migration.name}.sql\n" + "".join(f"{s};\n" for s in adapted)
    spec = dict(schema["spec"])
    spec["statements"] = {"inline": bundle}
    manifest = {
        "apiVersion": schema["apiVersion"],
        "kind": "StreamSchema",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }
    kubectl(release, "apply", "-f", "-", input_text=json.dumps(manifest))
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


# Under load ------------------------------------------------------------------------------------

LOAD_RATE_PER_S = 20


@contextmanager
def load_in_node(settings: ClusterSettings, seconds: float) -> Iterator[dict[str, Any]]:
    """tests/cluster/load.py for ``seconds`` at LOAD_RATE_PER_S against the receiver Service;
    the dict it yields is filled with the result when the block exits."""
    address = kubectl(
        settings, "-n", NAMESPACE, "get", "service", f"{RELEASE}-receiver",
        "-o", "jsonpath={.spec.clusterIP}:{.spec.ports[0].port}",
    )  # fmt: skip
    out = settings.path("load.json")
    out.unlink(missing_ok=True)
    command = in_namespace(
        settings,
        [sys.executable, "-m", "tests.cluster.load", f"http://{address}",
         str(LOAD_RATE_PER_S), str(seconds), str(out)],
    )  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO)  # noqa: S603
    result: dict[str, Any] = {}
    try:
        yield result
        assert process.wait(timeout=seconds + 90) == 0, "the load generator failed"
        result.update(json.loads(out.read_text()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def reckon(settings: ClusterSettings, accepted: list[str], since: int, start: Any) -> None:
    """Every accepted job once in processor-topic, finished in PostgreSQL, and with one create
    and one finish row in ClickHouse's FINAL view."""
    data_plane = stack_settings(settings)
    postgres = postgres_settings(settings)

    def missing() -> list[str] | None:
        statuses = postgres_statuses(since, postgres)
        counts = clickhouse_counts(data_plane, since)
        absent = [
            job
            for job in accepted
            if statuses.get(job) != ["finish"]
            or counts[(job, "create")] != 1
            or counts[(job, "finish")] != 1
        ]
        return absent or None

    deadline = time.monotonic() + 180
    while (absent := missing()) and time.monotonic() < deadline:
        time.sleep(2)
    assert not absent, f"{len(absent)} of {len(accepted)} jobs lost, e.g. {absent[:3]}"
    kafka = KafkaSettings(bootstrap_servers=data_plane.kafka_bootstrap)
    done = Counter(
        json.loads(value)["id"] for _, value in records_since(kafka, start, "processor-topic")
    )
    duplicated = [job for job in accepted if done[job] != 1]
    assert not duplicated, f"{len(duplicated)} jobs not exactly once in processor-topic"


def start_offsets(settings: ClusterSettings) -> Any:
    kafka = KafkaSettings(bootstrap_servers=stack_settings(settings).kafka_bootstrap)
    return partition_end_offsets(kafka, "processor-topic")


# One setting of each service changed: every Deployment rolls.
UPGRADED_SETTINGS = {
    "receiver.env.RECEIVER_SLEEP_JITTER_MS": "20",
    "processor.env.PROCESSOR_POLL_TIMEOUT_S": "0.25",
    "converter.env.CONVERTER_POLL_TIMEOUT_S": "0.25",
    "informer.env.INFORMER_BACKEND_TIMEOUT_S": "3",
}


def service_pods(settings: ClusterSettings) -> set[str]:
    """The Ready pods of the pipeline's services."""
    return {
        pod["metadata"]["name"]
        for pod in pods(settings)
        if ready(pod)
        and pod["metadata"]["labels"].get("app.kubernetes.io/component") in PIPELINE_SERVICES
    }


def test_a_rolling_upgrade_under_load_fails_no_request_and_loses_no_job(
    release: ClusterSettings, adapted_schema: str
) -> None:
    since, start = int(time.time()) - 1, start_offsets(release)
    before = service_pods(release)
    with load_in_node(release, seconds=60) as result:
        time.sleep(10)
        started = time.monotonic()
        settings = [f"--set={key}={value}" for key, value in UPGRADED_SETTINGS.items()]
        upgraded = helm(
            release, "upgrade", RELEASE, str(CHART), *helm_arguments(release), *settings,
            "--wait", "--timeout=5m",
        )  # fmt: skip
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        FIGURES["helm upgrade (4 Deployments rolled), s"] = round(time.monotonic() - started, 1)
    after = service_pods(release)
    assert len(after) == len(PIPELINE_SERVICES)
    assert not before & after, "every service pod was replaced"
    FIGURES["upgrade: requests accepted"] = len(result["accepted"])
    FIGURES["upgrade: requests failed"] = sum(result["errors"].values())
    assert not result["errors"], result["errors"]
    reckon(release, result["accepted"], since, start)
    FIGURES["upgrade: jobs lost / duplicated"] = "0 / 0"


def test_a_processor_pod_killed_mid_load_is_replaced_and_nothing_is_lost_or_doubled(
    release: ClusterSettings, adapted_schema: str
) -> None:
    since, start = int(time.time()) - 1, start_offsets(release)
    (victim,) = [name for name in service_pods(release) if "-processor-" in name]
    with load_in_node(release, seconds=45) as result:
        time.sleep(10)
        kubectl(release, "-n", NAMESPACE, "delete", "pod", victim, "--grace-period=0", "--force")
        killed = time.monotonic()

        def replacement() -> str | None:
            fresh = [name for name in service_pods(release) if "-processor-" in name]
            return fresh[0] if fresh and fresh[0] != victim else None

        eventually(replacement, timeout_s=120, what="a new processor pod Ready")
        FIGURES["kill: new processor pod Ready after, s"] = round(time.monotonic() - killed, 1)
    FIGURES["kill: requests accepted / failed"] = (
        f"{len(result['accepted'])} / {sum(result['errors'].values())}"
    )
    assert not result["errors"], result["errors"]
    reckon(release, result["accepted"], since, start)
    FIGURES["kill: jobs lost / duplicated"] = "0 / 0"


# Away ------------------------------------------------------------------------------------------

# Every namespaced kind the chart renders, and what its Jobs and Deployments make.
RELEASE_KINDS = (
    "deployments,replicasets,pods,services,endpointslices,configmaps,secrets,serviceaccounts,"
    "roles,rolebindings,networkpolicies,poddisruptionbudgets,horizontalpodautoscalers,jobs,"
    "streamschemas"
)


def test_uninstall_leaves_only_what_is_documented_to_stay(release: ClusterSettings) -> None:
    """Last: helm uninstall removes every object of the release (the generated credentials
    would stay, helm.sh/resource-policy keep; this release has none, since the data plane's
    Secrets are the user's)."""
    uninstalled = helm(release, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait")
    assert uninstalled.returncode == 0, uninstalled.stderr

    def remaining() -> list[str]:
        listed = kubectl(
            release, "-n", NAMESPACE, "get", RELEASE_KINDS, "-o", "name",
            f"--selector=app.kubernetes.io/instance={RELEASE}",
        )  # fmt: skip
        return listed.split()

    left = eventually(lambda: not remaining() or None, timeout_s=120, what="the release gone")
    assert left
    kept = kubectl(release, "-n", NAMESPACE, "get", "secrets", "-o", "name").split()
    assert sorted(kept) == ["secret/clickhouse-credentials", "secret/jobflow-postgres"]
    FIGURES["uninstall: objects left of the release"] = 0
