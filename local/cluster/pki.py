"""The cluster's certificates, keys and tokens (openssl), made once and kept in its folder.

One CA signs the API server's serving certificate and its client certificate for the kubelet;
the kubelet trusts that CA for callers, and pods trust it through the kube-root-ca.crt ConfigMap
the controller manager publishes. Components authenticate to the API server with static tokens,
each as the user Kubernetes' bootstrap RBAC already binds (system:kube-scheduler, ...).
"""

from __future__ import annotations

import secrets
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from local.cluster.config import ClusterSettings

CA_DAYS = "3650"
# Who each component is to the API server: user name and groups (bootstrap RBAC's subjects).
IDENTITIES = {
    "admin": ("admin", ("system:masters",)),
    "kube-controller-manager": ("system:kube-controller-manager", ()),
    "kube-scheduler": ("system:kube-scheduler", ()),
    "kube-proxy": ("system:kube-proxy", ()),
}


def _openssl(*arguments: str) -> None:
    subprocess.run(["openssl", *arguments], check=True, capture_output=True)  # noqa: S603, S607


@dataclass(frozen=True)
class Pki:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    @property
    def tokens(self) -> Path:
        return self.folder / "tokens.csv"

    def kubeconfig(self, name: str) -> Path:
        return self.folder / f"{name}.kubeconfig"


def _signed(pki: Pki, name: str, subject: str, extensions: str) -> None:
    if pki.cert(name).exists():
        return
    request = pki.folder / f"{name}.csr"
    extfile = pki.folder / f"{name}.ext"
    extfile.write_text(extensions)
    _openssl("genrsa", "-out", str(pki.key(name)), "2048")
    _openssl("req", "-new", "-key", str(pki.key(name)), "-subj", subject, "-out", str(request))
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(pki.ca), "-CAkey", str(pki.key("ca")),
        "-CAcreateserial", "-days", CA_DAYS, "-extfile", str(extfile), "-out", str(pki.cert(name)),
    )  # fmt: skip
    request.unlink()
    extfile.unlink()


def _write_kubeconfig(path: Path, server: str, ca: Path, token: str) -> None:
    cluster = {"server": server, "certificate-authority": str(ca)}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "jobflow", "cluster": cluster}],
        "users": [{"name": "user", "user": {"token": token}}],
        "contexts": [{"name": "jobflow", "context": {"cluster": "jobflow", "user": "user"}}],
        "current-context": "jobflow",
    }
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def ensure(settings: ClusterSettings) -> Pki:
    """Make what is missing; what exists is kept, so a restarted cluster keeps its identity."""
    pki = Pki(settings.path("pki"))
    pki.folder.mkdir(parents=True, exist_ok=True)
    pki.folder.chmod(0o700)
    if not pki.ca.exists():
        _openssl("genrsa", "-out", str(pki.key("ca")), "2048")
        _openssl(
            "req", "-x509", "-new", "-key", str(pki.key("ca")), "-subj", "/CN=jobflow-cluster-ca",
            "-days", CA_DAYS, "-out", str(pki.ca),
        )  # fmt: skip
    names = ",".join(
        f"DNS:{name}"
        for name in ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                     "kubernetes.default.svc.cluster.local", "localhost")
    )  # fmt: skip
    addresses = f"IP:{settings.node_address},IP:{settings.kubernetes_service_ip},IP:127.0.0.1"
    _signed(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        f"subjectAltName={names},{addresses}\nextendedKeyUsage=serverAuth\n",
    )
    _signed(
        pki,
        "apiserver-kubelet-client",
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "extendedKeyUsage=clientAuth\n",
    )
    _signed(
        pki,
        "kubelet",
        f"/CN={settings.node_name}",
        f"subjectAltName=DNS:{settings.node_name},IP:{settings.node_address}\n"
        "extendedKeyUsage=serverAuth\n",
    )
    if not pki.key("service-account").exists():
        _openssl("genrsa", "-out", str(pki.key("service-account")), "2048")
        _openssl(
            "rsa", "-in", str(pki.key("service-account")), "-pubout",
            "-out", str(pki.folder / "service-account.pub"),
        )  # fmt: skip
    if not pki.tokens.exists():
        identities = {
            **IDENTITIES,
            "kubelet": (f"system:node:{settings.node_name}", ("system:nodes",)),
        }
        rows = []
        for name, (user, groups) in identities.items():
            token = secrets.token_hex(32)
            group_field = f',"{",".join(groups)}"' if groups else ""
            rows.append(f"{token},{user},{uuid.uuid4()}{group_field}\n")
            _write_kubeconfig(pki.kubeconfig(name), settings.apiserver_url, pki.ca, token)
        pki.tokens.touch(mode=0o600)
        pki.tokens.write_text("".join(rows))
    return pki
