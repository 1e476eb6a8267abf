"""The operator's domain: digests, the apply Job's manifest, Job outcomes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from jobflow.operator.jobs import (
    APPLY_COMMAND,
    Phase,
    applied_condition,
    build_job,
    digest_of,
    job_name,
    outcome_of,
)

# run by make test-operator too (tests/targets.mk)
pytestmark = pytest.mark.operator

TARGET = {"type": "clickhouse", "url": "http://clickhouse:8123"}
STATEMENTS = "CREATE TABLE IF NOT EXISTS jobs (id String) ENGINE = Memory;"


def spec(**job: Any) -> dict[str, Any]:
    return {
        "target": {**TARGET, "credentialsSecret": {"name": "clickhouse-credentials"}},
        "statements": {"inline": STATEMENTS},
        "parameters": {"kafka_broker_list": "kafka:9092"},
        "job": {"image": "jobflow:1", **job},
    }


def test_the_digest_is_stable_and_covers_target_statements_and_parameters() -> None:
    base = digest_of(TARGET, STATEMENTS, {"a": "1", "b": "2"})
    assert base == digest_of(dict(reversed(TARGET.items())), STATEMENTS, {"b": "2", "a": "1"})
    assert len(base) == 64
    assert base != digest_of(
        {**TARGET, "url": "http://other:8123"}, STATEMENTS, {"a": "1", "b": "2"}
    )
    assert base != digest_of(TARGET, STATEMENTS + " ", {"a": "1", "b": "2"})
    assert base != digest_of(TARGET, STATEMENTS, {"a": "1", "b": "3"})


def test_job_names_are_deterministic_and_fit_a_label() -> None:
    digest = "0123456789abcdef" * 4
    assert job_name("clickhouse", digest) == "clickhouse-apply-0123456789"
    long_name = job_name("x" * 253, digest)
    assert len(long_name) == 63
    assert long_name.endswith("-apply-0123456789")


def test_the_job_runs_the_apply_command_with_the_resolved_statements() -> None:
    digest = digest_of(TARGET, STATEMENTS, {})
    job = build_job("clickhouse", spec(), STATEMENTS, digest)
    assert job["metadata"]["name"] == job_name("clickhouse", digest)
    assert job["metadata"]["labels"]["jobflow.dev/schema"] == "clickhouse"
    assert job["metadata"]["labels"]["jobflow.dev/digest"] == digest[:16]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == APPLY_COMMAND
    environment = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert environment["SCHEMA_TARGET"] == "clickhouse"
    assert environment["SCHEMA_URL"] == "http://clickhouse:8123"
    assert environment["SCHEMA_STATEMENTS"] == STATEMENTS
    assert orjson.loads(environment["SCHEMA_PARAMETERS"]) == {"kafka_broker_list": "kafka:9092"}
    assert environment["SCHEMA_PASSWORD"] == {
        "secretKeyRef": {"name": "clickhouse-credentials", "key": "password"}
    }
    assert environment["SCHEMA_USER"] == {
        "secretKeyRef": {"name": "clickhouse-credentials", "key": "username"}
    }


def test_the_job_pod_is_restricted() -> None:
    pod = build_job("s", spec(), STATEMENTS, "0" * 64)["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert set(pod["containers"][0]["resources"]) == {"requests", "limits"}


def test_the_schemas_job_settings_are_used() -> None:
    resources = {"limits": {"memory": "128Mi"}}
    job = build_job(
        "s",
        spec(backoffLimit=1, activeDeadlineSeconds=60, resources=resources, waitTimeoutSeconds=5),
        STATEMENTS,
        "0" * 64,
    )
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (1, 60)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == resources
    assert {"name": "SCHEMA_WAIT_TIMEOUT_S", "value": "5"} in container["env"]


def test_no_credentials_means_no_secret_references() -> None:
    no_secret = {**spec(), "target": TARGET}
    container = build_job("s", no_secret, STATEMENTS, "0" * 64)["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert not any("valueFrom" in variable for variable in container["env"])


@pytest.mark.parametrize(
    ("status", "phase", "reason"),
    [
        ({}, Phase.PENDING, "JobPending"),
        ({"active": 1}, Phase.RUNNING, "JobRunning"),
        ({"conditions": [{"type": "Complete", "status": "True"}]}, Phase.SUCCEEDED, "Applied"),
        (
            {
                "conditions": [
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
                ]
            },
            Phase.FAILED,
            "BackoffLimitExceeded",
        ),
        (
            {"active": 1, "conditions": [{"type": "Failed", "status": "False"}]},
            Phase.RUNNING,
            "JobRunning",
        ),
    ],
)
def test_job_status_maps_to_a_phase(status: dict[str, Any], phase: Phase, reason: str) -> None:
    outcome = outcome_of(status)
    assert (outcome.phase, outcome.reason) == (phase, reason)


def test_the_applied_condition_follows_the_outcome() -> None:
    failed = outcome_of({"conditions": [{"type": "Failed", "status": "True", "message": "boom"}]})
    condition = applied_condition(failed, 3, "2026-01-01T00:00:00Z")
    assert condition == {
        "type": "Applied",
        "status": "False",
        "reason": "JobFailed",
        "message": "boom",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 3,
    }
    assert applied_condition(outcome_of({}), 1, "t")["status"] == "Unknown"
