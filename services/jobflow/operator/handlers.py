"""kopf handlers: a StreamSchema's statements become a Job; the Job's outcome, its status."""

from __future__ import annotations

import datetime
import logging
from typing import Any, cast

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from jobflow.operator.jobs import (
    GROUP,
    JOB_NAME_LABEL,
    KIND,
    PLURAL,
    SCHEMA_LABEL,
    VERSION,
    JobOutcome,
    Phase,
    applied_condition,
    build_job,
    digest_of,
    failure_of,
    job_name,
    outcome_of,
)

log = logging.getLogger(__name__)
HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Progress and the last handled spec live in annotations: the status is ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    # The operator works in one namespace on one known resource: no cluster-wide watching of
    # namespaces and CRDs, and so no cluster-wide permissions for it.
    settings.scanning.disabled = True
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve_statements(spec: dict[str, Any], namespace: str) -> str:
    """The statements' text, inline or read from the referenced ConfigMap key."""
    statements = spec["statements"]
    if "inline" in statements:
        return str(statements["inline"])
    reference = statements["configMapKeyRef"]
    try:
        config_map = client.CoreV1Api().read_namespaced_config_map(reference["name"], namespace)
    except ApiException as exc:
        if exc.status == HTTP_NOT_FOUND:
            raise kopf.TemporaryError(f"ConfigMap {reference['name']} not found", delay=30) from exc
        raise
    data = config_map.data or {}
    if reference["key"] not in data:
        raise kopf.TemporaryError(
            f"ConfigMap {reference['name']} has no key {reference['key']}", delay=30
        )
    return str(data[reference["key"]])


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    name: str,
    namespace: str | None,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    """Run a Job for the schema's statements unless this very digest already has one."""
    if namespace is None:  # the resource is namespaced; kopf's types allow for cluster scope
        raise kopf.PermanentError("a StreamSchema without a namespace")
    statements = resolve_statements(dict(spec), namespace)
    digest = digest_of(dict(spec["target"]), statements, dict(spec.get("parameters", {})))
    patch.status["observedGeneration"] = meta["generation"]
    if status.get("digest") == digest:
        return
    job = build_job(name, dict(spec), statements, digest)
    # The pod template gets the schema's labels too (its release's): NetworkPolicies select
    # pods, not Jobs.
    kopf.adopt(job, owner=body, nested="spec.template")
    try:
        # The client takes a plain manifest as well as its model classes.
        client.BatchV1Api().create_namespaced_job(namespace, cast(Any, job))
    except ApiException as exc:
        # Created before a restart, or by a retry of this handler: the same digest, one Job.
        if exc.status != HTTP_CONFLICT:
            raise
    outcome = JobOutcome(Phase.PENDING, "JobCreated", f"Job {job_name(name, digest)} created")
    patch.status.update(
        {
            "phase": outcome.phase.value,
            "digest": digest,
            "jobName": job_name(name, digest),
            "message": outcome.message,
            "conditions": [applied_condition(outcome, meta["generation"], _now())],
        }
    )
    kopf.info(body, reason=outcome.reason, message=outcome.message)


@kopf.on.event("batch", "v1", "jobs", labels={SCHEMA_LABEL: kopf.PRESENT})
def follow_job(
    event: kopf.RawEvent, body: kopf.Body, name: str, namespace: str | None, **_: Any
) -> None:
    """Mirror the current Job of a StreamSchema on the schema's status."""
    if event["type"] == "DELETED" or namespace is None:
        return
    schema_name = body["metadata"]["labels"][SCHEMA_LABEL]
    api = client.CustomObjectsApi()
    try:
        schema = cast(
            dict[str, Any],
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, schema_name),
        )
    except ApiException as exc:
        if exc.status == HTTP_NOT_FOUND:
            return  # the schema is gone; its Jobs go with it
        raise
    current = schema.get("status", {})
    if current.get("jobName") != name:
        return  # a Job of an earlier digest
    job_status = dict(body.get("status", {}))
    failure = _newest_failure(name, namespace) if job_status.get("failed") else None
    outcome = outcome_of(job_status, failure)
    # Each failed attempt changes the message, not the phase: one more status and Event.
    if (current.get("phase"), current.get("message")) == (outcome.phase.value, outcome.message):
        return
    generation = current.get("observedGeneration", schema["metadata"].get("generation", 0))
    api.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        schema_name,
        {
            "status": {
                "phase": outcome.phase.value,
                "message": outcome.message,
                "conditions": [applied_condition(outcome, generation, _now())],
            }
        },
    )
    failing = outcome.phase is Phase.FAILED or outcome.retrying
    reference = kopf.Body(
        cast(kopf.RawBody, {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, **schema})
    )
    kopf.event(
        reference,
        type="Warning" if failing else "Normal",
        reason=outcome.event_reason,
        message=f"{name}: {outcome.message}",
    )


def _newest_failure(job: str, namespace: str) -> str | None:
    """Why the Job's newest failed pod failed (its apply command's last line), or None."""
    try:
        pods = client.CoreV1Api().list_namespaced_pod(
            namespace, label_selector=f"{JOB_NAME_LABEL}={job}"
        )
    except ApiException as exc:
        # The Job's own reason is still worth reporting.
        log.warning("cannot list the pods of Job %s: %s", job, exc.reason)
        return None
    serialize = client.ApiClient().sanitize_for_serialization
    return failure_of([serialize(pod) for pod in pods.items])  # type: ignore[no-untyped-call]
