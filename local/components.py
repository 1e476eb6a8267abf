"""The components of the local stack, in the order they start.

Each one knows how to prepare its files on first start, which program runs it, how to tell
that it is ready, and what to set up once it is (topics, tables, the connector). Contracts
(topics, DDL, connector config) come from ``charts/jobflow/files/``, the chart's own copies.
"""

from __future__ import annotations

import asyncio
import base64
import glob
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from string import Template

import httpx
import psycopg
import yaml
from confluent_kafka.admin import AdminClient

import jobflow.components
from jobflow.connector import load_connector, register_and_wait
from jobflow.core.settings import KafkaSettings, PostgresSettings
from jobflow.schema.apply import apply
from jobflow.schema.clickhouse import ClickHouseHttp
from jobflow.schema.migrations import load_directory
from jobflow.schema.targets import ClickHouseTarget, PostgresTarget
from jobflow.topics import ensure_topics, load_topics
from local.clickhouse_compat import adapt_migrations
from local.config import CONTRACTS, REPO, TEMPLATES, StackSettings
from local.output import step
from local.supervisor import Program


def render_template(source: Path, target: Path, values: dict[str, str]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(Template(source.read_text()).substitute(values))


async def http_unready_reason(url: str, expect: int = 200) -> str | None:
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        return f"{url}: {exc.__class__.__name__}"
    if response.status_code != expect:
        return f"{url}: HTTP {response.status_code} {response.text[:120]}"
    return None


class Component(ABC):
    name: str
    endpoint: str = ""
    start_group: str = ""
    """Components of one group (next to each other in the start order) are started together,
    then waited for: none is ready without the others (a KRaft quorum's nodes)."""
    ports: dict[int, str]
    """The loopback ports the component listens on, each with the variable that sets it."""

    def __init__(self, stack: StackSettings) -> None:
        self.stack = stack

    @abstractmethod
    def program(self) -> Program: ...

    def prepare(self) -> None:  # noqa: B027 - most components have nothing to prepare
        """Create files the program needs before its first start."""

    @abstractmethod
    async def unready_reason(self) -> str | None:
        """None when ready, else why not."""

    async def setup(self) -> None:  # noqa: B027 - most components have nothing to set up
        """Idempotent set-up once the component is ready."""


class Postgres(Component):
    name = "postgres"

    def __init__(self, stack: StackSettings, postgres: PostgresSettings) -> None:
        super().__init__(stack)
        self.settings = postgres
        self.endpoint = (
            f"postgresql://{postgres.user}@{stack.host}:{postgres.port}/{postgres.database}"
        )
        self.ports = {postgres.port: "POSTGRES_PORT"}
        self.data = stack.path("postgres", "data")
        self.sockets = stack.path("postgres", "run")

    @staticmethod
    def binary(name: str) -> str:
        candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
        if not candidates:
            raise RuntimeError(f"PostgreSQL's {name} not found under /usr/lib/postgresql")
        return candidates[-1]

    def os_user(self) -> str | None:
        # PostgreSQL refuses to run as root; the Debian package creates the postgres user.
        return "postgres" if os.geteuid() == 0 else None

    def _chown(self, path: Path) -> None:
        user = self.os_user()
        if user:
            entry = pwd.getpwnam(user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def program(self) -> Program:
        return Program(
            name=self.name,
            command=[
                self.binary("postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.settings.port),
                "-c",
                f"listen_addresses={self.stack.host}",
                "-c",
                f"unix_socket_directories={self.sockets}",
                # Each row's commit time (pg_xact_commit_timestamp): `make bench` reads when a
                # job's row landed from it instead of polling.
                "-c",
                "track_commit_timestamp=on",
            ],
            user=self.os_user(),
            # SIGTERM is PostgreSQL's smart shutdown, which waits for every client (Connect's
            # pool never leaves); SIGINT is its fast shutdown: sessions end, data is flushed.
            stop_signal="INT",
        )

    def prepare(self) -> None:
        for folder in (self.data.parent, self.data, self.sockets):
            folder.mkdir(parents=True, exist_ok=True)
            self._chown(folder)
        user = self.os_user()
        reachable = ["runuser", "-u", user, "--", "test", "-w", str(self.data)] if user else None
        if reachable and subprocess.run(reachable, check=False).returncode != 0:  # noqa: S603
            raise RuntimeError(
                f"PostgreSQL runs as user {user}, who cannot reach {self.data} (a parent folder "
                "is private to root?): move the checkout, or set LOCAL_DIR to a folder that "
                "user can reach"
            )
        if not (self.data / "PG_VERSION").exists():
            self._initdb(user)
        self._allow_clients()

    def _allow_clients(self) -> None:
        """Let the stack's client network in (initdb's pg_hba.conf lets loopback in only)."""
        hba = self.data / "pg_hba.conf"
        rule = f"host all all {self.stack.client_network} scram-sha-256"
        if rule not in hba.read_text().splitlines():
            with hba.open("a") as rules:
                rules.write(f"{rule}\n")

    def _initdb(self, user: str | None) -> None:
        step(self.name, f"initialising a cluster in {self.data}")
        password_file = self.data.parent / "initdb.pw"
        password_file.touch(mode=0o600)
        password_file.write_text(self.settings.password.get_secret_value())
        self._chown(password_file)
        command = [
            self.binary("initdb"),
            "-D",
            str(self.data),
            "-U",
            self.settings.user,
            "--auth=scram-sha-256",
            f"--pwfile={password_file}",
            "--encoding=UTF8",
            "--locale=C",
        ]
        if user:
            command = ["runuser", "-u", user, "--", *command]
        try:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)  # noqa: S603
        finally:
            password_file.unlink()

    async def unready_reason(self) -> str | None:
        try:
            async with await psycopg.AsyncConnection.connect(
                self.settings.conninfo(), connect_timeout=2
            ) as connection:
                await connection.execute("SELECT 1")
        except psycopg.Error as exc:
            return str(exc).strip().splitlines()[0]
        return None

    async def setup(self) -> None:
        """The chart's migrations, as its apply Job runs them (the sink creates no table)."""
        migrations = load_directory(CONTRACTS / "postgres" / "migrations", {})
        settings = self.settings
        target = PostgresTarget(
            f"postgresql://{settings.host}:{settings.port}/{settings.database}",
            settings.user,
            settings.password.get_secret_value(),
        )
        await apply(target, migrations, self.stack.ready_timeout_s, partial(step, self.name))


class Kafka(Component):
    """One Kafka broker of the stack: a KRaft node that is broker and controller.

    With LOCAL_KAFKA_BROKERS above 1 the stack runs one per node id, ``kafka-1``, ``kafka-2``,
    ...; they start together (``start_group``), as none is ready before a quorum of them runs.
    """

    start_group = "kafka"

    def __init__(self, stack: StackSettings, lib: Path, node: int = 1) -> None:
        super().__init__(stack)
        self.node = node
        self.port = stack.kafka_broker_port(node)
        self.controller_port = stack.kafka_node_controller_port(node)
        self.endpoint = f"{stack.host}:{self.port}"
        self.ports = {
            self.port: "LOCAL_KAFKA_PORT",
            self.controller_port: "LOCAL_KAFKA_CONTROLLER_PORT",
        }
        self.lib = lib
        if stack.kafka_brokers == 1:
            self.name = "kafka"
            home = stack.path("kafka")
        else:
            self.name = f"kafka-{node}"
            home = stack.path("kafka", str(node))
        self.data = home / "data"
        self.config = home / "server.properties"

    def java(
        self, main: str, *arguments: str, heap: str, log_name: str, options: tuple[str, ...] = ()
    ) -> list[str]:
        return [
            "java",
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={self.stack.path('conf', 'log4j2.yaml')}",
            f"-Djobflow.log.name={log_name}",
            *options,
            "-cp",
            f"{self.lib}/*",
            main,
            *arguments,
        ]

    def program(self) -> Program:
        return Program(
            name=self.name,
            command=self.java(
                "kafka.Kafka", str(self.config), heap=self.stack.kafka_heap, log_name=self.name
            ),
            stop_wait_s=60,
        )

    def prepare(self) -> None:
        stack = self.stack
        render_template(
            TEMPLATES / "log4j2.yaml",
            stack.path("conf", "log4j2.yaml"),
            {"LOG_DIR": str(stack.path("logs"))},
        )
        controllers = [
            f"{stack.host}:{stack.kafka_node_controller_port(node)}" for node in stack.kafka_nodes
        ]
        render_template(
            TEMPLATES / "kafka" / "server.properties",
            self.config,
            {
                "NODE_ID": str(self.node),
                "KAFKA_DATA_DIR": str(self.data),
                "HOST": stack.host,
                "KAFKA_PORT": str(self.port),
                "KAFKA_CONTROLLER_PORT": str(self.controller_port),
                "CONTROLLERS": ",".join(controllers),
                "REPLICATION": str(stack.kafka_replication),
                "MIN_INSYNC": str(stack.kafka_min_insync),
            },
        )
        if (self.data / "meta.properties").exists():
            return
        cluster = KraftCluster.of(stack)
        step(self.name, f"formatting storage in {self.data} (cluster {cluster.cluster_id})")
        self.data.mkdir(parents=True, exist_ok=True)
        # One node is its own quorum; several are formatted with the same first voters, each
        # with the directory id the list gives its node.
        quorum = (
            ["--standalone"]
            if stack.kafka_brokers == 1
            else ["--initial-controllers", cluster.initial_controllers]
        )
        command = self.java(
            "kafka.tools.StorageTool",
            "format",
            *quorum,
            "--cluster-id",
            cluster.cluster_id,
            "--config",
            str(self.config),
            heap="256m",
            log_name="kafka-storage",
        )
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)  # noqa: S603

    def admin(self) -> AdminClient:
        # log_level 0: while the broker starts, refused connections are expected, not news.
        return AdminClient({"bootstrap.servers": self.stack.kafka_bootstrap, "log_level": 0})

    async def unready_reason(self) -> str | None:
        """None once this broker answers on its own port and is one of the cluster's live
        brokers (registered and unfenced)."""
        own = AdminClient({"bootstrap.servers": self.endpoint, "log_level": 0})
        try:
            metadata = await asyncio.to_thread(own.list_topics, timeout=2)
        except Exception as exc:
            return str(exc)
        if self.node not in metadata.brokers:
            return f"broker {self.node} not among the live brokers {sorted(metadata.brokers)}"
        return None

    async def setup(self) -> None:
        if self.node != 1:
            return  # the cluster's topics are set up once, by the first broker
        topics = load_topics(CONTRACTS / "topics.yaml")
        outcome = await asyncio.to_thread(
            ensure_topics,
            self.admin(),
            topics,
            partial(step, self.name),
            self.stack.ready_timeout_s,
            # The file's partitions and configs; the replicas the brokers can hold.
            self.stack.kafka_replication,
        )
        if outcome.problems:
            raise RuntimeError("; ".join(outcome.problems))
        step(
            self.name,
            f"{len(topics)} topics in place (charts/jobflow/files/topics.yaml, "
            f"{self.stack.kafka_replication} replicas, min.insync.replicas "
            f"{self.stack.kafka_min_insync})",
        )


def kafka_brokers(stack: StackSettings, lib: Path) -> list[Kafka]:
    """The stack's brokers, one per KRaft node id."""
    return [Kafka(stack, lib, node) for node in stack.kafka_nodes]


@dataclass(frozen=True)
class KraftCluster:
    """What every node of the stack's KRaft cluster is formatted with: the cluster id and, for
    a quorum of several, the first voters (node id, controller address, directory id). Kept
    in ``kafka/cluster.json``, so that a node formatted later (its data deleted) joins the
    same cluster."""

    cluster_id: str
    initial_controllers: str

    @classmethod
    def of(cls, stack: StackSettings) -> KraftCluster:
        saved = stack.path("kafka", "cluster.json")
        if saved.exists():
            return cls(**json.loads(saved.read_text()))
        cluster = cls(
            cluster_id=kafka_cluster_id(),
            initial_controllers=",".join(
                f"{node}@{stack.host}:{stack.kafka_node_controller_port(node)}:{kafka_cluster_id()}"
                for node in stack.kafka_nodes
            ),
        )
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(asdict(cluster)))
        return cluster


