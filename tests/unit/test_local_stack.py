"""The local stack's own logic: config rendering, the 18.16 DDL adaptation, the contracts."""

from __future__ import annotations

import base64
import shlex
import uuid
from ipaddress import IPv4Network
from pathlib import Path

import orjson
import pytest
import yaml
from local.clickhouse_compat import adapt_for_clickhouse_18
from local.components import ClickHouse, Postgres, kafka_cluster_id
from local.config import CONTRACTS, StackSettings
from local.supervisor import Program, render_config

from jobflow.connector import failed_parts
from jobflow.core.settings import KafkaSettings, PostgresSettings
from jobflow.schema.statements import render, split_statements


def test_supervisor_config_quotes_commands_and_environment(tmp_path: Path) -> None:
    program = Program(
        name="receiver",
        command=["/opt/py thon", "-m", "jobflow", "receiver", "100%"],
        environment={"A": 'say "hi"', "B": "50%"},
        user="postgres",
    )
    config = render_config(StackSettings(dir=tmp_path), [program])
    section = config.split("[program:receiver]")[1]
    command = next(line for line in section.splitlines() if line.startswith("command="))
    assert shlex.split(command.removeprefix("command=").replace("%%", "%")) == program.command
    assert 'environment=A="say \\"hi\\"",B="50%%"' in section
    assert "user=postgres" in section
    assert f"stdout_logfile={tmp_path}/logs/receiver.log" in section
    assert "autostart=false" in section


def test_postgres_is_stopped_with_its_fast_shutdown_signal(tmp_path: Path) -> None:
    # SIGTERM is PostgreSQL's smart shutdown: it waits for Connect's pooled sessions to end,
    # which they never do, until supervisord kills it.
    settings = StackSettings(dir=tmp_path)
    postgres = Postgres(settings, PostgresSettings())
    config = render_config(settings, [postgres.program()])
    assert "stopsignal=INT" in config.split("[program:postgres]")[1].splitlines()


@pytest.mark.parametrize(
    ("status", "failed"),
    [
        ({"connector": {"state": "RUNNING"}, "tasks": [{"id": 0, "state": "RUNNING"}]}, []),
        ({"connector": {"state": "RUNNING"}, "tasks": [{"id": 0, "state": "FAILED"}]}, ["task 0"]),
        ({"connector": {"state": "FAILED"}, "tasks": []}, ["connector"]),
    ],
)
def test_the_watchdog_restarts_what_failed_and_nothing_else(
    status: dict[str, object], failed: list[str]
) -> None:
    assert list(failed_parts(status)) == failed


def canonical_clickhouse() -> list[str]:
    text = (CONTRACTS / "clickhouse" / "migrations" / "0001_jobs.sql").read_text()
    return split_statements(render(text, {"kafka_broker_list": "127.0.0.1:9092"}))


def test_clickhouse_18_adaptation_reports_every_change() -> None:
    notes: list[str] = []
    adapted = adapt_for_clickhouse_18(canonical_clickhouse(), notes.append)
    kafka_table, target, view = adapted
    assert "kafka_skip_broken_messages" not in kafka_table
    assert "kafka_handle_error_mode" not in kafka_table
    assert "kafka_row_delimiter = '\\n'" in kafka_table
    assert "kafka_broker_list = '127.0.0.1:9092'" in kafka_table
    assert "kafka_num_consumers = 1" in kafka_table
    assert target == canonical_clickhouse()[1]
    assert view.endswith(
        "SELECT\n  id,\n  status,\n  parseDateTimeBestEffortOrZero(timestamp) AS timestamp\n"
        "FROM jobs_kafka"
    )
    # No dead-letter table on 18.16: its view needs the engine's stream mode.
    assert [n for n in notes if "jobs_errors" in n] == [
        "18.16 adaptation: left out jobs_errors and its view (18.16 has no "
        "kafka_handle_error_mode and no TTL; broken rows are skipped instead)"
    ]
    assert len(notes) == 5
    assert all(note.startswith("18.16 adaptation: ") for note in notes)


def test_clickhouse_18_adaptation_leaves_a_compatible_statement_alone() -> None:
    notes: list[str] = []
    statement = "CREATE TABLE t (a String) ENGINE = Memory"
    assert adapt_for_clickhouse_18([statement], notes.append) == [statement]
    assert notes == []


