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
    exit_code_of,
    failure_of,
    job_name,
    newest_failed,
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
    # The apply-again annotation: a new value, a new digest; none, the digest it always was.
    assert digest_of(TARGET, STATEMENTS, {"a": "1", "b": "2"}, again="") == base
    assert digest_of(TARGET, STATEMENTS, {"a": "1", "b": "2"}, again="1") != base


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


def test_drift_and_refused_migrations_fail_the_job_at_once() -> None:
    # No retry changes either: the Job fails on the first pod that ends so (podFailurePolicy).
    job = build_job("s", spec(), STATEMENTS, "0" * 64)["spec"]
    assert job["podFailurePolicy"] == {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": "apply", "operator": "In", "values": [3, 4]},
            }
        ]
    }


def test_a_failed_apply_pod_keeps_the_end_of_its_log_as_its_termination_message() -> None:
    pod = build_job("s", spec(), STATEMENTS, "0" * 64)["spec"]["template"]["spec"]
    assert pod["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"


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
        # Between two attempts: no active pod, no condition.
        ({"active": 0, "failed": 2}, Phase.RUNNING, "JobRetrying"),
        ({"active": 1, "failed": 1}, Phase.RUNNING, "JobRetrying"),
        (
            {
                "failed": 4,
                "conditions": [
                    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"}
                ],
            },
            Phase.FAILED,
            "BackoffLimitExceeded",
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


CLICKHOUSE_REFUSAL = (
    "failed: statement 1 failed: Code: 36, e.displayText() = DB::Exception: Unknown setting "
    "kafka_skip_broken_messages, e.what() = DB::Exception"
)
BACKOFF_LIMIT = {
    "type": "Failed",
    "status": "True",
    "reason": "BackoffLimitExceeded",
    "message": "Job has reached the specified backoff limit",
}


def test_a_retrying_job_says_how_many_attempts_failed_and_why_the_last_did() -> None:
    # Regression: between attempts the schema said Pending, "the apply Job has not started yet".
    outcome = outcome_of({"active": 0, "failed": 2}, CLICKHOUSE_REFUSAL)
    assert outcome.message == f"2 attempts failed, retrying, the last one: {CLICKHOUSE_REFUSAL}"
    assert (outcome.event_reason, outcome.retrying) == ("JobRetrying", True)
    assert outcome_of({"active": 1, "failed": 1}).message == "1 attempt failed, retrying"


def test_a_failed_job_reports_its_pods_reason_under_the_jobs_own() -> None:
    # Regression: the message was only the Job controller's "reached the backoff limit".
    outcome = outcome_of({"failed": 4, "conditions": [BACKOFF_LIMIT]}, CLICKHOUSE_REFUSAL)
    assert (outcome.phase, outcome.reason) == (Phase.FAILED, "BackoffLimitExceeded")
    assert outcome.message == CLICKHOUSE_REFUSAL
    assert outcome.event_reason == "JobFailed"
    without_pod = outcome_of({"failed": 4, "conditions": [BACKOFF_LIMIT]})
    assert without_pod.message == "Job has reached the specified backoff limit"


def pod(
    created: str, phase: str = "Failed", terminated: dict[str, Any] | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if terminated is not None:
        status["containerStatuses"] = [{"name": "apply", "state": {"terminated": terminated}}]
    return {"metadata": {"creationTimestamp": created}, "status": status}


def test_the_newest_failed_pods_last_log_line_is_the_failure() -> None:
    log_tail = (
        f"applying 2 statement(s)\n[1/2] FAILED CREATE TABLE jobs: ...\n{CLICKHOUSE_REFUSAL}\n\n"
    )
    pods = [
        pod("2026-01-01T10:00:00Z", terminated={"reason": "Error", "message": "older attempt"}),
        pod("2026-01-01T10:00:30Z", terminated={"reason": "Error", "message": log_tail}),
        pod("2026-01-01T10:01:00Z", phase="Pending"),
    ]
    assert failure_of(pods) == CLICKHOUSE_REFUSAL


def test_the_newest_failed_pod_is_the_one_that_ended_last() -> None:
    # Regression: two pods made in the same second (creation times are whole seconds) were
    # ordered by chance, and the older attempt's reason was reported.
    made = "2026-01-01T10:00:00Z"
    older = pod(made, terminated={"message": "older", "finishedAt": "2026-01-01T10:00:01Z"})
    newer = pod(made, terminated={"message": "newer", "finishedAt": "2026-01-01T10:00:02Z"})
    assert newest_failed([newer, older]) is newer
    assert newest_failed([older, newer]) is newer
    assert failure_of([newer, older]) == "newer"
    # Evicted before its container ran: it ended no earlier than it was made.
    evicted = {
        "metadata": {"creationTimestamp": "2026-01-01T10:00:03Z"},
        "status": {"phase": "Failed", "reason": "Evicted"},
    }
    assert newest_failed([evicted, newer]) is evicted
    assert newest_failed([pod("2026-01-01T10:00:03Z", phase="Running")]) is None


@pytest.mark.parametrize(
    ("pods", "failure"),
    [
        ([], None),
        ([pod("t", phase="Running")], None),
        (
            [pod("t", terminated={"reason": "OOMKilled", "message": "[1/5] applied: CREATE"})],
            "OOMKilled: [1/5] applied: CREATE",
        ),
        ([pod("t", terminated={"reason": "Error", "exitCode": 2})], "Error (exit code 2)"),
        (
            [
                {
                    "metadata": {"creationTimestamp": "t"},
                    "status": {"phase": "Failed", "reason": "Evicted", "message": "low memory"},
                }
            ],
            "low memory",
        ),
    ],
    ids=["no pod", "none failed", "killed", "no message", "evicted"],
)
def test_failures_the_apply_command_did_not_explain(
    pods: list[dict[str, Any]], failure: str | None
) -> None:
    assert failure_of(pods) == failure


POD_FAILURE_POLICY = {
    "type": "Failed",
    "status": "True",
    "reason": "PodFailurePolicy",
    "message": (
        "Container apply for pod ns/p failed with exit code 3 matching FailJob rule at index 0"
    ),
}
DRIFT = "drifted: jobs: column note text not in the migrations"


def test_drift_is_its_own_phase_never_success_nor_a_failure_to_apply() -> None:
    outcome = outcome_of({"failed": 1, "conditions": [POD_FAILURE_POLICY]}, DRIFT, 3)
    assert (outcome.phase, outcome.reason, outcome.message) == (Phase.DRIFTED, "Drifted", DRIFT)
    assert outcome.event_reason == "JobDrifted"
    assert applied_condition(outcome, 1, "t")["status"] == "False"
    refused = outcome_of({"failed": 1, "conditions": [POD_FAILURE_POLICY]}, "refused: x", 4)
    assert (refused.phase, refused.reason, refused.message) == (
        Phase.FAILED,
        "Refused",
        "refused: x",
    )
    # Any other exit status is a failure to apply, under the Job's own reason.
    failed = outcome_of({"failed": 4, "conditions": [BACKOFF_LIMIT]}, CLICKHOUSE_REFUSAL, 1)
    assert (failed.phase, failed.reason) == (Phase.FAILED, "BackoffLimitExceeded")


def test_the_exit_status_is_the_newest_failed_pods_apply_containers() -> None:
    pods = [
        pod("2026-01-01T10:00:00Z", terminated={"reason": "Error", "exitCode": 1}),
        pod("2026-01-01T10:00:30Z", terminated={"reason": "Error", "exitCode": 3}),
        pod("2026-01-01T10:01:00Z", phase="Pending"),
    ]
    assert exit_code_of(pods) == 3
    assert exit_code_of([pod("t", phase="Running")]) is None
    assert exit_code_of([pod("t", terminated={"reason": "Error"})]) is None
