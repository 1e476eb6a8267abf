"""``python -m jobflow connector`` (the chart's hook Job for a Kafka Connect of the user's own)
against the real local Kafka Connect and PostgreSQL.

Each test registers the contract's connector under a name of its own, reading a topic of its
own (so that it never writes the pipeline's rows), and removes the connector, its topics and
its consumer group afterwards. The database credentials are read from files, as the Job reads
the mounted Secret.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka.admin import AdminClient
from local.config import CONTRACTS, REPO, StackSettings

from jobflow.core.settings import KafkaSettings, PostgresSettings
from tests.ports import free_port
from tests.stack.topics import create_topics, delete_topics


@dataclass(frozen=True)
class OwnConnector:
    name: str
    config_file: Path
    credentials: Path


def connector_command(
    connector: OwnConnector, url: str, timeout_s: float, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    postgres = PostgresSettings()
    password_file = connector.credentials / "password"
    if password is not None:
        password_file = connector.credentials / "wrong-password"
        password_file.write_text(password)
    return subprocess.run(
        [sys.executable, "-m", "jobflow", "connector"],
        env={
            **os.environ,
            "CONNECTOR_URL": url,
            "CONNECTOR_NAME": connector.name,
            "CONNECTOR_CONFIG_FILE": str(connector.config_file),
            "CONNECTOR_TIMEOUT_S": str(timeout_s),
            "POSTGRES_HOST": postgres.host,
            "POSTGRES_PORT": str(postgres.port),
            "POSTGRES_DATABASE": postgres.database,
            "POSTGRES_USER_FILE": str(connector.credentials / "username"),
            "POSTGRES_PASSWORD_FILE": str(password_file),
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s + 60,
        check=False,
    )


@pytest.fixture
def connect(local_stack: StackSettings) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_stack.connect_url, timeout=30) as client:
        yield client


@pytest.fixture
def connector(
    kafka: KafkaSettings, connect: httpx.Client, tmp_path: Path
) -> Iterator[OwnConnector]:
    """The contract's connector under a name of its own, on an empty topic of its own."""
    name = f"tests-connector-{uuid.uuid4().hex[:8]}"
    topic = f"{name}-input"
    create_topics(kafka, topic)
    contract = orjson.loads((CONTRACTS / "connect" / "postgres-connector.json").read_bytes())
    config_file = tmp_path / "connector.json"
    config_file.write_bytes(
        orjson.dumps(
            {**contract, "topics": topic, "errors.deadletterqueue.topic.name": f"{topic}.dlq"}
        )
    )
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    postgres = PostgresSettings()
    # As a mounted Secret's files: no line ending.
    (credentials / "username").write_text(postgres.user)
    (credentials / "password").write_text(postgres.password.get_secret_value())
    yield OwnConnector(name, config_file, credentials)
    connect.delete(f"/connectors/{name}")
    delete_topics(kafka, topic, f"{topic}.dlq")
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    groups = {g.group_id for g in admin.list_consumer_groups().result(30).valid}
    if f"connect-{name}" in groups:
        for future in admin.delete_consumer_groups([f"connect-{name}"]).values():
            future.result(30)


def test_the_connector_is_registered_with_the_databases_url_and_credentials_and_runs(
    connector: OwnConnector, connect: httpx.Client, local_stack: StackSettings
) -> None:
    first = connector_command(connector, local_stack.connect_url, timeout_s=90)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"connector {connector.name} configured at {local_stack.connect_url}" in first.stdout
    assert first.stdout.splitlines()[-1] == f"connector {connector.name} and its tasks are RUNNING"
    postgres = PostgresSettings()
    config = connect.get(f"/connectors/{connector.name}/config").json()
    expected = orjson.loads(connector.config_file.read_bytes())
    assert config == {
        **expected,
        "name": connector.name,
        "connection.url": f"jdbc:postgresql://{postgres.host}:{postgres.port}/{postgres.database}",
        "connection.username": postgres.user,
        "connection.password": postgres.password.get_secret_value(),
    }
    status = connect.get(f"/connectors/{connector.name}/status").json()
    assert [task["state"] for task in status["tasks"]] == ["RUNNING"]

    # Unchanged, nothing is sent (a PUT would restart the connector): the run only checks.
    second = connector_command(connector, local_stack.connect_url, timeout_s=90)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "configured" not in second.stdout


def test_a_task_that_cannot_start_fails_the_run_with_its_trace_even_after_a_running_one(
    connector: OwnConnector, connect: httpx.Client, local_stack: StackSettings
) -> None:
    """The second run changes the password: Connect's status shows the old task RUNNING for a
    moment after the PUT, and that must not count."""
    running = connector_command(connector, local_stack.connect_url, timeout_s=90)
    assert running.returncode == 0, running.stdout + running.stderr
    wrong = uuid.uuid4().hex
    failed = connector_command(connector, local_stack.connect_url, timeout_s=25, password=wrong)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"failed: task 0 of {connector.name} FAILED: " in failed.stdout
    # The summary line, then the whole trace with its frames.
    assert "\tat org." in failed.stdout
    # Meanwhile it was restarted, as a task that failed for want of a database still starting.
    assert f"task 0 of {connector.name} FAILED, restarting it: " in failed.stdout
    status = connect.get(f"/connectors/{connector.name}/status").json()
    assert status["tasks"][0]["state"] == "FAILED"


def test_a_connect_without_the_sinks_plugin_refuses_the_connector_with_its_reason(
    connector: OwnConnector, connect: httpx.Client, local_stack: StackSettings
) -> None:
    config = orjson.loads(connector.config_file.read_bytes())
    connector.config_file.write_bytes(
        orjson.dumps({**config, "connector.class": "io.debezium.connector.jdbc.Missing"})
    )
    done = connector_command(connector, local_stack.connect_url, timeout_s=30)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"failed: Connect refused connector {connector.name}: HTTP 400" in done.stdout
    assert "Failed to find any class that implements Connector" in done.stdout
    assert connect.get(f"/connectors/{connector.name}").status_code == httpx.codes.NOT_FOUND


def test_a_connect_that_never_answers_fails_within_the_timeout(connector: OwnConnector) -> None:
    done = connector_command(connector, f"http://127.0.0.1:{free_port()}", timeout_s=3)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Kafka Connect did not answer within 3s" in done.stdout