class Connect(Component):
    name = "connect"
    connector = "postgres-connector"

    def __init__(
        self,
        stack: StackSettings,
        kafka: Kafka,
        postgres: PostgresSettings,
        plugins: Path,
        metrics_agent: Path | None = None,
    ) -> None:
        """``metrics_agent``: the JMX exporter's javaagent jar, to serve Connect's metrics on
        ``stack.connect_metrics_port`` as Strimzi's KafkaConnect does in a cluster."""
        super().__init__(stack)
        self.endpoint = stack.connect_url
        self.ports = {stack.connect_port: "LOCAL_CONNECT_PORT"}
        self.metrics_url = ""
        if metrics_agent:
            self.ports[stack.connect_metrics_port] = "LOCAL_CONNECT_METRICS_PORT"
            self.metrics_url = f"http://{stack.host}:{stack.connect_metrics_port}/metrics"
        self.metrics_agent = metrics_agent
        self.kafka = kafka
        self.postgres = postgres
        self.plugins = plugins
        self.config = stack.path("connect", "connect-distributed.properties")

    def jvm_options(self) -> tuple[str, ...]:
        if not self.metrics_agent:
            return ()
        # The chart's KafkaConnect hands Strimzi the same rules file (metricsConfig).
        rules = CONTRACTS / "monitoring" / "connect-metrics.yaml"
        address = f"{self.stack.host}:{self.stack.connect_metrics_port}"
        return (f"-javaagent:{self.metrics_agent}={address}:{rules}",)

    def program(self) -> Program:
        return Program(
            name=self.name,
            command=self.kafka.java(
                "org.apache.kafka.connect.cli.ConnectDistributed",
                str(self.config),
                heap=self.stack.connect_heap,
                log_name="connect",
                options=self.jvm_options(),
            ),
            # The connector reads these through Connect's env config provider, so the password
            # is never stored in Kafka Connect's config topic.
            environment={
                "JOBFLOW_POSTGRES_URL": self.postgres.jdbc_url(),
                "JOBFLOW_POSTGRES_USER": self.postgres.user,
                "JOBFLOW_POSTGRES_PASSWORD": self.postgres.password.get_secret_value(),
            },
            stop_wait_s=60,
        )

    def prepare(self) -> None:
        render_template(
            TEMPLATES / "connect" / "connect-distributed.properties",
            self.config,
            {
                "HOST": self.stack.host,
                "KAFKA_BOOTSTRAP": self.stack.kafka_bootstrap,
                "REPLICATION": str(self.stack.kafka_replication),
                "CONNECT_PORT": str(self.stack.connect_port),
                "CONNECT_PLUGIN_DIR": str(self.plugins),
            },
        )

    async def unready_reason(self) -> str | None:
        unready = await http_unready_reason(f"{self.endpoint}/connectors")
        if unready is None and self.metrics_url:
            return await http_unready_reason(self.metrics_url)
        return unready

    def connector_config(self) -> dict[str, str]:
        return {
            **load_connector(CONTRACTS / "connect" / "postgres-connector.json"),
            "connection.url": "${env:JOBFLOW_POSTGRES_URL}",
            "connection.username": "${env:JOBFLOW_POSTGRES_USER}",
            "connection.password": "${env:JOBFLOW_POSTGRES_PASSWORD}",
        }

    async def setup(self) -> None:
        # A task that failed while the stack was down (PostgreSQL stopped first) is restarted
        # while this waits for the connector to run; after that the watchdog restarts them.
        await asyncio.to_thread(
            register_and_wait,
            self.endpoint,
            self.connector,
            self.connector_config(),
            self.stack.ready_timeout_s,
            partial(step, self.name),
        )
        step(self.name, f"connector {self.connector} running (charts/jobflow/files/connect/)")


