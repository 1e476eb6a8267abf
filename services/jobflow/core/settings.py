"""Settings shared by every service, read from the environment.

Each service adds its own settings class (``<SERVICE>_`` prefix) on top of ``ServiceSettings``;
Kafka settings are common to all of them (``KAFKA_`` prefix). The README's configuration table
is generated from these classes, so a field's description is its documentation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from psycopg.conninfo import make_conninfo
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class KafkaSettings(BaseSettings):
    """How every service reaches Kafka, and the names of the pipeline's topics."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated."
    )
    receiver_topic: str = Field(default="receiver-topic", description="Topic of new jobs.")
    processor_topic: str = Field(default="processor-topic", description="Topic of finished jobs.")
    postgres_topic: str = Field(
        default="postgres-topic", description="Topic read by the Kafka Connect JDBC sink."
    )
    clickhouse_topic: str = Field(
        default="clickhouse-topic", description="Topic read by ClickHouse's Kafka engine."
    )
    dlq_suffix: str = Field(
        default=".dlq",
        description="Appended to a topic's name to name its dead-letter topic.",
    )
    delivery_timeout_ms: int = Field(
        default=5000,
        ge=100,
        description="How long a produced record may wait for the broker's acknowledgement.",
    )

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings common to every client."""
        return {"bootstrap.servers": self.bootstrap_servers}

    def dlq_topic(self, source_topic: str) -> str:
        return f"{source_topic}{self.dlq_suffix}"


class ServiceSettings(BaseSettings):
    """Where a service listens and how it logs; subclasses set the env prefix."""

    model_config = SettingsConfigDict(extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port of the HTTP server.")
    log_level: LogLevel = Field(default="INFO", description="Log level.")
    shutdown_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="How long shutdown may take to finish in-flight work before giving up.",
    )


def _read_secret_file(path: Path) -> str:
    """A credential from a file; a mounted Secret's value has no trailing newline, a hand-made
    file often has one."""
    try:
        return path.read_text().removesuffix("\n")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc


class PostgresSettings(BaseSettings):
    """How to reach the PostgreSQL database that holds table ``jobs``."""

    model_config = SettingsConfigDict(env_prefix="POSTGRES_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="PostgreSQL host.")
    port: int = Field(default=5432, ge=1, le=65535, description="PostgreSQL port.")
    user: str = Field(default="postgres", description="PostgreSQL user.")
    password: SecretStr = Field(default=SecretStr("password"), description="PostgreSQL password.")
    user_file: Path | None = Field(
        default=None,
        description="File holding the user, read in place of POSTGRES_USER (a mounted Secret).",
    )
    password_file: Path | None = Field(
        default=None,
        description=(
            "File holding the password, read in place of POSTGRES_PASSWORD (a mounted Secret)."
        ),
    )
    database: str = Field(default="postgres", description="Database holding table jobs.")
    table: str = Field(default="jobs", description="Table the JDBC sink writes.")

    @model_validator(mode="after")
    def _read_credential_files(self) -> Self:
        # The PostgreSQL image's own convention (POSTGRES_PASSWORD_FILE): a Secret mounted as
        # files keeps the password out of the process environment.
        if self.user_file is not None:
            self.user = _read_secret_file(self.user_file)
        if self.password_file is not None:
            self.password = SecretStr(_read_secret_file(self.password_file))
        return self

    def conninfo(self) -> str:
        return make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password.get_secret_value(),
            dbname=self.database,
        )
