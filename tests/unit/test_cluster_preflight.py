"""The one-node cluster refuses, before it starts, networks that clash with this machine's."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv4Network

from local.cluster.config import ClusterSettings
from local.cluster.network import link_conflict


def test_a_link_inside_a_network_the_host_already_has_is_refused() -> None:
    # Every machine has loopback's 127.0.0.0/8, read here from the real `ip -json` listing.
    conflict = link_conflict(ClusterSettings(link=IPv4Interface("127.0.0.5/30")))
    assert conflict == "lo has 127.0.0.1, within 127.0.0.4/30"


def test_pod_and_service_networks_are_checked_too() -> None:
    assert link_conflict(ClusterSettings(pod_network=IPv4Network("127.0.0.0/16"))) is not None
    assert link_conflict(ClusterSettings(service_network=IPv4Network("127.64.0.0/10"))) is not None
