"""The operator against a real kube-apiserver (with etcd and the garbage collector).

The operator runs as its own process, authenticated as its ServiceAccount with exactly the
Role the chart grants it (charts/jobflow/files/operator/rbac-rules.yaml), so every call it
makes passes the API server's own authorization. No kubelet runs: tests set Job status
themselves, as the Job controller would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from local.config import CONTRACTS, REPO

from jobflow.operator.jobs import (
    APPLY_AGAIN,
    GROUP,
    JOB_NAME_LABEL,
    PLURAL,
    VERSION,
    digest_of,
    job_name,
)
from jobflow.schema.apply import Exit
from tests.kube.apiserver import (
    ControlPlane,
    api_client,
    complete_job_status,
    eventually,
    failed_job_status,
    failed_pod_status,
    retrying_job_status,
)
from tests.kube.chart import CHART, helm
from tests.ports import free_port

STATEMENTS = "CREATE TABLE IF NOT EXISTS t (a String) ENGINE = Memory;"
RELEASE_LABELS = {
    "app.kubernetes.io/name": "jobflow",
    "app.kubernetes.io/instance": "release",
    "app.kubernetes.io/component": "schema",
}


@dataclass
class Cluster:
    namespace: str
    core: client.CoreV1Api
    batch: client.BatchV1Api
    custom: client.CustomObjectsApi
    operator: subprocess.Popen[bytes]
    kubeconfig: Path
    start_operator: Callable[[], subprocess.Popen[bytes]]
    serializer: client.ApiClient

    def schema(self, name: str) -> dict[str, Any]:
        found = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return cast(dict[str, Any], found)

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.schema(name).get("status", {}))

    def jobs(self, schema: str) -> list[dict[str, Any]]:
        """The schema's Jobs, as plain manifests."""
        selector = f"{GROUP}/schema={schema}"
        found = self.batch.list_namespaced_job(self.namespace, label_selector=selector).items
        serialize = self.serializer.sanitize_for_serialization
        return [cast(dict[str, Any], serialize(job)) for job in found]  # type: ignore[no-untyped-call]

    def create_schema(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "StreamSchema",
            "metadata": {"name": name, "labels": RELEASE_LABELS},
            "spec": spec,
        }
        created = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )
        return cast(dict[str, Any], created)

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def events_for(self, name: str) -> list[str]:
        events = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return [f"{event.type} {event.reason}" for event in events]

    def event_messages(self, name: str, reason: str) -> list[str]:
        events = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name},reason={reason}"
        ).items
        return [str(event.message) for event in events]


def spec(statements: str = STATEMENTS, image: str = "jobflow:test") -> dict[str, Any]:
    return {
        "target": {"type": "clickhouse", "url": "http://clickhouse:8123"},
        "statements": {"inline": statements},
        "job": {"image": image},
    }


