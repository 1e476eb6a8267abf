"""The operator's domain, free of Kubernetes calls: digests, Job manifests, phases."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from jobflow.schema.apply import Exit

GROUP = "jobflow.dev"
VERSION = "v1alpha1"
PLURAL = "streamschemas"
KIND = "StreamSchema"
SCHEMA_LABEL = f"{GROUP}/schema"
DIGEST_LABEL = f"{GROUP}/digest"
# A new value of this annotation of a StreamSchema runs its Job again, the statements unchanged.
# Not under GROUP/: kopf keeps its own records there and leaves such annotations out of the
# changes it reacts to.
APPLY_AGAIN = f"schema.{GROUP}/apply-again"
# Set by the Job controller on each pod of a Job.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
APPLY_COMMAND = ["python", "-m", "jobflow.schema"]
RUN_AS = 10001
DEFAULT_RESOURCES = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi"},
}
# Exit statuses of the apply command that no retry changes: the Job fails at once on them.
FINAL_EXITS = (Exit.DRIFTED, Exit.REFUSED)


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DRIFTED = "Drifted"  # applied, but the tables differ from what the migrations say


@dataclass(frozen=True)
class JobOutcome:
    phase: Phase
    reason: str  # the Applied condition's
    message: str
    retrying: bool = False  # running again after failed attempts

    @property
    def event_reason(self) -> str:
        return "JobRetrying" if self.retrying else f"Job{self.phase.value}"


def digest_of(
    target: dict[str, Any], statements: str, parameters: dict[str, str], again: str = ""
) -> str:
    """What is applied where: the same target, statements and parameters, the same digest.
    ``again``: the schema's APPLY_AGAIN annotation, a new value of which runs the same
    statements again (after drift was mended by hand, say)."""
    essence: dict[str, Any] = {"target": target, "statements": statements, "parameters": parameters}
    if again:
        essence["again"] = again
    return hashlib.sha256(orjson.dumps(essence, option=orjson.OPT_SORT_KEYS)).hexdigest()


def job_name(schema: str, digest: str) -> str:
    """Deterministic per schema and digest; at most 63 characters (it becomes a pod label)."""
    suffix = f"-apply-{digest[:10]}"
    return schema[: 63 - len(suffix)].rstrip("-.") + suffix


def labels(schema: str, digest: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "jobflow",
        "app.kubernetes.io/component": "schema-apply",
        "app.kubernetes.io/managed-by": "jobflow-operator",
        SCHEMA_LABEL: schema,
        DIGEST_LABEL: digest[:16],
    }


def _environment(spec: dict[str, Any], statements: str) -> list[dict[str, Any]]:
    target = spec["target"]
    job = spec["job"]
    environment: list[dict[str, Any]] = [
        {"name": "SCHEMA_TARGET", "value": target["type"]},
        {"name": "SCHEMA_URL", "value": target["url"]},
        {"name": "SCHEMA_STATEMENTS", "value": statements},
        {"name": "SCHEMA_PARAMETERS", "value": orjson.dumps(spec.get("parameters", {})).decode()},
        {"name": "SCHEMA_WAIT_TIMEOUT_S", "value": str(job.get("waitTimeoutSeconds", 300))},
    ]
    secret = target.get("credentialsSecret")
    if secret:
        for variable, key in (
            ("SCHEMA_USER", secret.get("userKey", "username")),
            ("SCHEMA_PASSWORD", secret.get("passwordKey", "password")),
        ):
            environment.append(
                {
                    "name": variable,
                    "valueFrom": {"secretKeyRef": {"name": secret["name"], "key": key}},
                }
            )
    return environment


def build_job(schema: str, spec: dict[str, Any], statements: str, digest: str) -> dict[str, Any]:
    """The Job that applies ``statements`` (already resolved from the spec) once."""
    job = spec["job"]
    job_labels = labels(schema, digest)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(schema, digest), "labels": job_labels},
        "spec": {
            "backoffLimit": job.get("backoffLimit", 3),
            "activeDeadlineSeconds": job.get("activeDeadlineSeconds", 900),
            # Drift and a refused migration stay as they are however often the pod runs again.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "apply",
                            "operator": "In",
                            "values": [int(code) for code in FINAL_EXITS],
                        },
                    }
                ]
            },
            "template": {
                "metadata": {"labels": dict(job_labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "apply",
                            "image": job["image"],
                            "imagePullPolicy": job.get("imagePullPolicy", "IfNotPresent"),
                            "command": APPLY_COMMAND,
                            "env": _environment(spec, statements),
                            "resources": job.get("resources") or DEFAULT_RESOURCES,
                            # A failed pod's termination message is then the end of its log,
                            # whose last line is the apply command's reason: the operator
                            # reports it (failure_of).
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def outcome_of(
    job_status: dict[str, Any], failure: str | None = None, exit_code: int | None = None
) -> JobOutcome:
    """What a Job's status says about the apply run; ``failure`` is why its newest failed pod
    failed (failure_of), which says more than the Job's own reason, and ``exit_code`` how its
    apply command ended (exit_code_of): drift is not a failure to apply."""
    if _condition(job_status, "Complete"):
        return JobOutcome(
            Phase.SUCCEEDED, "Applied", "every migration is applied and the tables are as they say"
        )
    # FailureTarget comes first, with the reason and message Failed will have: the Job is
    # failing and starts no other pod.
    failed = _condition(job_status, "Failed") or _condition(job_status, "FailureTarget")
    if failed and exit_code == Exit.DRIFTED:
        return JobOutcome(Phase.DRIFTED, "Drifted", failure or "the tables differ")
    if failed and exit_code == Exit.REFUSED:
        return JobOutcome(Phase.FAILED, "Refused", failure or "the migrations were refused")
    if failed:
        return JobOutcome(
            Phase.FAILED,
            failed.get("reason") or "JobFailed",
            failure or failed.get("message") or "the apply Job failed",
        )
    attempts_failed = int(job_status.get("failed") or 0)
    if attempts_failed:
        # Between two attempts a Job has no active pod (the controller waits out its backoff)
        # and no condition: it has started, and it is not over.
        attempts = f"{attempts_failed} attempt{'s' if attempts_failed > 1 else ''} failed"
        last = f", the last one: {failure}" if failure else ""
        return JobOutcome(
            Phase.RUNNING, "JobRetrying", f"{attempts}, retrying{last}", retrying=True
        )
    if job_status.get("active"):
        return JobOutcome(Phase.RUNNING, "JobRunning", "the apply Job is running")
    return JobOutcome(Phase.PENDING, "JobPending", "the apply Job has not started yet")


def newest_failed(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The failed pod that ended last, None when none failed.

    Ordered by when its containers finished, then by when it was made: both are in whole
    seconds, so pods made in the same second are told apart by their ends. A Job's retries
    are its back-off apart, 10 s at least.
    """
    failed = [pod for pod in pods if pod.get("status", {}).get("phase") == "Failed"]
    return max(failed, key=_ended_and_made, default=None)


