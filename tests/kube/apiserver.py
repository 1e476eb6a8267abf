"""A real one-node Kubernetes control plane on loopback, for tests: no kubelet, no scheduler.

``control_plane(workdir)`` runs etcd, kube-apiserver and kube-controller-manager, built from the
Go modules pinned in ``tools/kube`` and ``tools/etcd`` by ``tools/kube/build.sh`` (cached in
``.local/kube/bin``), much as controller-runtime's envtest does, plus the controller manager so
that ownerReferences cascade. What is real: authentication (a static admin token, ServiceAccount
tokens from the TokenRequest API), RBAC, admission, OpenAPI and CRD validation, defaulting,
server-side dry-run, the garbage collector. What is not there: the Job controller (tests write
Job status themselves; see ``complete_job_status``, ``failed_job_status`` and
``retrying_job_status``), the scheduler, kubelets, so no Pod ever runs (tests may create one and
write its status: ``failed_pod_status``).

Every process gets its own process group, dies with the Python process that started it
(``PR_SET_PDEATHSIG``) and is stopped by an ``atexit`` hook if the context manager never
exits, so a crashed test session leaves nothing running.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from kubernetes import client, config, dynamic

from tests.polling import eventually
from tests.ports import free_port, free_ports

__all__ = ["eventually"]  # re-exported: the kube tests wait with it

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tools" / "kube" / "build.sh"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
# kube-controller-manager runs these and no others (names as in --controllers). Never the Job
# controller: tests own Job status. The garbage collector cascades ownerReferences; the
# namespace controller empties and removes deleted namespaces (without it they stay
# Terminating); the serviceaccount controller makes each namespace's "default" ServiceAccount,
# which the ServiceAccount admission plugin needs before any Pod can be created.
DEFAULT_CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
)
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


def local_dir() -> Path:
    return Path(os.environ.get("LOCAL_DIR", REPO / ".local"))


@dataclass(frozen=True)
class KubeBinaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path
    helm: Path
    netpol_verdict: Path
    prometheus_operator_crds: Path
    keda_crds: Path


def build_needed() -> bool:
    """Whether ``binaries()`` has to build (a cold build takes many minutes; see the README)."""
    check = subprocess.run(  # noqa: S603
        ["/usr/bin/env", "bash", str(BUILD_SCRIPT), "--check"],
        capture_output=True,
        check=False,
    )
    return check.returncode != 0


def run_build_script(script: Path) -> None:
    """Run one of the repository's build scripts (``tools/*/``: each does nothing when what it
    makes is up to date); raise with its output when it fails."""
    run = subprocess.run(  # noqa: S603
        ["/usr/bin/env", "bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"{script.relative_to(REPO)} failed ({run.returncode}):\n{run.stdout}")


@cache
def binaries() -> KubeBinaries:
    """The control plane's binaries, built by ``tools/kube/build.sh`` when missing or stale."""
    run_build_script(BUILD_SCRIPT)
    bin_dir = local_dir() / "kube" / "bin"
    return KubeBinaries(
        etcd=bin_dir / "etcd",
        kube_apiserver=bin_dir / "kube-apiserver",
        kube_controller_manager=bin_dir / "kube-controller-manager",
        kubectl=bin_dir / "kubectl",
        helm=bin_dir / "helm",
        netpol_verdict=bin_dir / "netpol-verdict",
        prometheus_operator_crds=local_dir() / "kube" / "crds" / "prometheus-operator",
        keda_crds=local_dir() / "kube" / "crds" / "keda",
    )


@dataclass
class ControlPlane:
    """A running control plane. ``url`` serves TLS with a self-signed certificate: ``ca_file``."""

    url: str
    ca_file: Path
    admin_token: str
    admin_kubeconfig: Path
    workdir: Path
    pids: dict[str, int] = field(default_factory=dict)
    # Seconds each component took to become ready (and "total"), for the curious.
    startup_s: dict[str, float] = field(default_factory=dict)

    def kubeconfig_for_token(self, token: str, path: Path) -> Path:
        """Write a kubeconfig for this API server that authenticates with bearer ``token``."""
        return write_kubeconfig(path, self.url, self.ca_file, token)

    def log(self, name: str) -> str:
        """A component's log so far: etcd, kube-apiserver or kube-controller-manager."""
        if name not in COMPONENTS:
            raise ValueError(f"no component {name!r}; one of {', '.join(COMPONENTS)}")
        return (self.workdir / "logs" / f"{name}.log").read_text(errors="replace")

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        """One API call (status, decoded JSON body); 4xx and 5xx are returned, not raised."""
        return _request(self.url, self.ca_file, token or self.admin_token, method, path, body)