def test_statements_are_split_without_comments_and_placeholders_are_required() -> None:
    text = "-- a comment\nSELECT ';' ;\n\nSELECT 2; -- trailing\n"
    assert split_statements(text) == ["SELECT ';'", "SELECT 2"]
    with pytest.raises(ValueError, match=r"no value for placeholder \$\{missing\}"):
        render("x = '${missing}'", {})


def test_topics_file_defines_every_topic_the_services_use_with_its_dead_letter_topic() -> None:
    topics = {
        t["name"]: t for t in yaml.safe_load((CONTRACTS / "topics.yaml").read_text())["topics"]
    }
    kafka = KafkaSettings()
    used = [
        kafka.receiver_topic,
        kafka.processor_topic,
        kafka.postgres_topic,
        kafka.clickhouse_topic,
    ]
    assert set(used) <= set(topics)
    for consumed in (kafka.receiver_topic, kafka.processor_topic, kafka.postgres_topic):
        assert kafka.dlq_topic(consumed) in topics
    assert all(t["partitions"] >= 1 and t["replicas"] >= 1 for t in topics.values())


def test_the_connector_reads_the_postgres_topic_committed_and_upserts_by_id() -> None:
    config = orjson.loads((CONTRACTS / "connect" / "postgres-connector.json").read_bytes())
    assert config["topics"] == KafkaSettings().postgres_topic
    assert config["consumer.override.isolation.level"] == "read_committed"
    assert (config["insert.mode"], config["primary.key.fields"]) == ("upsert", "id")
    assert config["errors.deadletterqueue.topic.name"] == "postgres-topic.dlq"
    # Where and as whom to connect is each environment's to add (see connect/README.md).
    assert not {"connection.url", "connection.username", "connection.password"} & set(config)
    # A connection PostgreSQL dropped is opened again; flushes ride out a minute's outage.
    assert config["connection.restart.on.errors"] == "true"
    assert int(config["flush.max.retries"]) * int(config["flush.retry.delay.ms"]) >= 60_000


def test_readme_configuration_table_matches_the_settings_classes() -> None:
    from local.config_table import README, readme_with_table

    readme = README.read_text()
    assert readme == readme_with_table(readme), "README is stale: run `make docs`"


def test_kafka_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # A first byte of 0xF8..0xFB encodes as "-"; StorageTool's parser then took the id for an
    # option and `format` failed, about once in 64 fresh stacks.
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=bytes(range(1, 17)))])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))
    cluster_id = kafka_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(bytes(range(1, 17))).rstrip(b"=").decode()
    assert len(cluster_id) == 22


def test_a_stack_on_another_address_listens_and_lets_in_clients_there_only(
    tmp_path: Path,
) -> None:
    """The cluster's data plane is a second stack bound to the node link's host address; its
    servers must neither listen on loopback nor refuse the pods' (masqueraded) address."""
    settings = StackSettings(
        dir=tmp_path, host="10.87.0.1", client_network=IPv4Network("10.87.0.0/30")
    )
    clickhouse = ClickHouse(settings)
    clickhouse.prepare()
    config = (clickhouse.config.parent / "config.xml").read_text()
    users = (clickhouse.config.parent / "users.xml").read_text()
    assert "<listen_host>10.87.0.1</listen_host>" in config
    assert "127.0.0.1" not in config
    assert "<ip>10.87.0.0/30</ip>" in users
    postgres = Postgres(settings, PostgresSettings(host="10.87.0.1"))
    assert "listen_addresses=10.87.0.1" in postgres.program().command
    postgres.data.mkdir(parents=True)
    hba = postgres.data / "pg_hba.conf"
    hba.write_text("host all all 127.0.0.1/32 scram-sha-256\n")
    postgres._allow_clients()
    postgres._allow_clients()  # idempotent
    assert hba.read_text().splitlines() == [
        "host all all 127.0.0.1/32 scram-sha-256",
        "host all all 10.87.0.0/30 scram-sha-256",
    ]
    assert settings.kafka_bootstrap == "10.87.0.1:9092"