def _ended_and_made(pod: dict[str, Any]) -> tuple[str, str]:
    # RFC 3339 times in UTC ("Z") sort as strings. A pod failed before any container ran
    # (evicted) ended no earlier than it was made.
    made = pod["metadata"].get("creationTimestamp") or ""
    finished = [
        ((container.get("state") or {}).get("terminated") or {}).get("finishedAt") or ""
        for container in pod["status"].get("containerStatuses") or []
    ]
    return max(finished, default="") or made, made


def failure_of(pods: list[dict[str, Any]]) -> str | None:
    """Why the newest failed pod of a Job failed, in a line: the last line of its container's
    termination message (the apply command's reason, see build_job), else how the container
    or the pod ended; None when no pod has failed."""
    newest = newest_failed(pods)
    if newest is None:
        return None
    status = newest["status"]
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if not terminated:
            continue
        lines = [line.strip() for line in (terminated.get("message") or "").splitlines()]
        last = next((line for line in reversed(lines) if line), None)
        reason = terminated.get("reason")
        if last:
            # "Error" only says that the exit code was not 0; OOMKilled and the like say more.
            return last if reason in (None, "Error") else f"{reason}: {last}"
        return f"{reason or 'terminated'} (exit code {terminated.get('exitCode')})"
    # Failed before its container ran, or evicted.
    why = status.get("message") or status.get("reason")
    return str(why) if why else None


def exit_code_of(pods: list[dict[str, Any]]) -> int | None:
    """The exit status of the apply container of a Job's newest failed pod, if it has one."""
    newest = newest_failed(pods)
    if newest is None:
        return None
    for container in newest["status"].get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        if container.get("name") == "apply" and "exitCode" in terminated:
            return int(terminated["exitCode"])
    return None


def applied_condition(outcome: JobOutcome, generation: int, now: str) -> dict[str, Any]:
    """The ``Applied`` condition for an outcome."""
    done = {Phase.SUCCEEDED: "True", Phase.FAILED: "False", Phase.DRIFTED: "False"}
    state = done.get(outcome.phase, "Unknown")
    return {
        "type": "Applied",
        "status": state,
        "reason": outcome.reason,
        "message": outcome.message,
        "lastTransitionTime": now,
        "observedGeneration": generation,
    }
