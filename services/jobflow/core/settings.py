"""Settings shared by every service, read from the environment.

Each service adds its own settings class (``<SERVICE>_`` prefix) on top of ``ServiceSettings``;
Kafka settings are common to all of them (``KAFKA_`` prefix). The README's configuration table
is generated from these classes, so a field's description is its documentation.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal, Self

from psycopg.conninfo import make_conninfo
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def _read_secret_file(path: Path) -> str:
    """A credential from a file; a mounted Secret's value has no line ending, a hand-made file
    often has one."""
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc


_FIXED_NAME = " Fixed in a deployment; only for running one service apart, on topics of its own."


class KafkaSettings(BaseSettings):
    """How every service reaches Kafka, and the names of the pipeline's topics."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated."
    )
    # The topics' names are the pipeline's contract (charts/jobflow/files/topics.yaml, the
    # statements and the connector read them): these settings let a service run apart, on
    # topics of its own, as the tests and benchmarks do; the chart refuses them.
    receiver_topic: str = Field(
        default="receiver-topic", description=f"Topic of new jobs.{_FIXED_NAME}"
    )
    processor_topic: str = Field(
        default="processor-topic", description=f"Topic of finished jobs.{_FIXED_NAME}"
    )
    postgres_topic: str = Field(
        default="postgres-topic",
        description=f"Topic read by the Kafka Connect JDBC sink.{_FIXED_NAME}",
    )
    clickhouse_topic: str = Field(
        default="clickhouse-topic",
        description=f"Topic read by ClickHouse's Kafka engine.{_FIXED_NAME}",
    )
    dlq_suffix: str = Field(
        default=".dlq",
        description=f"Appended to a topic's name to name its dead-letter topic.{_FIXED_NAME}",
    )
    delivery_timeout_ms: int = Field(
        default=5000,
        ge=100,
        description="How long a produced record may wait for the broker's acknowledgement.",
    )

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description=(
            "How clients talk to the brokers: SASL_SSL for a TLS listener with SCRAM "
            "authentication (the chart's kafkaAuth)."
        ),
    )
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism, with a SASL_* security protocol."
    )
    sasl_username: str | None = Field(
        default=None, description="SASL user, with a SASL_* security protocol."
    )
    sasl_password: SecretStr | None = Field(
        default=None, description="SASL password, with a SASL_* security protocol."
    )
    sasl_password_file: Path | None = Field(
        default=None,
        description="File holding the SASL password, read in place of KAFKA_SASL_PASSWORD.",
    )
    ssl_ca_location: Path | None = Field(
        default=None,
        description=(
            "PEM file of the CA that signed the brokers' certificates (Strimzi's cluster CA); "
            "unset, the system's CAs."
        ),
    )

    @model_validator(mode="after")
    def _credentials_for_sasl(self) -> Self:
        if not self.security_protocol.startswith("SASL_"):
            return self
        if self.sasl_password_file is not None:
            self.sasl_password = SecretStr(_read_secret_file(self.sasl_password_file))
        missing = [
            name
            for name, value in (
                ("KAFKA_SASL_USERNAME", self.sasl_username),
                ("KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)", self.sasl_password),
            )
            if not value
        ]
        if missing:
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs {' and '.join(missing)}"
            )
        return self

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings common to every client."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        # Both are set with a SASL_* protocol: checked when the settings were read.
        if self.security_protocol.startswith("SASL_") and self.sasl_password is not None:
            config |= {
                "sasl.mechanism": self.sasl_mechanism,
                "sasl.username": self.sasl_username,
                "sasl.password": self.sasl_password.get_secret_value(),
            }
        if self.ssl_ca_location is not None:
            config["ssl.ca.location"] = str(self.ssl_ca_location)
        return config

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
    keep_alive_s: int = Field(
        default=75,
        ge=1,
        description=(
            "How long an idle kept-alive connection stays open. Longer than clients and load "
            "balancers keep theirs (httpx 5 s, an AWS load balancer 60 s): a server closing "
            "first can close a connection just as its client sends the next request on it."
        ),
    )
    shutdown_drain_s: float = Field(
        default=2.0,
        ge=0,
        description=(
            "On SIGTERM, how long requests on open connections are still served, answered "
            "with Connection: close, before the server stops: clients move to a new "
            "connection instead of losing a request sent as an idle one closes."
        ),
    )


class TransactionalServiceSettings(ServiceSettings):
    """A service that writes to Kafka in transactions, under ids made from its instance's
    name."""

    instance_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        min_length=1,
        json_schema_extra={"documented_default": "`<host name>-<process id>`"},
        description=(
            "Name of this instance, unique among the service's live instances (default: host "
            "name and process id; a pod's name in Kubernetes). It makes the producers' "
            "transactional.id: a restarted instance with the same name fences its "
            "predecessor's open transactions at once."
        ),
    )


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

    def jdbc_url(self) -> str:
        """The database as Kafka Connect's JDBC sink is told it."""
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.database}"