def write_kubeconfig(path: Path, server: str, ca_file: Path, token: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "jobflow-test",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": "user", "user": {"token": token}}],
        "contexts": [
            {
                "name": "jobflow-test",
                "context": {"cluster": "jobflow-test", "user": "user", "namespace": "default"},
            }
        ],
        "current-context": "jobflow-test",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# Job status, as the Job controller would write it. ---------------------------------------------


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, reason: str, message: str, now: str) -> dict[str, str]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


def complete_job_status(
    succeeded: int = 1, start_time: datetime | None = None, completion_time: datetime | None = None
) -> dict[str, Any]:
    """A ``status`` that makes a Job Complete, valid for ``patch_namespaced_job_status``.

    Since Kubernetes 1.35 (JobManagedBy GA, locked on) the API server validates every Job status
    change as if an external controller wrote it (pkg/apis/batch/validation, validateJobStatus
    and ValidateJobStatusUpdate). A Complete Job needs all of:

    - ``conditions``: ``SuccessCriteriaMet=True`` *and* ``Complete=True`` ("cannot set
      Complete=True condition without the SuccessCriteriaMet=true condition"); no
      ``Failed=True`` or ``FailureTarget=True`` beside them;
    - ``startTime`` ("startTime is required for finished job"); once set it is immutable for an
      unsuspended Job, so patch it once, or send the same value;
    - ``completionTime``, not before ``startTime``, only with ``Complete=True``, immutable once
      set;
    - ``active: 0`` (and ``ready`` <= ``active``, ``terminating`` 0, ``uncountedTerminatedPods``
      empty): a finished Job has no pods left;
    - ``succeeded`` and ``failed`` never decrease.

    The reasons are the Job controller's own: ``CompletionsReached`` on both conditions.
    """
    finished = completion_time or datetime.now(UTC)
    started = start_time or finished - timedelta(seconds=1)
    now = _timestamp(finished)
    message = "Reached expected number of succeeded pods"
    return {
        "startTime": _timestamp(started),
        "completionTime": now,
        "active": 0,
        "ready": 0,
        "terminating": 0,
        "succeeded": succeeded,
        "uncountedTerminatedPods": {},
        "conditions": [
            _condition("SuccessCriteriaMet", "CompletionsReached", message, now),
            _condition("Complete", "CompletionsReached", message, now),
        ],
    }


def failed_job_status(
    reason: str, message: str, failed: int = 1, start_time: datetime | None = None
) -> dict[str, Any]:
    """A ``status`` that makes a Job Failed with ``reason`` and ``message``.

    Validation (see ``complete_job_status``) requires of a Failed Job:

    - ``conditions``: ``FailureTarget=True`` *and* ``Failed=True`` ("cannot set Failed=True
      condition without the FailureTarget=true condition"), the Job controller gives both the
      same reason and message (``BackoffLimitExceeded``, ``DeadlineExceeded``,
      ``PodFailurePolicy``, ``MaxFailedIndexesExceeded``); no ``SuccessCriteriaMet`` or
      ``Complete`` beside them;
    - ``startTime``, immutable once set; and *no* ``completionTime`` (it is for Complete only);
    - ``active: 0`` (``ready`` <= ``active``, ``terminating`` 0, ``uncountedTerminatedPods``
      empty);
    - ``succeeded`` and ``failed`` never decrease.
    """
    now = datetime.now(UTC)
    started = start_time or now - timedelta(seconds=1)
    stamp = _timestamp(now)
    return {
        "startTime": _timestamp(started),
        "active": 0,
        "ready": 0,
        "terminating": 0,
        "failed": failed,
        "uncountedTerminatedPods": {},
        "conditions": [
            _condition("FailureTarget", reason, message, stamp),
            _condition("Failed", reason, message, stamp),
        ],
    }


def retrying_job_status(failed: int, start_time: datetime, active: int = 0) -> dict[str, Any]:
    """A ``status`` of a Job whose ``failed`` pods are fewer than its backoff limit allows: with
    ``active`` 0 it is waiting out its backoff before the next pod, and has no condition.
    ``startTime`` is immutable once set: pass the same ``start_time`` each time."""
    return {
        "startTime": _timestamp(start_time),
        "active": active,
        "ready": 0,
        "terminating": 0,
        "failed": failed,
        "uncountedTerminatedPods": {},
    }


def failed_pod_status(
    container: str, message: str, exit_code: int = 1, ended: datetime | None = None
) -> dict[str, Any]:
    """A ``status`` of a Pod whose one ``container`` ended with ``exit_code`` and termination
    message ``message`` at ``ended`` (now by default), as its kubelet would write it (reason
    ``Error``: a non-zero exit)."""
    at = _timestamp(ended or datetime.now(UTC))
    return {
        "phase": "Failed",
        "containerStatuses": [
            {
                "name": container,
                "image": "",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Error",
                        "message": message,
                        "startedAt": at,
                        "finishedAt": at,
                    }
                },
            }
        ],
    }