def helper_program(name: str, module: str, *arguments: str) -> Program:
    """``python -m <module>`` from the project's virtualenv: one of the stack's own helpers,
    which keep no state to flush, so they are given 5 s to stop."""
    return Program(
        name=name,
        command=[str(REPO / ".venv" / "bin" / "python"), "-m", module, *arguments],
        directory=REPO,
        stop_wait_s=5,
    )


class ConnectWatchdog(Component):
    """Restarts the connector's failed tasks (local/connect_watchdog.py)."""

    name = "connect-watchdog"

    def __init__(self, stack: StackSettings, connect: Connect) -> None:
        super().__init__(stack)
        self.connect = connect
        self.endpoint = f"watching {connect.connector}"
        self.ports = {}

    def program(self) -> Program:
        return helper_program(
            self.name, "local.connect_watchdog", self.connect.endpoint, self.connect.connector
        )

    async def unready_reason(self) -> str | None:
        return None  # nothing to ask it: running (supervisord's state) is all there is


class ClickHouse(Component):
    name = "clickhouse"

    def __init__(self, stack: StackSettings) -> None:
        super().__init__(stack)
        self.endpoint = stack.clickhouse_url
        self.ports = {
            stack.clickhouse_http_port: "LOCAL_CLICKHOUSE_HTTP_PORT",
            stack.clickhouse_tcp_port: "LOCAL_CLICKHOUSE_TCP_PORT",
        }
        self.data = stack.path("clickhouse", "data")
        self.config = stack.path("clickhouse", "conf", "config.xml")

    def program(self) -> Program:
        return Program(
            name=self.name,
            command=[_clickhouse_server(), f"--config-file={self.config}"],
            directory=self.data,
        )

    def prepare(self) -> None:
        values = {
            "HOST": self.stack.host,
            "CLIENT_NETWORK": str(self.stack.client_network),
            "CLICKHOUSE_DATA_DIR": str(self.data),
            "CLICKHOUSE_LOG_DIR": str(self.stack.path("logs")),
            "CLICKHOUSE_HTTP_PORT": str(self.stack.clickhouse_http_port),
            "CLICKHOUSE_TCP_PORT": str(self.stack.clickhouse_tcp_port),
            "CLICKHOUSE_PASSWORD": _xml_escape(self.stack.clickhouse_password.get_secret_value()),
        }
        for name in ("config.xml", "users.xml"):
            render_template(TEMPLATES / "clickhouse" / name, self.config.parent / name, values)
        self.data.mkdir(parents=True, exist_ok=True)

    def client(self) -> ClickHouseHttp:
        return ClickHouseHttp(
            self.endpoint,
            self.stack.clickhouse_user,
            self.stack.clickhouse_password.get_secret_value(),
        )

    async def unready_reason(self) -> str | None:
        return await http_unready_reason(f"{self.endpoint}/ping")

    async def setup(self) -> None:
        """The chart's migrations, each adapted for 18.16 where the server is 18.16."""
        migrations = load_directory(
            CONTRACTS / "clickhouse" / "migrations",
            {"kafka_broker_list": self.stack.kafka_bootstrap},
        )
        report = partial(step, self.name)
        client = self.client()
        try:
            version = (await client.execute("SELECT version()")).strip()
        except BaseException:
            await client.close()
            raise
        report(f"ClickHouse {version}")
        if version.split(".")[0] == "18":
            migrations = adapt_migrations(migrations, report)
        # apply() closes the target, and with it the client.
        await apply(ClickHouseTarget(client), migrations, self.stack.ready_timeout_s, report)


