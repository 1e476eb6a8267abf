"""`up`, `down`, `status` of the one-node cluster."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from string import Template

import httpx
import yaml

from local import install
from local.cluster import data_plane, images, network, pki, release
from local.cluster.config import ClusterSettings
from local.cluster.node import PAUSE_IMAGE, Node, kube_bin
from local.config import REPO, StackSettings
from local.output import step
from local.supervisor import Supervisor

# What the node runs on, from Debian; buildah builds its images.
DEBIAN_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables", "conntrack")
IMAGE_PACKAGES = ("buildah", "mmdebstrap")
MANIFESTS = Path(__file__).resolve().parent / "manifests"


class ClusterError(RuntimeError):
    """The cluster cannot start; the message says why and what to do."""


def _status(url: str, token: str | None = None, ca: Path | None = None) -> int:
    """The HTTP status of GET ``url`` (0 when unreachable): the API server's against the
    cluster's CA; the health ports', which serve certificates of their own, unverified."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return httpx.get(
            url, headers=headers, verify=str(ca) if ca else False, timeout=3
        ).status_code
    except httpx.HTTPError:
        return 0


def kubectl(settings: ClusterSettings, *arguments: str, input_text: str | None = None) -> str:
    command = [str(kube_bin("kubectl")), f"--kubeconfig={settings.kubeconfig}", *arguments]
    done = subprocess.run(  # noqa: S603
        command, input=input_text, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(arguments)}: {done.stderr.strip()}")
    return done.stdout


