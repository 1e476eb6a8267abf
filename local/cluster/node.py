"""The node's processes and their configuration: containerd, etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kubelet and kube-proxy, in start order.

Each runs in the node's network namespace under the cluster's own supervisord. CoreDNS runs as
a Deployment (``manifests/coredns.yaml``), like on any cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from local.cluster.config import ClusterSettings
from local.cluster.network import in_namespace
from local.cluster.pki import Pki
from local.config import StackSettings
from local.supervisor import Program

RUNC = "/usr/sbin/runc"
CNI_PLUGINS = "/usr/lib/cni"
# The sandbox image is built here (images.py): nothing is ever pulled.
PAUSE_IMAGE = "localhost/jobflow-pause:3.10"
KUBELET_PORT = 10250


def kube_bin(name: str) -> Path:
    """A binary built by tools/kube/build.sh."""
    return StackSettings().path("kube", "bin", name)


@dataclass(frozen=True)
class Node:
    settings: ClusterSettings
    pki: Pki

    def path(self, *parts: str) -> Path:
        return self.settings.path(*parts)

    @property
    def containerd_socket(self) -> Path:
        return self.path("run", "containerd.sock")

    @property
    def address(self) -> str:
        return str(self.settings.node_address)

    def programs(self) -> list[Program]:
        return [
            self._containerd(),
            self._etcd(),
            self._apiserver(),
            self._controller_manager(),
            self._scheduler(),
            self._kubelet(),
            self._kube_proxy(),
        ]

    def _program(self, name: str, command: list[str], stop_wait_s: int = 30) -> Program:
        return Program(
            name=name, command=in_namespace(self.settings, command), stop_wait_s=stop_wait_s
        )

    # containerd ---------------------------------------------------------------------------------

    def write_containerd_config(self) -> Path:
        config = self.path("conf", "containerd.toml")
        config.parent.mkdir(parents=True, exist_ok=True)
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config.write_text(
            "version = 2\n"
            f'root = "{self.path("containerd", "root")}"\n'
            f'state = "{self.path("containerd", "state")}"\n'
            f'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", '
            '"io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", '
            '"io.containerd.snapshotter.v1.aufs"]\n'
            "[grpc]\n"
            f'  address = "{self.containerd_socket}"\n'
            "[ttrpc]\n"
            f'  address = "{self.path("run", "containerd-ttrpc.sock")}"\n'
            '[plugins."io.containerd.internal.v1.opt"]\n'
            f'  path = "{self.path("containerd", "opt")}"\n'
            f"[{cri}]\n"
            f'  sandbox_image = "{PAUSE_IMAGE}"\n'
            # This machine withholds CAP_SYS_RESOURCE: lowering a container's oom_score_adj
            # below containerd's own is refused (runc says only "can't get final child's PID").
            "  restrict_oom_score_adj = true\n"
            f"[{cri}.containerd]\n"
            '  snapshotter = "overlayfs"\n'
            '  default_runtime_name = "runc"\n'
            f"[{cri}.containerd.runtimes.runc]\n"
            '  runtime_type = "io.containerd.runc.v2"\n'
            f"[{cri}.containerd.runtimes.runc.options]\n"
            f'  BinaryName = "{RUNC}"\n'
            # The kubelet's driver: this machine mounts cgroup v1 without systemd.
            "  SystemdCgroup = false\n"
            f"[{cri}.cni]\n"
            f'  bin_dir = "{CNI_PLUGINS}"\n'
            f'  conf_dir = "{self.path("conf", "cni")}"\n'
        )
        return config

    def write_cni_config(self) -> None:
        network = self.settings.pod_network
        conflist = {
            "cniVersion": "1.0.0",
            "name": "jobflow",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "jobflow0",
                    "isGateway": True,
                    # Pods' traffic that leaves the node (to the host's services) goes out as
                    # the node's address, which the host reaches without a route of its own.
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(network)}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.path("cni", "ipam")),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        folder = self.path("conf", "cni")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "10-jobflow.conflist").write_text(json.dumps(conflist, indent=2) + "\n")

    def _containerd(self) -> Program:
        config = self.write_containerd_config()
        self.write_cni_config()
        return self._program("containerd", ["containerd", "--config", str(config)])

    # control plane ------------------------------------------------------------------------------

    def _etcd(self) -> Program:
        # Loopback of the node's namespace only: no pod can reach it.
        client, peer = "http://127.0.0.1:2379", "http://127.0.0.1:2380"
        return self._program(
            "etcd",
            [
                str(kube_bin("etcd")),
                "--name=jobflow-node",
                f"--data-dir={self.path('etcd')}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=jobflow-node={peer}",
                "--log-level=warn",
            ],
        )

    def _apiserver(self) -> Program:
        pki, settings = self.pki, self.settings
        return self._program(
            "kube-apiserver",
            [
                str(kube_bin("kube-apiserver")),
                "--etcd-servers=http://127.0.0.1:2379",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={settings.apiserver_port}",
                f"--tls-cert-file={pki.cert('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.ca}",
                f"--token-auth-file={pki.tokens}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
                f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
                f"--kubelet-certificate-authority={pki.ca}",
                "--kubelet-preferred-address-types=InternalIP",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-signing-key-file={pki.key('service-account')}",
                f"--service-account-key-file={pki.folder / 'service-account.pub'}",
                f"--service-cluster-ip-range={settings.service_network}",
                "--profiling=false",
            ],
        )

    def _controller_manager(self) -> Program:
        pki = self.pki
        return self._program(
            "kube-controller-manager",
            [
                str(kube_bin("kube-controller-manager")),
                f"--kubeconfig={pki.kubeconfig('kube-controller-manager')}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.key('service-account')}",
                # Published to every namespace as kube-root-ca.crt, which pods' projected
                # ServiceAccount volumes need.
                f"--root-ca-file={pki.ca}",
                f"--cluster-signing-cert-file={pki.ca}",
                f"--cluster-signing-key-file={pki.key('ca')}",
                f"--service-cluster-ip-range={self.settings.service_network}",
                "--leader-elect=false",
                f"--bind-address={self.address}",
                f"--cert-dir={self.path('kube-controller-manager')}",
                "--profiling=false",
            ],
        )

    def _scheduler(self) -> Program:
        return self._program(
            "kube-scheduler",
            [
                str(kube_bin("kube-scheduler")),
                f"--kubeconfig={self.pki.kubeconfig('kube-scheduler')}",
                f"--authentication-kubeconfig={self.pki.kubeconfig('kube-scheduler')}",
                f"--authorization-kubeconfig={self.pki.kubeconfig('kube-scheduler')}",
                "--leader-elect=false",
                f"--bind-address={self.address}",
                f"--cert-dir={self.path('kube-scheduler')}",
                "--profiling=false",
            ],
        )

    # node ---------------------------------------------------------------------------------------

    def write_kubelet_config(self) -> Path:
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine mounts cgroup v1 (hybrid), without systemd.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": self.address,
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": self.address,
            "healthzPort": 10248,
            "tlsCertFile": str(self.pki.cert("kubelet")),
            "tlsPrivateKeyFile": str(self.pki.key("kubelet")),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.pki.ca)},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDomain": "cluster.local",
            "clusterDNS": [str(self.settings.dns_service_ip)],
            "podLogsDir": str(self.path("pod-logs")),
            "failSwapOn": False,
            "serializeImagePulls": False,
            # The machine's disk and memory are shared with the local stack and builds: evict
            # only when really short.
            "evictionHard": {
                "memory.available": "200Mi",
                "nodefs.available": "2%",
                "imagefs.available": "2%",
                "nodefs.inodesFree": "2%",
            },
            "imageGCHighThresholdPercent": 98,
            "imageGCLowThresholdPercent": 95,
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "shutdownGracePeriod": "0s",
        }
        path = self.path("conf", "kubelet.yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _kubelet(self) -> Program:
        return self._program(
            "kubelet",
            [
                str(kube_bin("kubelet")),
                f"--config={self.write_kubelet_config()}",
                f"--kubeconfig={self.pki.kubeconfig('kubelet')}",
                f"--hostname-override={self.settings.node_name}",
                f"--node-ip={self.address}",
                f"--root-dir={self.path('kubelet')}",
                f"--cert-dir={self.path('kubelet', 'pki')}",
            ],
        )

    def _kube_proxy(self) -> Program:
        return self._program(
            "kube-proxy",
            [
                str(kube_bin("kube-proxy")),
                f"--kubeconfig={self.pki.kubeconfig('kube-proxy')}",
                f"--hostname-override={self.settings.node_name}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={self.settings.pod_network}",
                f"--healthz-bind-address={self.address}:10256",
                "--metrics-bind-address=127.0.0.1:10249",
                # nf_conntrack_max is the whole machine's, not the namespace's: leave it alone.
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0",
                "--conntrack-tcp-timeout-close-wait=0",
            ],
        )