class LagExporter(Component):
    """Consumer group lag for Prometheus (local/lag_exporter.py), where a cluster has Strimzi's
    Kafka Exporter."""

    name = "lag-exporter"

    def __init__(self, stack: StackSettings) -> None:
        super().__init__(stack)
        self.address = f"{stack.host}:{stack.lag_exporter_port}"
        self.endpoint = f"http://{self.address}/metrics"
        self.ports = {stack.lag_exporter_port: "LOCAL_LAG_EXPORTER_PORT"}

    def program(self) -> Program:
        return helper_program(
            self.name,
            "local.lag_exporter",
            f"--bootstrap-servers={self.stack.kafka_bootstrap}",
            f"--listen={self.address}",
        )

    async def unready_reason(self) -> str | None:
        return await http_unready_reason(self.endpoint)


class Prometheus(Component):
    name = "prometheus"
    rules = CONTRACTS / "monitoring" / "rules.yaml"

    def __init__(self, stack: StackSettings, targets: dict[str, str]) -> None:
        """``targets``: the address (host:port) each scrape job reads /metrics from."""
        super().__init__(stack)
        self.endpoint = stack.prometheus_url
        self.ports = {stack.prometheus_port: "LOCAL_PROMETHEUS_PORT"}
        self.targets = targets
        self.config = stack.path("prometheus", "prometheus.yml")

    def scrape_config(self) -> str:
        config = {
            "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
            # The chart's alert rules, the very file its PrometheusRule carries.
            "rule_files": [str(self.rules)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [address]}]}
                for job, address in self.targets.items()
            ],
        }
        return yaml.safe_dump(config, sort_keys=False)

    def program(self) -> Program:
        # Prometheus reads its configuration and rules at start only. Their digest in the
        # program's environment makes `make up` restart a running Prometheus when either
        # changed (supervisord restarts a program whose definition changed), and only then.
        digest = hashlib.sha256(self.scrape_config().encode() + self.rules.read_bytes()).hexdigest()
        return Program(
            name=self.name,
            command=[
                "prometheus",
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.stack.path('prometheus', 'data')}",
                "--storage.tsdb.retention.time=2d",
                f"--web.listen-address=127.0.0.1:{self.stack.prometheus_port}",
            ],
            environment={"JOBFLOW_PROMETHEUS_CONFIG_SHA256": digest},
        )

    def prepare(self) -> None:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.scrape_config())

    async def unready_reason(self) -> str | None:
        return await http_unready_reason(f"{self.endpoint}/-/ready")


