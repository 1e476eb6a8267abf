"""A one-node Kubernetes cluster on this machine: ``python -m local.cluster``, ``make cluster-up``.

The control plane, kubelet, kube-proxy and CoreDNS are built from the Go modules pinned in
``tools/``; containerd, runc and the CNI plugins come from Debian. The whole node lives in a
network namespace of its own, joined to the host by one veth pair, so that its bridge, its
pods' addresses and kube-proxy's rules never touch the host's network; the host reaches the
API server, and the pods reach the host's services, across that pair. Everything it writes is
under ``.local/cluster/``; supervisord keeps its processes, as it keeps the local stack's.
"""
