"""The node's network namespace and the veth pair that joins it to the host (iproute2).

Inside the namespace live the CNI bridge, every pod's veth, kube-proxy's iptables rules and
forwarding; the host keeps its own untouched. The host side of the pair is the address pods
use for the host's services; the node side is the API server's and the kubelet's.
"""

from __future__ import annotations

import json
import subprocess
from ipaddress import IPv4Interface
from pathlib import Path

from local.cluster.config import ClusterSettings
from local.output import step

HOST_LINK = "jobflow-host"
NODE_LINK = "jobflow-node"


def _ip(*arguments: str, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    command = ["ip", *(["-n", netns] if netns else []), *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603


def _must(*arguments: str, netns: str | None = None) -> None:
    done = _ip(*arguments, netns=netns)
    if done.returncode != 0:
        where = f" in {netns}" if netns else ""
        raise RuntimeError(f"ip {' '.join(arguments)}{where}: {done.stderr.strip()}")


def namespace_path(settings: ClusterSettings) -> Path:
    return Path("/run/netns") / settings.netns


def exists(settings: ClusterSettings) -> bool:
    return namespace_path(settings).exists()


def link_conflict(settings: ClusterSettings) -> str | None:
    """The host interface, other than the node's own link, with an address in the link's
    network or the pods' (the node would route that network away from it), if any."""
    listed = subprocess.run(
        ["ip", "-json", "-4", "address", "show"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    )
    for interface in json.loads(listed.stdout):
        if interface["ifname"] == HOST_LINK:
            continue
        for address in interface.get("addr_info", []):
            network = IPv4Interface(f"{address['local']}/{address['prefixlen']}").network
            for ours in (settings.link.network, settings.pod_network, settings.service_network):
                if network.overlaps(ours):
                    return f"{interface['ifname']} has {address['local']}, within {ours}"
    return None


def up(settings: ClusterSettings) -> None:
    """Create the namespace and the pair, if missing; idempotent."""
    if exists(settings) and _ip("link", "show", HOST_LINK).returncode == 0:
        return
    if not exists(settings):
        _must("netns", "add", settings.netns)
    if _ip("link", "show", HOST_LINK).returncode != 0:
        _must("link", "add", HOST_LINK, "type", "veth", "peer", "name", NODE_LINK)
        _must("link", "set", NODE_LINK, "netns", settings.netns)
    host = f"{settings.host_address}/{settings.link.network.prefixlen}"
    node = f"{settings.node_address}/{settings.link.network.prefixlen}"
    _must("address", "replace", host, "dev", HOST_LINK)
    _must("link", "set", HOST_LINK, "up")
    ns = settings.netns
    _must("address", "replace", node, "dev", NODE_LINK, netns=ns)
    _must("link", "set", NODE_LINK, "up", netns=ns)
    _must("link", "set", "lo", "up", netns=ns)
    # Everything that leaves the node goes to the host; pods' traffic to the host is
    # masqueraded to the node's address by the bridge plugin, so the host needs no route back.
    _must("route", "replace", "default", "via", str(settings.host_address), netns=ns)
    for key in ("net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"):
        sysctl = ["ip", "netns", "exec", ns, "sysctl", "-q", "-w", key]
        subprocess.run(sysctl, check=True)  # noqa: S603
    step("network", f"namespace {ns}: node {node}, host {host} ({HOST_LINK})")


def down(settings: ClusterSettings) -> None:
    """Delete the pair and the namespace (its bridge and rules go with it)."""
    if _ip("link", "show", HOST_LINK).returncode == 0:
        _must("link", "delete", HOST_LINK)
    if exists(settings):
        _must("netns", "delete", settings.netns)


def in_namespace(settings: ClusterSettings, command: list[str]) -> list[str]:
    """``command`` run in the node's network namespace only: unlike ``ip netns exec``,
    nsenter keeps the host's mount namespace, so the kubelet's volume mounts are containerd's."""
    return ["nsenter", f"--net={namespace_path(settings)}", "--", *command]
