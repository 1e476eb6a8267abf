"""Installs what the local stack runs: Debian packages, and Kafka's jars and the JMX exporter's
javaagent from Maven Central.

Every step checks first and does nothing when its result is already there, so `make up` can be
run again at any time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from local.config import REPO, StackSettings
from local.output import step

DEBIAN_PACKAGES = ("postgresql", "clickhouse-server", "prometheus")
POM = REPO / "local" / "java" / "pom.xml"
DEBEZIUM_JDBC = "io.debezium:debezium-connector-jdbc:3.6.0.Final:tar.gz:plugin"
# The Prometheus JMX exporter's javaagent: Kafka Connect's metrics, as Strimzi's KafkaConnect
# metricsConfig serves them in a cluster. 1.0.1 is the newest Maven Central lists here; Strimzi
# 1.2.0's image carries 1.6.0, which is not there, so the cluster's exporter is not the one run
# here (the rules file uses only the rule fields both versions document).
JMX_EXPORTER = "io.prometheus.jmx:jmx_prometheus_javaagent:1.0.1"
# Checked after every download: a moved or tampered artifact stops `make up` here, not in the
# JVM. Maven also checks it against Maven Central's own SHA-1 (-C).
JMX_EXPORTER_SHA256 = "7d61f737fd661610ccc14aea79764faa1ea94a340cbc8f0029b3d2edea3d80c1"


def _as_root(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return command
    if shutil.which("sudo") is None:
        raise RuntimeError(f"needs root to run: {' '.join(command)} (and sudo is not installed)")
    return ["sudo", *command]


def _installed(package: str) -> bool:
    status = subprocess.run(  # noqa: S603
        ["dpkg-query", "--show", "--showformat=${Status}", package],  # noqa: S607
        capture_output=True,
        text=True,
    )
    return status.stdout.strip() == "install ok installed"


def _needed_packages() -> list[str]:
    needed = missing_debian_packages(DEBIAN_PACKAGES)
    # Java and Maven may come from elsewhere than apt; any on the PATH will do.
    if shutil.which("java") is None:
        needed.append("openjdk-17-jre-headless")
    if shutil.which("mvn") is None:
        needed.append("maven")
    return needed


def _run_as_root_logged(command: list[str], log: Path, environment: dict[str, str]) -> None:
    with log.open("a") as output:
        result = subprocess.run(  # noqa: S603
            _as_root(command), env=environment, stdout=output, stderr=subprocess.STDOUT
        )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed; see {log}")


def debian_packages(settings: StackSettings) -> None:
    needed = _needed_packages()
    if not needed:
        step("debian packages", f"present: {', '.join(DEBIAN_PACKAGES)}, java, maven")
        return
    install_debian_packages(needed, settings.path("logs", "apt.log"))


def install_debian_packages(needed: list[str], log: Path) -> None:
    """apt-get install ``needed``, without starting the services the packages bring."""
    step("debian packages", f"installing {', '.join(needed)} (apt-get)")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log.parent.mkdir(parents=True, exist_ok=True)
    # The packages' own services must not start: the stack runs private instances on the same
    # ports. policy-rc.d is Debian's documented switch for that, removed right after.
    policy = "/usr/sbin/policy-rc.d"
    created_policy = not Path(policy).exists()
    if created_policy:
        _run_as_root_logged(
            ["sh", "-c", f"printf '#!/bin/sh\\nexit 101\\n' > {policy} && chmod 755 {policy}"],
            log,
            environment,
        )
    try:
        _run_as_root_logged(["apt-get", "update", "-qq"], log, environment)
        _run_as_root_logged(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *needed],
            log,
            environment,
        )
    finally:
        if created_policy:
            _run_as_root_logged(["rm", "-f", policy], log, environment)


def missing_debian_packages(packages: tuple[str, ...]) -> list[str]:
    return [name for name in packages if not _installed(name)]


def _maven(*arguments: str) -> None:
    command = ["mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(POM), *arguments]
    subprocess.run(command, check=True)  # noqa: S603


def kafka_jars(settings: StackSettings) -> Path:
    """Kafka and Kafka Connect jars in one classpath folder, resolved again when the pom changes."""
    lib = settings.path("java", "lib")
    marker = lib / ".pom.sha256"
    wanted = hashlib.sha256(POM.read_bytes()).hexdigest()
    if marker.exists() and marker.read_text() == wanted:
        step("kafka jars", f"present in {lib}")
        return lib
    step("kafka jars", "resolving Kafka 4.3.1 and Kafka Connect from Maven Central")
    lib.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=lib.parent, prefix="lib."))
    _maven("dependency:copy-dependencies", f"-DoutputDirectory={staging}", "-DincludeScope=runtime")
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)
    marker.write_text(wanted)
    return lib


def debezium_plugin(settings: StackSettings) -> Path:
    """The Debezium JDBC sink, unpacked into Kafka Connect's plugin path."""
    plugins = settings.path("java", "plugins")
    plugin = plugins / "debezium-connector-jdbc"
    marker = plugins / ".artifact"
    if marker.exists() and marker.read_text() == DEBEZIUM_JDBC and plugin.is_dir():
        step("debezium jdbc sink", f"present in {plugin}")
        return plugins
    step("debezium jdbc sink", f"fetching {DEBEZIUM_JDBC} from Maven Central")
    shutil.rmtree(plugins, ignore_errors=True)
    plugins.mkdir(parents=True)
    _maven("dependency:unpack", f"-Dartifact={DEBEZIUM_JDBC}", f"-DoutputDirectory={plugins}")
    marker.write_text(DEBEZIUM_JDBC)
    return plugins


def jmx_exporter_jar(settings: StackSettings) -> Path:
    """Where the JMX exporter's javaagent lives once installed."""
    _, artifact, version = JMX_EXPORTER.split(":")
    return settings.path("java", "agents", f"{artifact}-{version}.jar")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def jmx_exporter(settings: StackSettings) -> Path:
    """The JMX exporter's javaagent jar, fetched once and checked against its pinned SHA-256."""
    jar = jmx_exporter_jar(settings)
    if jar.exists() and _sha256(jar) == JMX_EXPORTER_SHA256:
        step("jmx exporter", f"present: {jar}")
        return jar
    step("jmx exporter", f"fetching {JMX_EXPORTER} from Maven Central")
    jar.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=jar.parent, prefix="download."))
    try:
        _maven(
            "-C", "dependency:copy", f"-Dartifact={JMX_EXPORTER}", f"-DoutputDirectory={staging}"
        )
        fetched = staging / jar.name
        if (actual := _sha256(fetched)) != JMX_EXPORTER_SHA256:
            raise RuntimeError(
                f"{jar.name}: SHA-256 {actual}, expected {JMX_EXPORTER_SHA256} (local/install.py)"
            )
        fetched.replace(jar)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return jar


def everything(settings: StackSettings) -> None:
    settings.dir.mkdir(parents=True, exist_ok=True)
    debian_packages(settings)
    kafka_jars(settings)
    debezium_plugin(settings)
    jmx_exporter(settings)
