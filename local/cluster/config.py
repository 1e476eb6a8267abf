"""Settings of the one-node cluster (``CLUSTER_`` prefix): where it lives and its addresses."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from local.config import REPO


class ClusterSettings(BaseSettings):
    """The cluster's settings (``CLUSTER_`` prefix)."""

    model_config = SettingsConfigDict(env_prefix="CLUSTER_", extra="ignore")

    dir: Path = Field(
        default=REPO / ".local" / "cluster",
        description="Where the cluster keeps its binaries' state, images, certificates and logs.",
    )
    netns: str = Field(default="jobflow-node", description="Network namespace of the node.")
    link: IPv4Interface = Field(
        default=IPv4Interface("10.87.0.1/30"),
        description="Host side of the veth pair to the node; the node takes the next address. "
        "Host services that pods use listen here.",
    )
    pod_network: IPv4Network = Field(
        default=IPv4Network("10.88.0.0/16"), description="Pods' addresses (the CNI bridge)."
    )
    service_network: IPv4Network = Field(
        default=IPv4Network("10.96.0.0/16"), description="Services' cluster IPs."
    )
    apiserver_port: int = Field(default=6443, description="Port of the API server.")
    node_name: str = Field(default="jobflow-node", description="Name of the node.")
    ready_timeout_s: float = Field(
        default=180.0, description="How long `cluster-up` waits for each part to be ready."
    )

    @property
    def host_address(self) -> IPv4Address:
        return self.link.ip

    @property
    def node_address(self) -> IPv4Address:
        return self.link.ip + 1

    @property
    def apiserver_url(self) -> str:
        return f"https://{self.node_address}:{self.apiserver_port}"

    @property
    def kubernetes_service_ip(self) -> IPv4Address:
        return self.service_network.network_address + 1

    @property
    def dns_service_ip(self) -> IPv4Address:
        return self.service_network.network_address + 10

    @property
    def bridge_address(self) -> IPv4Interface:
        return IPv4Interface(f"{self.pod_network.network_address + 1}/{self.pod_network.prefixlen}")

    @property
    def kubeconfig(self) -> Path:
        """The cluster admin's kubeconfig (``KUBECONFIG=... kubectl``)."""
        return self.path("pki", "admin.kubeconfig")

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)