# Processes. -------------------------------------------------------------------------------------

_running: dict[int, subprocess.Popen[bytes]] = {}
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        # Runs in the child between fork and exec: SIGKILL it when the parent dies, however.
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)

    return preexec


def _spawn(args: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        process = subprocess.Popen(  # noqa: S603
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: signals reach all it starts
            preexec_fn=_die_with_parent(os.getpid()),
        )
    _running[process.pid] = process
    return process


def _stop(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group, then SIGKILL it after ``timeout_s``.

    Signals go to the group only while its leader is unreaped, so its id cannot be anyone else's.
    """
    try:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=timeout_s)
    finally:
        _running.pop(process.pid, None)


@atexit.register
def _stop_all() -> None:
    for process in reversed(list(_running.values())):
        _stop(process, timeout_s=5)


def _request(
    server: str, ca_file: Path | None, token: str | None, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    if context is None and server.startswith("https"):
        context = ssl._create_unverified_context()  # noqa: S323 (health probes of self-signed ports)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(  # noqa: S310
        server + path, data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:  # noqa: S310
            status, raw = int(answer.status), answer.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def _wait_until(
    what: str,
    ready: Callable[[], bool],
    processes: Sequence[tuple[str, subprocess.Popen[bytes], Path]],
    timeout_s: float = START_TIMEOUT_S,
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        for name, process, log in processes:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-6000:]
                raise RuntimeError(f"{name} exited ({process.returncode}) before {what}:\n{tail}")
        try:
            if ready():
                return
        except (OSError, ssl.SSLError):
            pass
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {n}\n{lg.read_text(errors='replace')[-3000:]}" for n, _, lg in processes
            )
            raise RuntimeError(f"not {what} after {timeout_s:.0f} s\n{logs}")
        time.sleep(0.1)


def _generate_service_account_keys(directory: Path) -> tuple[Path, Path]:
    """An RSA key pair that signs and verifies ServiceAccount tokens (openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError(
            "openssl is needed for the ServiceAccount signing key (apt-get install openssl)"
        )
    key, public = directory / "service-account.key", directory / "service-account.pub"
    if not key.exists():
        subprocess.run(  # noqa: S603
            [openssl, "genrsa", "-out", str(key), "2048"], check=True, capture_output=True
        )
        subprocess.run(  # noqa: S603
            [openssl, "rsa", "-in", str(key), "-pubout", "-out", str(public)],
            check=True,
            capture_output=True,
        )
    return key, public


@contextlib.contextmanager
def control_plane(
    workdir: Path,
    controllers: Sequence[str] = DEFAULT_CONTROLLERS,
    extra_apiserver_args: Sequence[str] = (),
) -> Iterator[ControlPlane]:
    """Run etcd, kube-apiserver and kube-controller-manager until the block exits.

    Data, certificates, keys, kubeconfigs and logs (``workdir/logs/<component>.log``) all live in
    ``workdir``. Yields once the API server's ``/readyz`` passes and the garbage collector has
    collected a probe object, so ownerReferences cascade from the first test on.
    """
    found = binaries()
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    processes: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    timings: dict[str, float] = {}

    def start(name: str, args: Sequence[str]) -> None:
        log = logs / f"{name}.log"
        processes.append((name, _spawn(args, log), log))

    try:
        # etcd: one member, all on loopback; no fsync (test data need not survive a crash).
        client_port, peer_port = free_ports(2)
        client_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        start(
            "etcd",
            [
                str(found.etcd),
                "--name=jobflow-test",
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=jobflow-test={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        _wait_until(
            "etcd is healthy",
            lambda: _request(client_url, None, None, "GET", "/health")[0] == 200,
            processes,
        )
        timings["etcd"] = time.monotonic() - started

        admin_token, kcm_token = secrets.token_hex(32), secrets.token_hex(32)
        tokens = workdir / "tokens.csv"
        tokens.touch(mode=0o600)
        tokens.write_text(
            f'{admin_token},admin,{uuid.uuid4()},"system:masters"\n'
            f"{kcm_token},system:kube-controller-manager,{uuid.uuid4()}\n"
        )
        signing_key, verifying_key = _generate_service_account_keys(workdir)
        port = free_port()
        url = f"https://127.0.0.1:{port}"
        cert_dir = workdir / "kube-apiserver-certs"
        ca_file = cert_dir / "apiserver.crt"  # self-signed, written at start-up
        start(
            "kube-apiserver",
            [
                str(found.kube_apiserver),
                f"--etcd-servers={client_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # The endpoint reconciler publishes the advertise address as the endpoint of
                # Service default/kubernetes and refuses a loopback one; nothing here needs it.
                "--endpoint-reconciler-type=none",
                f"--secure-port={port}",
                f"--cert-dir={cert_dir}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-signing-key-file={signing_key}",
                f"--service-account-key-file={verifying_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # Webhooks and aggregated APIs that name a Service are called at its endpoints'
                # addresses, not its ClusterIP, which nothing routes here.
                "--enable-aggregator-routing=true",
                "--allow-privileged=true",
                "--profiling=false",
                *extra_apiserver_args,
            ],
        )
        admin_kubeconfig = write_kubeconfig(workdir / "admin.kubeconfig", url, ca_file, admin_token)
        plane = ControlPlane(url, ca_file, admin_token, admin_kubeconfig, workdir)

        def api_ready() -> bool:
            if not ca_file.exists():
                return False
            return plane.request("GET", "/readyz")[0] == 200 and (
                plane.request("GET", "/api/v1/namespaces/default")[0] == 200
            )

        _wait_until("kube-apiserver is ready", api_ready, processes)
        timings["kube-apiserver"] = time.monotonic() - started

        kcm_port = free_port()
        kcm_kubeconfig = write_kubeconfig(workdir / "kcm.kubeconfig", url, ca_file, kcm_token)
        start(
            "kube-controller-manager",
            [
                str(found.kube_controller_manager),
                f"--kubeconfig={kcm_kubeconfig}",
                f"--controllers={','.join(controllers)}",
                # Each controller authenticates as its own ServiceAccount in kube-system (tokens
                # from the TokenRequest API), with the RBAC roles the API server bootstraps.
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={workdir / 'kube-controller-manager-certs'}",
                "--profiling=false",
            ],
        )
        kcm_url = f"https://127.0.0.1:{kcm_port}"
        _wait_until(
            "kube-controller-manager is healthy",
            lambda: _request(kcm_url, None, None, "GET", "/healthz")[0] == 200,
            processes,
        )
        if "garbage-collector-controller" in controllers or "garbagecollector" in controllers:
            _wait_for_garbage_collection(plane, processes)
        timings["kube-controller-manager"] = time.monotonic() - started
        timings["total"] = time.monotonic() - started
        plane.pids = {name: process.pid for name, process, _ in processes}
        plane.startup_s = timings
        yield plane
    finally:
        for _, process, _ in reversed(processes):
            _stop(process)


def _wait_for_garbage_collection(
    plane: ControlPlane, processes: Sequence[tuple[str, subprocess.Popen[bytes], Path]]
) -> None:
    """Delete an owner ConfigMap and wait until the garbage collector deletes its dependent."""
    base = "/api/v1/namespaces/kube-system/configmaps"
    name = f"gc-probe-{uuid.uuid4().hex[:8]}"
    status, owner = plane.request("POST", base, {"metadata": {"name": name}})
    if status != 201:
        raise RuntimeError(f"creating the garbage collector's probe: {status} {owner}")
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": name,
        "uid": owner["metadata"]["uid"],
    }
    dependent = {"metadata": {"name": f"{name}-dependent", "ownerReferences": [reference]}}
    status, answer = plane.request("POST", base, dependent)
    if status != 201:
        raise RuntimeError(f"creating the garbage collector's probe: {status} {answer}")
    plane.request("DELETE", f"{base}/{name}", {"propagationPolicy": "Background"})
    _wait_until(
        "the garbage collector works",
        lambda: plane.request("GET", f"{base}/{name}-dependent")[0] == 404,
        processes,
    )


T = TypeVar("T")


def api_client(kubeconfig: Path) -> client.ApiClient:
    """A Kubernetes API client configured from ``kubeconfig``."""
    created = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    return cast(client.ApiClient, created)


def dry_run_create(admin: client.ApiClient, manifest: dict[str, Any], namespace: str) -> None:
    """Create ``manifest`` server-side as a dry run with strict field validation.

    Raises ApiException when the API server rejects it (an unknown or duplicate field too).
    The dynamic client looks the resource up; the request is sent directly because the dynamic
    client drops the ``fieldValidation`` parameter.
    """
    resource = dynamic.DynamicClient(admin).resources.get(  # type: ignore[no-untyped-call]
        api_version=manifest["apiVersion"], kind=manifest["kind"]
    )
    path = resource.path(namespace=namespace if resource.namespaced else None)
    request = admin.param_serialize(
        method="POST",
        resource_path=path,
        query_params=[("dryRun", "All"), ("fieldValidation", "Strict")],
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
        body=manifest,
        auth_settings=["BearerToken"],
    )
    response = admin.call_api(*request)
    response.read()  # type: ignore[no-untyped-call]
    # Deserializing checks the status and raises ApiException with the server's answer.
    admin.response_deserialize(response, {"2XX": "object"})
