"""The test control plane is a real one: storage, CRDs, garbage collection, tokens, RBAC,
Job status validation and server-side dry-run, through the Kubernetes Python client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kube.apiserver import (
    ControlPlane,
    api_client,
    complete_job_status,
    eventually,
    failed_job_status,
)

GROUP = "smoke.jobflow.dev"


@pytest.fixture(scope="module")
def admin(control_plane: ControlPlane) -> client.ApiClient:
    return api_client(control_plane.admin_kubeconfig)


@pytest.fixture
def namespace(admin: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(admin)
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def job_manifest(name: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {
        "metadata": metadata,
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox:1.37", "args": ["true"]}],
                }
            },
        },
    }


def status_of(error: ApiException) -> int:
    return int(error.status)


def body_of(error: ApiException) -> str:
    return str(error.body)


def test_it_started_quickly_and_logs(control_plane: ControlPlane) -> None:
    print(f"control plane ready in {control_plane.startup_s}")
    assert control_plane.startup_s["total"] < 90
    assert "Serving securely" in control_plane.log("kube-apiserver")
    assert control_plane.request("GET", "/livez")[0] == 200
    status, version = control_plane.request("GET", "/version")
    assert status == 200
    assert version["gitVersion"].startswith("v1.")


def test_a_namespace_and_a_config_map(admin: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(admin)
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"key": "value"}}
    )
    assert core.read_namespaced_config_map("settings", namespace).data == {"key": "value"}
    assert core.read_namespace(namespace).status.phase == "Active"


def test_a_custom_resource_definition_is_served_and_validates(
    admin: client.ApiClient, namespace: str
) -> None:
    extensions = client.ApiextensionsV1Api(admin)
    plural = f"widgets{uuid.uuid4().hex[:6]}"
    crd_name = f"{plural}.{GROUP}"
    crd: dict[str, Any] = {
        "metadata": {"name": crd_name},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural[:-1], "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                },
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    extensions.create_custom_resource_definition(crd)

    def established() -> bool:
        found = extensions.read_custom_resource_definition(crd_name)
        conditions = (found.status and found.status.conditions) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    eventually(established)
    custom = client.CustomObjectsApi(admin)
    widget = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": "w"}}
    created = eventually(
        lambda: _create_when_served(custom, namespace, plural, {**widget, "spec": {"size": 3}})
    )
    assert created["spec"] == {"size": 3}
    with pytest.raises(ApiException) as invalid:
        custom.create_namespaced_custom_object(
            GROUP,
            "v1",
            namespace,
            plural,
            {**widget, "metadata": {"name": "x"}, "spec": {"size": 0}},
        )
    assert status_of(invalid.value) == 422
    assert "spec.size" in body_of(invalid.value)
    extensions.delete_custom_resource_definition(crd_name)


def _create_when_served(
    custom: client.CustomObjectsApi, namespace: str, plural: str, body: dict[str, Any]
) -> dict[str, Any] | None:
    """Established CRDs take a moment more to be served by every handler chain."""
    try:
        created = custom.create_namespaced_custom_object(GROUP, "v1", namespace, plural, body)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return cast(dict[str, Any], created)


def test_the_garbage_collector_deletes_a_job_with_its_owner(
    admin: client.ApiClient, namespace: str
) -> None:
    core, batch = client.CoreV1Api(admin), client.BatchV1Api(admin)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    batch.create_namespaced_job(namespace, job_manifest("owned", reference))
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def gone() -> bool:
        try:
            batch.read_namespaced_job("owned", namespace)
        except ApiException as error:
            return status_of(error) == 404
        return False

    eventually(gone, timeout_s=30)


def test_a_service_account_token_authenticates_and_rbac_applies(
    control_plane: ControlPlane, admin: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "robot"}})
    token = core.create_namespaced_service_account_token(
        "robot", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    robot = api_client(control_plane.kubeconfig_for_token(token, tmp_path / "robot.kubeconfig"))
    review = client.AuthenticationV1Api(robot).create_self_subject_review({})
    assert review.status.user_info.username == f"system:serviceaccount:{namespace}:robot"
    with pytest.raises(ApiException) as denied:
        client.CoreV1Api(robot).list_namespaced_config_map(namespace)
    assert status_of(denied.value) == 403

    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": namespace}],
        },
    )

    def allowed() -> bool:
        try:
            client.CoreV1Api(robot).list_namespaced_config_map(namespace)
        except ApiException as error:
            if error.status == 403:
                return False
            raise
        return True

    eventually(allowed, timeout_s=10)
    with pytest.raises(ApiException) as still_denied:
        client.CoreV1Api(robot).list_namespaced_secret(namespace)
    assert status_of(still_denied.value) == 403


def test_job_status_helpers_are_what_the_api_server_accepts(
    admin: client.ApiClient, namespace: str
) -> None:
    batch = client.BatchV1Api(admin)
    for name in ("succeeds", "fails", "half-done", "half-failed"):
        batch.create_namespaced_job(namespace, job_manifest(name))

    batch.patch_namespaced_job_status("succeeds", namespace, {"status": complete_job_status()})
    done = batch.read_namespaced_job_status("succeeds", namespace).status
    assert {(c.type, c.status) for c in done.conditions} == {
        ("SuccessCriteriaMet", "True"),
        ("Complete", "True"),
    }
    assert done.succeeded == 1
    assert done.start_time is not None
    assert done.completion_time is not None
    assert done.completion_time >= done.start_time

    failed = failed_job_status(
        "BackoffLimitExceeded", "Job has reached the specified backoff limit"
    )
    batch.patch_namespaced_job_status("fails", namespace, {"status": failed})
    conditions = batch.read_namespaced_job_status("fails", namespace).status.conditions
    assert {(c.type, c.reason) for c in conditions} == {
        ("FailureTarget", "BackoffLimitExceeded"),
        ("Failed", "BackoffLimitExceeded"),
    }

    # What the helpers guard against: a terminal condition alone is rejected.
    complete_alone = complete_job_status()
    complete_alone["conditions"] = complete_alone["conditions"][1:]
    with pytest.raises(ApiException) as rejected:
        batch.patch_namespaced_job_status("half-done", namespace, {"status": complete_alone})
    assert status_of(rejected.value) == 422
    assert "without the SuccessCriteriaMet=true condition" in body_of(rejected.value)
    failed_alone = {**failed, "conditions": failed["conditions"][1:]}
    with pytest.raises(ApiException) as rejected:
        batch.patch_namespaced_job_status("half-failed", namespace, {"status": failed_alone})
    assert status_of(rejected.value) == 422
    assert "without the FailureTarget=true condition" in body_of(rejected.value)
    no_start = {k: v for k, v in complete_job_status().items() if k != "startTime"}
    with pytest.raises(ApiException) as rejected:
        batch.patch_namespaced_job_status("half-done", namespace, {"status": no_start})
    assert "startTime is required for finished job" in body_of(rejected.value)


def test_server_side_dry_run_validates_and_persists_nothing(
    admin: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(admin), client.CoreV1Api(admin)
    deployment: dict[str, Any] = {
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.29"}]},
            },
        },
    }
    dry = apps.create_namespaced_deployment(namespace, deployment, dry_run="All")
    assert dry.spec.strategy.type == "RollingUpdate"  # defaulted by the server
    assert dry.spec.template.spec.containers[0].termination_message_path == "/dev/termination-log"
    with pytest.raises(ApiException) as absent:
        apps.read_namespaced_deployment("web", namespace)
    assert status_of(absent.value) == 404

    core.create_namespaced_config_map(namespace, {"metadata": {"name": "dry"}}, dry_run="All")
    assert (
        core.list_namespaced_config_map(namespace, field_selector="metadata.name=dry").items == []
    )

    mismatched = {
        **deployment,
        "spec": {**deployment["spec"], "selector": {"matchLabels": {"app": "x"}}},
    }
    with pytest.raises(ApiException) as invalid:
        apps.create_namespaced_deployment(namespace, mismatched, dry_run="All")
    assert status_of(invalid.value) == 422
    assert "selector` does not match template `labels`" in body_of(invalid.value)