class Service(Component):
    """One of jobflow's own services, run from the project's virtualenv."""

    def __init__(
        self,
        stack: StackSettings,
        service: jobflow.components.Service,
        port: int,
        environment: dict[str, str],
    ) -> None:
        super().__init__(stack)
        self.name = service.name
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.ports = {port: service.port_variable}
        self.environment = environment

    def program(self) -> Program:
        python = REPO / ".venv" / "bin" / "python"
        return Program(
            name=self.name,
            command=[str(python), "-m", "jobflow", self.name],
            # A stable instance id: when supervisord restarts a stage, its new producer fences
            # the old one's open transaction at once instead of after its timeout.
            environment={
                f"{self.name.upper()}_INSTANCE_ID": f"local-{self.name}",
                **self.environment,
            },
            directory=REPO,
        )

    async def unready_reason(self) -> str | None:
        return await http_unready_reason(f"{self.endpoint}/readyz")


def kafka_cluster_id() -> str:
    """A random id as Kafka's own Uuid.randomUuid() makes it: a cluster id, or a directory id.

    Its base64url text starts with "-" about once in 64 draws; StorageTool's argument parser
    then reads the id as an option and fails, so, like Kafka, draw again.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def service_environment(stack: StackSettings, postgres: PostgresSettings) -> dict[str, str]:
    """What every local service is told: the local Kafka, and PostgreSQL as status backend;
    and the services' own and Kafka's variables of ``make up``'s environment."""
    kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap)
    passed_on = {
        "KAFKA",
        *(s.env_prefix.removesuffix("_") for s in jobflow.components.PIPELINE_SERVICES.values()),
    }
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        # ksqlDB cannot run here: the local informer reads statuses from PostgreSQL.
        "INFORMER_BACKEND": os.environ.get("INFORMER_BACKEND", "postgres"),
        "POSTGRES_HOST": postgres.host,
        "POSTGRES_PORT": str(postgres.port),
        "POSTGRES_USER": postgres.user,
        "POSTGRES_PASSWORD": postgres.password.get_secret_value(),
        "POSTGRES_DATABASE": postgres.database,
        **{
            key: value
            for key, value in os.environ.items()
            if key.split("_", 1)[0] in passed_on and key != "KAFKA_BOOTSTRAP_SERVERS"
        },
    }


def _clickhouse_server() -> str:
    found = shutil.which("clickhouse-server") or shutil.which("clickhouse")
    if found is None:
        raise RuntimeError("clickhouse-server not found")
    return found


def _xml_escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _version_key(path: str) -> int:
    version = Path(path).parent.parent.name
    return int(version) if version.isdigit() else 0
