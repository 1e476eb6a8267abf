"""Images for the node, built on this machine and imported into its containerd: nothing is
ever pulled.

Base images cannot be pulled here, so they are built too, from Debian's packages, and handed
to the Dockerfiles as build arguments; with their defaults the Dockerfiles build on the
official bases as before:

- ``PYTHON_IMAGE``: Debian bookworm (mmdebstrap, minbase) with Python 3.11, pip and venv,
  laid out as the official python image is (``/usr/local/bin/python3.11``, no
  EXTERNALLY-MANAGED marker), in place of python:3.11-slim-bookworm;
- the node's own images: the sandbox (``pause``, compiled from the pinned Kubernetes module's
  ``build/pause/linux/pause.c``) and CoreDNS (built by tools/kube/build.sh), each a single
  static binary on an empty image.

buildah builds them (``--isolation chroot``: its default runtime here, crun, refuses this
machine's hybrid cgroups), in its own storage, which caches layers across builds and clones
like Go's build cache does; each image goes to containerd as a docker-archive.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from jobflow.components import IMAGES, Image
from local.cluster.config import ClusterSettings
from local.cluster.node import PAUSE_IMAGE, kube_bin
from local.config import REPO, StackSettings
from local.output import step

DEBIAN_SUITE = "bookworm"
DEBIAN_SOURCES = (
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE} main",
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {DEBIAN_SUITE}-security main",
)
PYTHON_BASE = "localhost/jobflow-python-base:3.11-bookworm"
COREDNS_IMAGE = "localhost/jobflow-coredns:1.15.0"
FETCH_BASE = "localhost/jobflow-fetch-base:bookworm"
KAFKA_BASE = "localhost/jobflow-kafka-base:4.3.1"
# The host's CA bundle, handed to builds that download (pip, uv, curl) as a build secret: it
# trusts what this machine trusts (a TLS-inspecting proxy's CA too) and is never stored in a
# layer.
CA_BUNDLE = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))


def _run(command: list[str], log: Path, **kwargs: object) -> str:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as output:
        output.write(f"$ {' '.join(command)}\n")
        output.flush()
        done = subprocess.run(  # noqa: S603
            command, stdout=subprocess.PIPE, stderr=output, text=True, check=False, **kwargs
        )  # type: ignore[call-overload]
        output.write(done.stdout)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} {command[1]} failed ({done.returncode}); see {log}")
    return str(done.stdout)


@dataclass(frozen=True)
class Builder:
    settings: ClusterSettings

    @property
    def log(self) -> Path:
        return self.settings.path("logs", "images.log")

    @property
    def containerd_socket(self) -> Path:
        return self.settings.path("run", "containerd.sock")

    def buildah(self, *arguments: str) -> str:
        return _run(["buildah", *arguments], self.log)

    def exists(self, image: str) -> bool:
        found = subprocess.run(  # noqa: S603
            ["buildah", "inspect", "--type", "image", image],  # noqa: S607
            capture_output=True,
            check=False,
        )
        return found.returncode == 0

    def label(self, image: str, name: str) -> str:
        return self.buildah(
            "inspect", "--type", "image", "--format", f'{{{{index .ImageAnnotations "{name}"}}}}',
            image,
        ).strip()  # fmt: skip

    def from_binary(self, image: str, binary: Path, user: str, extra: list[str]) -> None:
        """An image holding only ``binary``, as its entrypoint; rebuilt when the binary changes."""
        digest = hashlib.sha256(binary.read_bytes()).hexdigest()
        if self.exists(image) and self.label(image, "dev.jobflow.source-sha256") == digest:
            return
        container = self.buildah("from", "scratch").strip()
        try:
            self.buildah("copy", "--chmod", "0755", container, str(binary), f"/{binary.name}")
            self.buildah(
                "config", "--entrypoint", f'["/{binary.name}"]', "--user", user,
                "--annotation", f"dev.jobflow.source-sha256={digest}", *extra, container,
            )  # fmt: skip
            self.buildah("commit", "--quiet", container, image)
        finally:
            self.buildah("rm", container)

    def _ctr(self, *arguments: str) -> str:
        command = ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io"]
        return _run([*command, *arguments], self.log)

    def import_into_node(self, image: str, name: str | None = None) -> bool:
        """Copy the image into the node's containerd (namespace k8s.io, the kubelet's), as
        ``name`` (default: the image's own), unless this very image is there already."""
        reference = name or image
        built = str(json.loads(self.buildah("images", "--json", image))[0]["id"])
        stamp = self.settings.path("images", "imported", reference.replace("/", "_"))
        if (
            stamp.exists()
            and stamp.read_text() == built
            and self._ctr("images", "ls", "-q", f"name=={reference}").strip()
        ):
            return False
        with tempfile.TemporaryDirectory(dir=self.settings.path()) as folder:
            archive = Path(folder) / "image.tar"
            self.buildah("push", "--quiet", image, f"docker-archive:{archive}:{reference}")
            self._ctr("images", "import", "--no-unpack", str(archive))
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(built)
        return True

    def size(self, image: str) -> str:
        """The image's size as buildah reports it (e.g. "248 MB")."""
        return str(json.loads(self.buildah("images", "--json", image))[0]["size"])

    # The node's own images ----------------------------------------------------------------------

    def pause(self) -> None:
        """The sandbox image, from the pause.c that ships in the pinned Kubernetes module."""
        module = _run(
            ["go", "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"],
            self.log,
            cwd=REPO / "tools" / "kube",
            env={**os.environ, "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local"},
        ).strip()
        source = Path(module) / "build" / "pause" / "linux" / "pause.c"
        binary = self.settings.path("images", "pause")
        binary.parent.mkdir(parents=True, exist_ok=True)
        # As the module's build/pause/Makefile compiles it.
        _run(
            ["gcc", "-Os", "-Wall", "-Werror", "-static", "-DVERSION=v3.10-jobflow",
             "-o", str(binary), str(source)],
            self.log,
        )  # fmt: skip
        self.from_binary(PAUSE_IMAGE, binary, "65535:65535", [])

    def coredns(self) -> None:
        self.from_binary(COREDNS_IMAGE, kube_bin("coredns"), "65532:65532", [])

    # Bases --------------------------------------------------------------------------------------

    def debian_base(
        self, image: str, packages: list[str], hooks: list[str], stands_for: str
    ) -> None:
        """Debian minbase with ``packages`` (mmdebstrap), ``hooks`` run on its root ($1)."""
        if self.exists(image):
            return
        started = time.monotonic()
        cleanup = 'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*'
        with tempfile.TemporaryDirectory(dir=self.settings.path()) as folder:
            rootfs = Path(folder) / "rootfs.tar"
            _run(
                [
                    "mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
                    f"--include={','.join(packages)}",
                    *(f"--customize-hook={hook}" for hook in [*hooks, cleanup]),
                    DEBIAN_SUITE, str(rootfs), *DEBIAN_SOURCES,
                ],
                self.log,
            )  # fmt: skip
            container = self.buildah("from", "scratch").strip()
            try:
                self.buildah("add", container, str(rootfs), "/")
                self.buildah(
                    "config", "--env", "LANG=C.UTF-8", "--label",
                    f"org.opencontainers.image.description=Debian {DEBIAN_SUITE} "
                    f"(mmdebstrap) with {', '.join(packages)}, standing in for {stands_for}",
                    container,
                )  # fmt: skip
                self.buildah("commit", "--quiet", container, image)
            finally:
                self.buildah("rm", container)
        step("images", f"{image} built in {time.monotonic() - started:.0f}s")

    def python_base(self) -> None:
        """Debian with Python 3.11, in the official python image's layout: pip may install
        into it, as into theirs."""
        self.debian_base(
            PYTHON_BASE,
            ["python3.11", "python3-pip", "python3-venv", "ca-certificates"],
            [
                "for name in python3.11 python3 python; do "
                'ln -sf /usr/bin/python3.11 "$1/usr/local/bin/$name"; done',
                'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
            ],
            "python:3.11-slim-bookworm",
        )

    def fetch_base(self) -> None:
        self.debian_base(FETCH_BASE, ["curl", "ca-certificates"], [], "curlimages/curl")

    def kafka_base(self, jars: Path) -> None:
        """A JRE with the Kafka and Kafka Connect jars the local stack resolved from Maven
        Central, in /opt/kafka/libs as in Strimzi's image, and its user 1001."""
        jars_hash = hashlib.sha256(
            "".join(sorted(path.name for path in jars.glob("*.jar"))).encode()
        ).hexdigest()
        if self.exists(KAFKA_BASE) and (
            self.label(KAFKA_BASE, "dev.jobflow.source-sha256") == jars_hash
        ):
            return
        jre = f"{KAFKA_BASE}-jre"
        self.debian_base(
            jre,
            ["openjdk-17-jre-headless"],
            ['chroot "$1" useradd --uid 1001 --gid 0 --no-create-home --home-dir /opt/kafka kafka'],
            "the JRE of quay.io/strimzi/kafka",
        )
        container = self.buildah("from", jre).strip()
        try:
            self.buildah("copy", container, str(jars), "/opt/kafka/libs")
            self.buildah(
                "config", "--user", "1001", "--workingdir", "/opt/kafka",
                "--annotation", f"dev.jobflow.source-sha256={jars_hash}", container,
            )  # fmt: skip
            self.buildah("commit", "--quiet", container, KAFKA_BASE)
        finally:
            self.buildah("rm", container)

    # The project's images -----------------------------------------------------------------------

    def build(self, image: str, dockerfile: Path, target: str | None, args: dict[str, str]) -> None:
        command = [
            "build", "--isolation", "chroot", "--layers", "--quiet", "-f", str(dockerfile),
            "-t", image, "--secret", f"id=ca-bundle,src={CA_BUNDLE}",
        ]  # fmt: skip
        if target:
            command += ["--target", target]
        for name, value in args.items():
            command += ["--build-arg", f"{name}={value}"]
        self.buildah(*command, str(REPO))


def app_version() -> str:
    """The chart's appVersion: the tag its images carry by default."""
    chart = yaml.safe_load((REPO / "charts" / "jobflow" / "Chart.yaml").read_text())
    return str(chart["appVersion"])


def service_image(component: str) -> str:
    """The reference the chart renders for ``component`` with its default values
    (``<repository>-<component>:<appVersion>``), as containerd names it."""
    return f"docker.io/library/jobflow-{component}:{app_version()}"


def local_image(component: str) -> str:
    """The name buildah keeps ``component``'s image under."""
    return f"localhost/jobflow-{component}:{app_version()}"


# The loadtest Job's image with loadtest.generator bfg (yandex-tank with BFG and our gun; the
# phantom image cannot be pulled here). Not in jobflow.components.IMAGES: skaffold does not
# build it yet.
TANK = Image("tank", "loadtest/Dockerfile")

# What puts each Dockerfile on the bases built here: its base images' build arguments.
BASES = {
    "services/Dockerfile": {"PYTHON_IMAGE": PYTHON_BASE},
    "k8s/connect/Dockerfile": {"FETCH_IMAGE": FETCH_BASE, "KAFKA_IMAGE": KAFKA_BASE},
    "loadtest/Dockerfile": {"PYTHON_IMAGE": PYTHON_BASE},
}


def build_all(builder: Builder) -> dict[str, float]:
    """Every image jobflow builds, and the tank's, on the bases built here; seconds each took."""
    builder.python_base()
    builder.fetch_base()
    builder.kafka_base(StackSettings().path("java", "lib"))
    timings = {}
    for image in (*IMAGES.values(), TANK):
        started = time.monotonic()
        builder.build(
            local_image(image.name), REPO / image.dockerfile, image.target, BASES[image.dockerfile]
        )
        timings[image.name] = time.monotonic() - started
    return timings