@pytest.fixture
def cluster(
    control_plane: ControlPlane, jobflow_crds: list[str], tmp_path: Path
) -> Iterator[Cluster]:
    """A namespace with the operator running in it as its ServiceAccount."""
    admin = api_client(control_plane.admin_kubeconfig)
    core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    namespace = f"jobflow-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "jobflow-operator"}})
    rules = yaml.safe_load((CONTRACTS / "operator" / "rbac-rules.yaml").read_text())["rules"]
    rbac.create_namespaced_role(
        namespace, {"metadata": {"name": "jobflow-operator"}, "rules": rules}
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "jobflow-operator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "jobflow-operator",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "jobflow-operator", "namespace": namespace}
            ],
        },
    )
    token = core.create_namespaced_service_account_token(
        "jobflow-operator", namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    kubeconfig = control_plane.kubeconfig_for_token(token, tmp_path / "operator.kubeconfig")
    port = free_port()

    def start_operator() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "jobflow", "operator"],
            env={
                **os.environ,
                "KUBECONFIG": str(kubeconfig),
                "OPERATOR_NAMESPACE": namespace,
                "OPERATOR_LIVENESS_HOST": "127.0.0.1",
                "OPERATOR_LIVENESS_PORT": str(port),
            },
            cwd=REPO,
            stdout=(tmp_path / "operator.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        import httpx

        def live() -> bool:
            assert process.poll() is None, (tmp_path / "operator.log").read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        eventually(live)
        return process

    state = Cluster(
        namespace,
        core,
        client.BatchV1Api(admin),
        client.CustomObjectsApi(admin),
        start_operator(),
        kubeconfig,
        start_operator,
        admin,
    )
    yield state
    state.operator.terminate()
    state.operator.wait(timeout=30)
    core.delete_namespace(namespace)


def set_job_status(cluster: Cluster, name: str, status: dict[str, Any]) -> None:
    cluster.batch.patch_namespaced_job_status(name, cluster.namespace, {"status": status})


def test_a_new_schema_gets_one_owned_job_and_a_pending_status(cluster: Cluster) -> None:
    created = cluster.create_schema("clickhouse", spec())
    digest = digest_of(spec()["target"], STATEMENTS, {})
    (job,) = eventually(lambda: cluster.jobs("clickhouse"))
    assert job["metadata"]["name"] == job_name("clickhouse", digest)
    (owner,) = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "StreamSchema",
        "clickhouse",
        created["metadata"]["uid"],
    )
    assert owner["controller"] is True
    assert owner["blockOwnerDeletion"] is True
    # The pod carries its release's labels, by which the chart's NetworkPolicies select it; the
    # Job's own labels win where both have a key.
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/instance"] == RELEASE_LABELS["app.kubernetes.io/instance"]
    assert pod_labels["app.kubernetes.io/component"] == "schema-apply"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "jobflow:test"
    assert {"name": "SCHEMA_STATEMENTS", "value": STATEMENTS} in container["env"]
    status = eventually(
        lambda: cluster.status("clickhouse").get("phase") and cluster.status("clickhouse")
    )
    assert status["phase"] == "Pending"
    assert status["digest"] == digest
    assert status["jobName"] == job["metadata"]["name"]
    assert status["observedGeneration"] == 1
    assert status["conditions"][0]["type"] == "Applied"
    assert "Normal JobCreated" in eventually(lambda: cluster.events_for("clickhouse"))


def test_the_status_follows_the_job_to_success(cluster: Cluster) -> None:
    cluster.create_schema("ksqldb", spec())
    (job,) = eventually(lambda: cluster.jobs("ksqldb"))
    set_job_status(cluster, job["metadata"]["name"], complete_job_status())
    eventually(lambda: cluster.status("ksqldb").get("phase") == "Succeeded")
    condition = cluster.status("ksqldb")["conditions"][0]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Applied",
        "True",
        "Applied",
    )
    assert "Normal JobSucceeded" in eventually(lambda: cluster.events_for("ksqldb"))


# The end of a failed apply pod's log, its termination message (FallbackToLogsOnError).
CLICKHOUSE_REFUSAL = (
    "failed: statement 1 failed: Code: 36, e.displayText() = DB::Exception: Unknown setting "
    "kafka_skip_broken_messages, e.what() = DB::Exception"
)
APPLY_LOG_TAIL = (
    "applying 1 statement(s) to clickhouse at http://clickhouse:8123\n"
    "[1/1] FAILED CREATE TABLE IF NOT EXISTS t: Code: 36, ...\n"
    f"{CLICKHOUSE_REFUSAL}\n"
)


def fail_a_pod(
    cluster: Cluster,
    job: dict[str, Any],
    message: str,
    exit_code: int = 1,
    ended: datetime | None = None,
) -> None:
    """What the Job controller and a kubelet leave of a failed attempt: a pod of ``job`` (from
    its template, with the controller's label) whose apply container ended with ``message``
    and ``exit_code`` at ``ended`` (now by default)."""
    template = job["spec"]["template"]
    name = f"{job['metadata']['name']}-{uuid.uuid4().hex[:5]}"
    labels = {**template["metadata"]["labels"], JOB_NAME_LABEL: job["metadata"]["name"]}
    cluster.core.create_namespaced_pod(
        cluster.namespace,
        {"metadata": {"name": name, "labels": labels}, "spec": template["spec"]},
    )
    cluster.core.patch_namespaced_pod_status(
        name, cluster.namespace, {"status": failed_pod_status("apply", message, exit_code, ended)}
    )


