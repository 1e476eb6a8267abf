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
    kafka_port: int = Field(default=9092, description="Kafka broker port.")
    kafka_controller_port: int = Field(default=9093, description="KRaft controller port.")
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
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

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
