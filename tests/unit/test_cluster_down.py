"""What ``python -m local.cluster down`` stops, on real processes standing in for a node's shims."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from local.cluster.cluster import remove_network_namespaces, stop_shims

# A process named as containerd's runc shim, for a node's socket, whose child stands for a
# container's first process (a pod's pause), in a network namespace when one is named: it
# prints the child's pid, then waits.
SHIM = 'exec -a containerd-shim-runc-v2 bash -c "$1 sleep 300 & echo \\$!; wait" shim -address "$0"'


def _shim(socket: Path, netns: str | None = None) -> tuple[subprocess.Popen[str], int]:
    inside = f"ip netns exec {netns}" if netns else ""
    shim = subprocess.Popen(  # noqa: S603
        ["/bin/bash", "-c", SHIM, str(socket), inside], stdout=subprocess.PIPE, text=True
    )
    assert shim.stdout is not None
    return shim, int(shim.stdout.readline())


def _gone(pid: int, timeout_s: float = 10) -> bool:
    """Whether ``pid`` ended (a zombie waiting for its parent counts as ended)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_a_shims_containers_are_stopped_with_it(tmp_path: Path) -> None:
    # Regression: only the shims were killed; a pod's pause lived on, adopted by init.
    shim, container = _shim(tmp_path / "containerd.sock")
    try:
        stop_shims(tmp_path / "containerd.sock")
        assert shim.wait(timeout=10) == -9
        assert _gone(container), "the container's process outlived its shim"
    finally:
        shim.kill()
        subprocess.run(["kill", "-9", str(container)], check=False, capture_output=True)  # noqa: S603, S607


def test_another_nodes_shims_are_left_alone(tmp_path: Path) -> None:
    shim, container = _shim(tmp_path / "other.sock")
    try:
        stop_shims(tmp_path / "containerd.sock")
        assert shim.poll() is None
        assert not _gone(container, timeout_s=0.5)
    finally:
        shim.kill()
        subprocess.run(["kill", "-9", str(container)], check=False, capture_output=True)  # noqa: S603, S607


@pytest.mark.skipif(os.geteuid() != 0, reason="making a network namespace needs root")
def test_the_pods_network_namespaces_go_with_them(tmp_path: Path) -> None:
    # Regression: a pod's namespace (cni-...) stayed in /run/netns after the node was down.
    pod, node = f"test-pod-{uuid.uuid4().hex[:8]}", f"test-node-{uuid.uuid4().hex[:8]}"
    for name in (pod, node):
        subprocess.run(["ip", "netns", "add", name], check=True)  # noqa: S603, S607
    shims = [_shim(tmp_path / "containerd.sock", name) for name in (pod, node)]
    try:
        namespaces = stop_shims(tmp_path / "containerd.sock")
        assert remove_network_namespaces(namespaces, keep=node) == [pod]
        assert not (Path("/run/netns") / pod).exists()
        assert (Path("/run/netns") / node).exists(), "the node's own is network.down's to remove"
    finally:
        for shim, container in shims:
            shim.kill()
            subprocess.run(["kill", "-9", str(container)], check=False, capture_output=True)  # noqa: S603, S607
        for name in (pod, node):
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)  # noqa: S603, S607