def test_a_retrying_job_makes_a_running_schema_that_counts_the_failed_attempts(
    cluster: Cluster,
) -> None:
    # Regression: between two attempts (no active pod, no condition) the schema said Pending,
    # "the apply Job has not started yet".
    cluster.create_schema("retrying", spec())
    (job,) = eventually(lambda: cluster.jobs("retrying"))
    started = datetime.now(UTC)
    fail_a_pod(cluster, job, APPLY_LOG_TAIL)
    set_job_status(cluster, job["metadata"]["name"], retrying_job_status(1, started))
    expected = f"1 attempt failed, retrying, the last one: {CLICKHOUSE_REFUSAL}"
    eventually(lambda: cluster.status("retrying").get("message") == expected)
    status = cluster.status("retrying")
    assert status["phase"] == "Running"
    assert status["conditions"][0]["reason"] == "JobRetrying"
    assert "Warning JobRetrying" in eventually(lambda: cluster.events_for("retrying"))
    # Retries are the Job's back-off apart (10 s at least), so this pod ends 10 s after the
    # first; it may be made in the same second, and is the newest by when it ended.
    fail_a_pod(
        cluster,
        job,
        "failed: statement 1 failed: timed out",
        ended=datetime.now(UTC) + timedelta(seconds=10),
    )
    set_job_status(cluster, job["metadata"]["name"], retrying_job_status(2, started))
    eventually(
        lambda: (
            cluster.status("retrying").get("message")
            == "2 attempts failed, retrying, the last one: failed: statement 1 failed: timed out"
        )
    )


def test_a_failed_job_makes_a_failed_schema_with_its_pods_reason(cluster: Cluster) -> None:
    # Regression: the message was only the Job controller's "Job has reached the specified
    # backoff limit", and why the statement failed was in the pod's log alone.
    cluster.create_schema("broken", spec())
    (job,) = eventually(lambda: cluster.jobs("broken"))
    fail_a_pod(cluster, job, APPLY_LOG_TAIL)
    set_job_status(
        cluster,
        job["metadata"]["name"],
        failed_job_status("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
    )
    eventually(lambda: cluster.status("broken").get("phase") == "Failed")
    status = cluster.status("broken")
    assert status["message"] == CLICKHOUSE_REFUSAL
    assert status["conditions"][0]["reason"] == "BackoffLimitExceeded"
    assert status["conditions"][0]["message"] == CLICKHOUSE_REFUSAL
    (event,) = eventually(lambda: cluster.event_messages("broken", "JobFailed"))
    assert event == f"{job['metadata']['name']}: {CLICKHOUSE_REFUSAL}"


# What a drifted store's apply pod ends its log with (python -m jobflow.schema, exit status 3).
DRIFT = (
    "drifted: jobs: column note text not in the migrations; jobs: column finish_date bigint missing"
)


@pytest.mark.parametrize(
    ("exit_code", "last_line", "phase", "reason"),
    [
        (Exit.DRIFTED, DRIFT, "Drifted", "Drifted"),
        (Exit.REFUSED, "refused: 0001_jobs changed since it was applied", "Failed", "Refused"),
    ],
    ids=["drifted", "refused"],
)
def test_an_apply_that_finds_drift_or_refuses_never_makes_a_succeeded_schema(
    cluster: Cluster, exit_code: int, last_line: str, phase: str, reason: str
) -> None:
    cluster.create_schema("checked", spec())
    (job,) = eventually(lambda: cluster.jobs("checked"))
    # The API server took the Job with its rule: these exit statuses fail it at once, no retry.
    (rule,) = job["spec"]["podFailurePolicy"]["rules"]
    assert rule == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "apply", "operator": "In", "values": [3, 4]},
    }
    fail_a_pod(cluster, job, f"0001_jobs: in place\n{last_line}\n", exit_code=exit_code)
    controller_message = (
        f"Container apply for pod {cluster.namespace}/x failed with exit code {exit_code} "
        "matching FailJob rule at index 0"
    )
    set_job_status(
        cluster, job["metadata"]["name"], failed_job_status("PodFailurePolicy", controller_message)
    )
    eventually(lambda: cluster.status("checked").get("phase") == phase)
    status = cluster.status("checked")
    assert status["message"] == last_line
    condition = status["conditions"][0]
    assert (condition["status"], condition["reason"], condition["message"]) == (
        "False",
        reason,
        last_line,
    )
    (event,) = eventually(lambda: cluster.event_messages("checked", f"Job{phase}"))
    assert event == f"{job['metadata']['name']}: {last_line}"
    assert f"Warning Job{phase}" in cluster.events_for("checked")

    # Mended by hand, the same statements run again on the schema's word.
    cluster.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        cluster.namespace,
        PLURAL,
        "checked",
        {"metadata": {"annotations": {APPLY_AGAIN: "1"}}},
    )
    again = job_name("checked", digest_of(spec()["target"], STATEMENTS, {}, again="1"))
    eventually(lambda: cluster.status("checked").get("jobName") == again)
    assert cluster.status("checked")["phase"] == "Pending"
    assert len(cluster.jobs("checked")) == 2