class Cluster:
    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.supervisor = Supervisor(settings)

    def admin_token(self) -> str:
        rows = pki.Pki(self.settings.path("pki")).tokens.read_text().splitlines()
        return next(row.split(",")[0] for row in rows if row.split(",")[1] == "admin")

    # Checks -------------------------------------------------------------------------------------

    def preflight(self) -> None:
        """Refuse, in one line each, what would make the node fail later and obscurely."""
        if os.geteuid() != 0:
            raise ClusterError("the node needs root (network namespaces, containerd): run as root")
        if (
            not Path("/sys/fs/cgroup/memory").is_dir()
            and not Path("/sys/fs/cgroup/cgroup.controllers").exists()
        ):
            raise ClusterError("no memory cgroup under /sys/fs/cgroup: the kubelet cannot run here")
        if not self.supervisor.running() and network.exists(self.settings):
            pids = subprocess.run(  # noqa: S603
                ["ip", "netns", "pids", self.settings.netns],  # noqa: S607
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            if pids:
                raise ClusterError(
                    f"network namespace {self.settings.netns} has processes this cluster did "
                    f"not start ({', '.join(pids)}): stop them, or set CLUSTER_NETNS"
                )
        conflict = network.link_conflict(self.settings)
        if conflict:
            raise ClusterError(
                f"{conflict}: choose free networks with CLUSTER_LINK, CLUSTER_POD_NETWORK and "
                "CLUSTER_SERVICE_NETWORK"
            )
        for name in ("containerd", "runc", "nsenter", "ctr"):
            if shutil.which(name) is None:
                raise ClusterError(f"{name} is not installed (apt-get install {name})")

    def wait(self, what: str, program: str | None, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout_s
        while not ready():
            if program:
                state, _ = self.supervisor.state(program)
                if state in ("FATAL", "EXITED", "STOPPED", "BACKOFF"):
                    tail = self.supervisor.log_file(program).read_text(errors="replace")
                    last = [line for line in tail.splitlines() if line.strip()][-3:]
                    raise ClusterError(
                        f"{program} is {state}: {' | '.join(last)} "
                        f"(log: {self.supervisor.log_file(program)})"
                    )
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{what} not after {self.settings.ready_timeout_s:.0f}s"
                    + (f"; see {self.supervisor.log_file(program)}" if program else "")
                )
            time.sleep(0.5)

    # Up -----------------------------------------------------------------------------------------

    def up(self) -> None:
        started = time.monotonic()
        settings = self.settings
        settings.dir.mkdir(parents=True, exist_ok=True)
        missing = install.missing_debian_packages(DEBIAN_PACKAGES + IMAGE_PACKAGES)
        if missing:
            install.install_debian_packages(missing, settings.path("logs", "apt.log"))
        self.preflight()
        built = subprocess.run(  # noqa: S603
            ["bash", str(REPO / "tools" / "kube" / "build.sh")],  # noqa: S607
            check=False,
        )
        if built.returncode != 0:
            raise ClusterError("tools/kube/build.sh failed: the node's binaries are missing")
        install.everything(StackSettings())
        if not self.supervisor.running():
            # What a node that was not stopped left (its processes gone, their kernel objects
            # not): stale pods' addresses on the bridge would clash with new pods'.
            network.down(settings)
        network.up(settings)
        asyncio.run(data_plane.up(settings))
        keys = pki.ensure(settings)
        node = Node(settings, keys)
        programs = node.programs()
        self.supervisor.start_daemon(programs)
        token, ca, address = self.admin_token(), keys.ca, settings.node_address
        checks: dict[str, tuple[str, Callable[[], bool]]] = {
            "containerd": ("answering", lambda: self._containerd_answers(node)),
            "etcd": ("started", lambda: self.supervisor.state("etcd")[0] == "RUNNING"),
            "kube-apiserver": (
                "ready",
                lambda: _status(f"{settings.apiserver_url}/readyz", token, ca) == 200,
            ),
            "kube-controller-manager": (
                "healthy",
                lambda: _status(f"https://{address}:10257/healthz") == 200,
            ),
            "kube-scheduler": (
                "healthy",
                lambda: _status(f"https://{address}:10259/healthz") == 200,
            ),
            "kubelet": ("healthy", lambda: _status(f"http://{address}:10248/healthz") == 200),
            "kube-proxy": ("healthy", lambda: _status(f"http://{address}:10256/healthz") == 200),
        }
        for program in programs:
            began = time.monotonic()
            self.supervisor.start(program.name)
            state, check = checks[program.name]
            self.wait(f"{program.name} {state}", program.name, check)
            step(program.name, f"{state} ({time.monotonic() - began:.1f}s)")
            if program.name == "containerd":
                self.node_images()
        self.dns()
        self.wait("node Ready", None, self._node_ready)
        self.wait("CoreDNS ready", None, self._dns_ready)
        release.write_values(settings)
        step("cluster", f"up in {time.monotonic() - started:.0f}s: node {settings.node_name} Ready")
        print(
            f"\nThe cluster is up:\n  export KUBECONFIG={settings.kubeconfig}\n"
            f"  {kube_bin('kubectl')} get nodes\n"
            f"Host services pods may use listen on {settings.host_address}.\n"
        )

    def _containerd_answers(self, node: Node) -> bool:
        done = subprocess.run(  # noqa: S603
            ["ctr", "--address", str(node.containerd_socket), "version"],  # noqa: S607
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def node_images(self) -> None:
        builder = images.Builder(self.settings)
        builder.pause()
        builder.coredns()
        for image in (PAUSE_IMAGE, images.COREDNS_IMAGE):
            builder.import_into_node(image)
        step("images", "pause and coredns in the node's containerd")

    def project_images(self) -> None:
        """Build every image of the project into the node's containerd."""
        if self.supervisor.state("containerd")[0] != "RUNNING":
            raise ClusterError("the node is not running: make cluster-up first")
        builder = images.Builder(self.settings)
        started = time.monotonic()
        for component, seconds in images.build_all(builder).items():
            built = images.local_image(component)
            builder.import_into_node(built, images.service_image(component))
            step("images", f"{images.service_image(component)}: {builder.size(built)}, "
                 f"built in {seconds:.0f}s")  # fmt: skip
        step("images", f"all in the node's containerd in {time.monotonic() - started:.0f}s")

    def deploy(self) -> None:
        """The release on the cluster, as a user installs it: its namespace and Secrets, then
        ``helm upgrade --install --wait``."""
        manifests = "".join(
            "---\n" + yaml.safe_dump(item) for item in release.namespace_manifests(self.settings)
        )
        kubectl(self.settings, "apply", "--server-side", "-f", "-", input_text=manifests)
        started = time.monotonic()
        command = [
            str(kube_bin("helm")), f"--kubeconfig={self.settings.kubeconfig}", "upgrade",
            "--install", release.RELEASE, str(release.CHART),
            *release.helm_arguments(self.settings), "--wait", "--timeout=5m",
        ]  # fmt: skip
        if subprocess.run(command, check=False).returncode != 0:  # noqa: S603
            raise ClusterError("helm upgrade --install failed (its output is above)")
        step("deploy", f"release {release.RELEASE} ready in {time.monotonic() - started:.0f}s")

    def dns(self) -> None:
        manifest = Template((MANIFESTS / "coredns.yaml").read_text()).substitute(
            image=images.COREDNS_IMAGE, dns_ip=str(self.settings.dns_service_ip)
        )
        kubectl(self.settings, "apply", "--server-side", "-f", "-", input_text=manifest)

    def _node_ready(self) -> bool:
        try:
            status = kubectl(
                self.settings, "get", "node", self.settings.node_name, "-o",
                'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            )  # fmt: skip
        except ClusterError:
            return False
        return status == "True"

    def _dns_ready(self) -> bool:
        try:
            ready = kubectl(
                self.settings, "-n", "kube-system", "get", "deployment", "coredns", "-o",
                "jsonpath={.status.readyReplicas}",
            )  # fmt: skip
        except ClusterError:
            return False
        return ready.strip() == "1"

    # Down and status ----------------------------------------------------------------------------

    def down(self) -> None:
        """Stop what the cluster started (supervisord's own children only), then its network."""
        if self.supervisor.running():
            self.supervisor.shutdown()
            step("cluster", "processes stopped")
        self._stop_leftover_shims()
        self._unmount_leftovers()
        data_plane.down(self.settings)
        step("cluster", "data plane stopped")
        network.down(self.settings)
        step("cluster", f"down; state kept in {self.settings.dir}")

    def _stop_leftover_shims(self) -> None:
        """containerd's shims outlive it by design; those of this node's containerd go too,
        with their containers and the pods' network namespaces. They are found by the
        containerd address on their command line, which is this node's."""
        namespaces = stop_shims(self.settings.path("run", "containerd.sock"))
        removed = remove_network_namespaces(namespaces, keep=self.settings.netns)
        if removed:
            step("cluster", f"{len(removed)} pods' network namespaces removed")

    def _unmount_leftovers(self) -> None:
        """What the kubelet and containerd mounted under the cluster's folder (volumes,
        containers' root filesystems) and, stopped, left mounted; deepest first."""
        root = str(self.settings.dir.resolve())
        points = [
            line.split()[1].replace("\\040", " ")
            for line in Path("/proc/self/mounts").read_text().splitlines()
        ]
        ours = sorted({point for point in points if point.startswith(root + "/")}, key=len)
        for point in reversed(ours):
            subprocess.run(["umount", "--lazy", point], check=False)  # noqa: S603, S607
        if ours:
            step("cluster", f"{len(ours)} mounts the node left under its folder unmounted")

    def status(self) -> list[tuple[str, str, int]]:
        if not self.supervisor.running():
            return [("cluster", "NOT STARTED", 0)]
        names = [program.name for program in Node(self.settings, _keys(self.settings)).programs()]
        return [(name, *self.supervisor.state(name)) for name in names]


def _keys(settings: ClusterSettings) -> pki.Pki:
    return pki.Pki(settings.path("pki"))


def stop_shims(containerd_socket: Path) -> set[int]:
    """Kill the shims serving ``containerd_socket``, and first their children: each the first
    process of a container (a pod's pause among them). Killed with its shim only, a child lives
    on, adopted by init. Returns the network namespaces (their inodes) the children were in."""
    processes = _processes()
    shims = [
        pid
        for pid, _, command in processes
        if command
        and command[0].endswith(b"containerd-shim-runc-v2")
        and str(containerd_socket).encode() in command
    ]
    containers = [pid for pid, parent, _ in processes if parent in shims]
    namespaces = {
        inode for pid in containers if (inode := _inode(Path(f"/proc/{pid}/ns/net"))) is not None
    }
    for pid in containers + shims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return namespaces


def remove_network_namespaces(inodes: set[int], keep: str) -> list[str]:
    """Delete the named network namespaces (``ip netns``) that are among ``inodes``, all but
    ``keep``; their names. A pod's was made by containerd's network set-up, and the kubelet,
    stopped, no longer tears it down."""
    named = Path("/run/netns")
    removed = []
    for entry in sorted(named.iterdir()) if named.is_dir() else []:
        if entry.name != keep and _inode(entry) in inodes:
            subprocess.run(["ip", "netns", "delete", entry.name], check=False)  # noqa: S603, S607
            removed.append(entry.name)
    return removed


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _processes() -> list[tuple[int, int, list[bytes]]]:
    """Every process's id, its parent's and its command line, in one pass over /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                # The command name, in parentheses, may hold spaces: the fields after it are
                # plain.
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                command = (entry / "cmdline").read_bytes().split(b"\0")
                found.append((int(entry.name), parent, command))
    return found
