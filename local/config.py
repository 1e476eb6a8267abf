"""Settings of the local stack: where it keeps its data and which ports it uses.

Services' own settings (RECEIVER_PORT, POSTGRES_PASSWORD, ...) are read by the services' classes
and passed on unchanged; this class adds what only the local stack needs.
"""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO = Path(__file__).resolve().parent.parent
CONTRACTS = REPO / "charts" / "jobflow" / "files"
TEMPLATES = REPO / "local" / "conf"


class StackSettings(BaseSettings):
    """The local stack's settings (``LOCAL_`` prefix)."""

    model_config = SettingsConfigDict(env_prefix="LOCAL_", extra="ignore")

    dir: Path = Field(
        default=REPO / ".local", description="Where the local stack keeps binaries, data and logs."
    )
    host: str = Field(
        default="127.0.0.1",
        description="Address every server of the stack listens on and advertises.",
    )
    client_network: IPv4Network = Field(
        default=IPv4Network("127.0.0.1/32"),
        description="Clients PostgreSQL and ClickHouse accept besides loopback.",
    )
    kafka_brokers: int = Field(
        default=1,
        ge=1,
        description=(
            "Kafka brokers, each a KRaft node that is broker and controller. Broker n listens "
            "on LOCAL_KAFKA_PORT + 2(n-1), its controller on LOCAL_KAFKA_CONTROLLER_PORT + "
            "2(n-1). The replication factor of every topic is the broker count up to 3, "
            "min.insync.replicas one less (at least 1)."
        ),
    )
    kafka_port: int = Field(default=9092, description="Kafka broker port (the first broker's).")
    kafka_controller_port: int = Field(
        default=9093, description="KRaft controller port (the first broker's)."
    )
    kafka_heap: str = Field(default="512m", description="Kafka broker JVM heap (-Xmx).")
    connect_port: int = Field(default=8083, description="Kafka Connect REST port.")
    connect_heap: str = Field(default="512m", description="Kafka Connect JVM heap (-Xmx).")
    connect_metrics_port: int = Field(
        default=9404,
        description="Kafka Connect's Prometheus metrics (the JMX exporter's javaagent).",
    )
    clickhouse_http_port: int = Field(default=8123, description="ClickHouse HTTP port.")
    clickhouse_tcp_port: int = Field(default=9000, description="ClickHouse native port.")
    clickhouse_user: str = Field(default="default", description="ClickHouse user.")
    clickhouse_password: SecretStr = Field(
        default=SecretStr(""), description="ClickHouse password (empty: local only)."
    )
    lag_exporter_port: int = Field(
        default=9308,
        description="Consumer group lag for Prometheus (local/lag_exporter.py).",
    )
    prometheus_port: int = Field(default=9090, description="Prometheus port.")
    ready_timeout_s: float = Field(
        default=180.0, description="How long `up` waits for each component to become ready."
    )

    @property
    def kafka_nodes(self) -> range:
        """The brokers' KRaft node ids: 1 to the broker count."""
        return range(1, self.kafka_brokers + 1)

    def kafka_broker_port(self, node: int) -> int:
        return self.kafka_port + 2 * (node - 1)

    def kafka_node_controller_port(self, node: int) -> int:
        return self.kafka_controller_port + 2 * (node - 1)

    @property
    def kafka_replication(self) -> int:
        """Replicas of every topic, internal ones included: one per broker, up to 3."""
        return min(self.kafka_brokers, 3)

    @property
    def kafka_min_insync(self) -> int:
        """min.insync.replicas: with 3 replicas, one broker may be away and writes go on."""
        return max(1, self.kafka_replication - 1)

    @property
    def kafka_bootstrap(self) -> str:
        """Every broker, comma-separated."""
        return ",".join(f"{self.host}:{self.kafka_broker_port(node)}" for node in self.kafka_nodes)

    @property
    def connect_url(self) -> str:
        return f"http://{self.host}:{self.connect_port}"

    @property
    def clickhouse_url(self) -> str:
        return f"http://{self.host}:{self.clickhouse_http_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host}:{self.prometheus_port}"

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)