def chart_schema(chart: Path, namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chart's schema ConfigMap and its postgres StreamSchema, as ``helm template`` renders
    them for release ``jobflow`` from the chart at ``chart``."""
    result = helm(
        "template",
        "jobflow",
        str(chart),
        "--namespace",
        namespace,
        "--show-only",
        "templates/schemas.yaml",
    )
    assert result.returncode == 0, result.stderr
    objects = [document for document in yaml.safe_load_all(result.stdout) if document]
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    (schema,) = [
        o
        for o in objects
        if o["kind"] == "StreamSchema" and o["spec"]["target"]["type"] == "postgres"
    ]
    return config_map, schema


def test_new_migrations_in_the_config_map_alone_start_a_new_job_without_a_restart(
    cluster: Cluster, tmp_path: Path
) -> None:
    """What `helm upgrade` does when only files/<store>/migrations/ changed: the chart's
    ConfigMap changes, its StreamSchema does not; the running operator starts the new Job."""
    config_map, schema = chart_schema(CHART, cluster.namespace)
    name = schema["metadata"]["name"]
    cluster.core.create_namespaced_config_map(cluster.namespace, config_map)
    cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, cluster.namespace, PLURAL, schema
    )
    (first,) = eventually(lambda: cluster.jobs(name))
    operator = cluster.operator.pid

    # Another store's statements change: not this schema's, no Job.
    others = {**config_map["data"], "ksqldb.sql": config_map["data"]["ksqldb.sql"] + "-- edited\n"}
    cluster.core.patch_namespaced_config_map(
        config_map["metadata"]["name"], cluster.namespace, {"data": others}
    )
    time.sleep(3)  # give the operator time to (not) act
    assert len(cluster.jobs(name)) == 1

    # A new migration file in a copy of the chart: only the ConfigMap renders differently.
    chart = tmp_path / "jobflow"
    shutil.copytree(CHART, chart)
    added = "ALTER TABLE jobs ADD COLUMN priority integer;\n"
    (chart / "files" / "postgres" / "migrations" / "0002_priority.sql").write_text(added)
    upgraded_map, upgraded_schema = chart_schema(chart, cluster.namespace)
    assert upgraded_schema == schema
    assert upgraded_map["data"]["postgres.sql"].endswith(
        f"-- migration: 0002_priority.sql\n{added}"
    )
    cluster.core.replace_namespaced_config_map(
        config_map["metadata"]["name"], cluster.namespace, upgraded_map
    )

    jobs = eventually(lambda: cluster.jobs(name) if len(cluster.jobs(name)) == 2 else None)
    (second,) = [job for job in jobs if job["metadata"]["name"] != first["metadata"]["name"]]
    variables = {
        e["name"]: e.get("value")
        for e in second["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert variables["SCHEMA_STATEMENTS"] == upgraded_map["data"]["postgres.sql"]
    assert variables["SCHEMA_TARGET"] == "postgres"
    eventually(lambda: cluster.status(name).get("jobName") == second["metadata"]["name"])
    assert cluster.status(name)["observedGeneration"] == 1  # the schema itself never changed
    assert cluster.operator.pid == operator, "the same operator process, never restarted"
    assert cluster.operator.poll() is None


def test_new_statements_make_a_new_job_and_other_changes_do_not(cluster: Cluster) -> None:
    cluster.create_schema("evolving", spec())
    eventually(lambda: cluster.jobs("evolving"))
    cluster.patch_spec("evolving", {"job": {"image": "jobflow:newer"}})
    eventually(lambda: cluster.status("evolving").get("observedGeneration") == 2)
    assert len(cluster.jobs("evolving")) == 1
    changed = STATEMENTS.replace("t (", "u (")
    cluster.patch_spec("evolving", {"statements": {"inline": changed}})
    jobs = eventually(
        lambda: (
            [j for j in cluster.jobs("evolving")] if len(cluster.jobs("evolving")) == 2 else None
        )
    )
    newest = job_name("evolving", digest_of(spec()["target"], changed, {}))
    assert newest in {job["metadata"]["name"] for job in jobs}
    eventually(lambda: cluster.status("evolving").get("jobName") == newest)


def test_a_restarted_operator_makes_no_second_job(cluster: Cluster) -> None:
    cluster.create_schema("steady", spec())
    eventually(lambda: cluster.status("steady").get("jobName"))
    cluster.operator.terminate()
    cluster.operator.wait(timeout=30)
    cluster.operator = cluster.start_operator()
    time.sleep(3)  # give the resumed handlers time to (not) act
    assert len(cluster.jobs("steady")) == 1


def test_statements_from_a_config_map(cluster: Cluster) -> None:
    cluster.core.create_namespaced_config_map(
        cluster.namespace, {"metadata": {"name": "schema"}, "data": {"clickhouse.sql": STATEMENTS}}
    )
    cluster.create_schema(
        "from-map",
        {**spec(), "statements": {"configMapKeyRef": {"name": "schema", "key": "clickhouse.sql"}}},
    )
    (job,) = eventually(lambda: cluster.jobs("from-map"))
    variables = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert variables["SCHEMA_STATEMENTS"] == STATEMENTS


def test_deleting_the_schema_deletes_its_jobs(cluster: Cluster) -> None:
    cluster.create_schema("short-lived", spec())
    eventually(lambda: cluster.jobs("short-lived"))
    cluster.custom.delete_namespaced_custom_object(
        GROUP, VERSION, cluster.namespace, PLURAL, "short-lived", propagation_policy="Background"
    )
    eventually(lambda: not cluster.jobs("short-lived"), timeout_s=60)


def test_the_api_server_rejects_an_invalid_schema(cluster: Cluster) -> None:
    both = {
        **spec(),
        "statements": {"inline": STATEMENTS, "configMapKeyRef": {"name": "a", "key": "b"}},
    }
    with pytest.raises(ApiException) as rejected:
        cluster.create_schema("invalid", both)
    assert rejected.value.status == 422
    assert "set exactly one of statements.inline and statements.configMapKeyRef" in str(
        rejected.value.body
    )
    with pytest.raises(ApiException) as unknown_target:
        cluster.create_schema("invalid", {**spec(), "target": {"type": "mysql", "url": "http://x"}})
    assert 'Unsupported value: "mysql"' in json.loads(str(unknown_target.value.body))["message"]


def test_the_operators_role_allows_no_more_than_it_needs(
    control_plane: ControlPlane, cluster: Cluster
) -> None:
    operator = api_client(cluster.kubeconfig)
    core, batch = client.CoreV1Api(operator), client.BatchV1Api(operator)
    calls: tuple[Callable[[], object], ...] = (
        lambda: core.list_namespaced_secret(cluster.namespace),
        lambda: batch.delete_collection_namespaced_job(cluster.namespace),
        # ConfigMaps: read and watched (new statements in one start a Job), never written.
        lambda: core.delete_namespaced_config_map("any", cluster.namespace),
        lambda: core.list_namespaced_config_map("default"),
        lambda: batch.list_namespaced_job("default"),
        # Pods: listed for their status only, here.
        lambda: core.read_namespaced_pod_log("any", cluster.namespace),
        lambda: core.read_namespaced_pod("any", cluster.namespace),
        lambda: core.list_namespaced_pod("default"),
    )
    for forbidden in calls:
        with pytest.raises(ApiException) as denied:
            forbidden()
        assert denied.value.status == 403
