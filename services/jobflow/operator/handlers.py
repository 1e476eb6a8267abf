"""kopf handlers: a StreamSchema's statements (inline, or in a ConfigMap) become a Job; the
Job's outcome, its status."""

from __future__ import annotations

import datetime
import logging
from typing import Any, cast

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from jobflow.operator.jobs import (
    APPLY_AGAIN,
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
    exit_code_of,
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
@kopf.on.update(GROUP, VERSION, PLURAL, field=("metadata", "annotations", APPLY_AGAIN))
def reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    meta: kopf.Meta,
    namespace: str | None,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    """Run a Job for the schema's statements unless this very digest already has one."""
    if namespace is None:  # the resource is namespaced; kopf's types allow for cluster scope
        raise kopf.PermanentError("a StreamSchema without a namespace")
    statements = resolve_statements(dict(spec), namespace)
    patch.status["observedGeneration"] = meta["generation"]
    patch.status.update(start_job(dict(body), statements, namespace) or {})


@kopf.on.event("v1", "configmaps")
def follow_config_map(
    event: kopf.RawEvent, body: kopf.Body, name: str, namespace: str | None, **_: Any
) -> None:
    """New statements in a ConfigMap (a `helm upgrade` of the SQL alone, an edit) start the
    Job of each StreamSchema that reads them, as new inline statements do: the schema's own
    spec did not change, so no handler of its would run."""
    if event["type"] == "DELETED" or namespace is None:
        return
    data = body.get("data") or {}
    api = client.CustomObjectsApi()
    listed = cast(
        dict[str, Any], api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    )
    schemas: list[dict[str, Any]] = listed["items"]
    for schema in schemas:
        reference = schema["spec"]["statements"].get("configMapKeyRef") or {}
        if reference.get("name") != name or reference.get("key") not in data:
            continue
        status = start_job(schema, str(data[reference["key"]]), namespace)
        if status is not None:
            schema_name = schema["metadata"]["name"]
            api.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, schema_name, {"status": status}
            )


def start_job(schema: dict[str, Any], statements: str, namespace: str) -> dict[str, Any] | None:
    """Create the Job that applies ``statements`` unless the schema's status already has their
    digest; return the status that says so, None when there is nothing new."""
    spec, name = schema["spec"], schema["metadata"]["name"]
    again = (schema["metadata"].get("annotations") or {}).get(APPLY_AGAIN, "")
    digest = digest_of(dict(spec["target"]), statements, dict(spec.get("parameters", {})), again)
    if (schema.get("status") or {}).get("digest") == digest:
        return None
    job = build_job(name, dict(spec), statements, digest)
    owner = kopf.Body(
        cast(kopf.RawBody, {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, **schema})
    )
    # The pod template gets the schema's labels too (its release's): NetworkPolicies select
    # pods, not Jobs.
    kopf.adopt(job, owner=owner, nested="spec.template")
    outcome = JobOutcome(Phase.PENDING, "JobCreated", f"Job {job_name(name, digest)} created")
    event = outcome.reason
    try:
        # The client takes a plain manifest as well as its model classes.
        client.BatchV1Api().create_namespaced_job(namespace, cast(Any, job))
    except ApiException as exc:
        # Created before a restart, by a retry, or for these statements before others: the
        # same digest, one Job, whose state is the schema's again.
        if exc.status != HTTP_CONFLICT:
            raise
        existing = client.BatchV1Api().read_namespaced_job(job_name(name, digest), namespace)
        serialize = client.ApiClient().sanitize_for_serialization
        job_status = serialize(existing.status) or {}  # type: ignore[no-untyped-call]
        outcome = _outcome(job_name(name, digest), namespace, job_status)
        event = outcome.event_reason
    generation = schema["metadata"].get("generation", 0)
    failing = outcome.phase in (Phase.FAILED, Phase.DRIFTED) or outcome.retrying
    kopf.event(
        owner, type="Warning" if failing else "Normal", reason=event, message=outcome.message
    )
    return {
        "phase": outcome.phase.value,
        "digest": digest,
        "jobName": job_name(name, digest),
        "message": outcome.message,
        "conditions": [applied_condition(outcome, generation, _now())],
    }


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
    outcome = _outcome(name, namespace, dict(body.get("status", {})))
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
    failing = outcome.phase in (Phase.FAILED, Phase.DRIFTED) or outcome.retrying
    reference = kopf.Body(
        cast(kopf.RawBody, {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, **schema})
    )
    kopf.event(
        reference,
        type="Warning" if failing else "Normal",
        reason=outcome.event_reason,
        message=f"{name}: {outcome.message}",
    )


def _outcome(job: str, namespace: str, job_status: dict[str, Any]) -> JobOutcome:
    """The Job's outcome, with why its newest failed pod failed when one did: the apply
    command's last line and exit status (drift is not a failure to apply)."""
    if not job_status.get("failed"):
        return outcome_of(job_status)
    try:
        pods = client.CoreV1Api().list_namespaced_pod(
            namespace, label_selector=f"{JOB_NAME_LABEL}={job}"
        )
    except ApiException as exc:
        # The Job's own reason is still worth reporting.
        log.warning("cannot list the pods of Job %s: %s", job, exc.reason)
        return outcome_of(job_status)
    serialize = client.ApiClient().sanitize_for_serialization
    manifests = [serialize(pod) for pod in pods.items]  # type: ignore[no-untyped-call]
    return outcome_of(job_status, failure_of(manifests), exit_code_of(manifests))
