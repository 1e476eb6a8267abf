"""What the local stack adds for the sinks' metrics, offline: the lag exporter's arithmetic
(Kafka Exporter's meaning of kafka_consumergroup_lag), the Connect worker's javaagent, and a
Prometheus that is restarted when its configuration changes. They run against the real stack
in tests/stack/test_sink_metrics.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from local.components import Connect, Kafka, Prometheus
from local.config import CONTRACTS, StackSettings
from local.lag_exporter import group_lags
from local.stack import scrape_targets

from jobflow.core.settings import PostgresSettings


def test_lag_is_the_latest_offset_minus_the_committed_one_on_every_partition_of_the_topic() -> None:
    lags = group_lags(
        committed={
            "connect-postgres-connector": {("postgres-topic", 0): 40, ("postgres-topic", 2): 7},
            "clickhouse": {("clickhouse-topic", 0): 100},
        },
        partitions={"postgres-topic": 3, "clickhouse-topic": 1, "receiver-topic": 3},
        latest={
            ("postgres-topic", 0): 41,
            ("postgres-topic", 1): 12,
            ("postgres-topic", 2): 7,
            ("clickhouse-topic", 0): 100,
            ("receiver-topic", 0): 5,
        },
    )
    assert lags == {
        ("connect-postgres-connector", "postgres-topic", 0): 1,
        # a partition of a topic the group reads, without a commit of its own
        ("connect-postgres-connector", "postgres-topic", 1): -1,
        ("connect-postgres-connector", "postgres-topic", 2): 0,
        ("clickhouse", "clickhouse-topic", 0): 0,
    }


def test_a_partition_whose_end_the_broker_did_not_give_is_left_out() -> None:
    lags = group_lags(
        committed={"processor": {("receiver-topic", 0): 3, ("receiver-topic", 1): 3}},
        partitions={"receiver-topic": 2},
        latest={("receiver-topic", 0): 9},
    )
    assert lags == {("processor", "receiver-topic", 0): 6}


def test_a_group_on_a_deleted_topic_reports_nothing_for_it() -> None:
    assert group_lags({"old": {("gone", 0): 5}}, partitions={}, latest={}) == {}


def connect(settings: StackSettings, agent: Path | None) -> Connect:
    kafka = Kafka(settings, settings.path("java", "lib"))
    return Connect(settings, kafka, PostgresSettings(), settings.path("plugins"), agent)


def test_the_connect_worker_serves_its_metrics_by_the_charts_rules_file(tmp_path: Path) -> None:
    settings = StackSettings(dir=tmp_path)
    agent = tmp_path / "jmx_prometheus_javaagent.jar"
    command = connect(settings, agent).program().command
    rules = CONTRACTS / "monitoring" / "connect-metrics.yaml"
    assert f"-javaagent:{agent}=127.0.0.1:9404:{rules}" in command
    # A JVM option: before the main class, or Connect would take it for an argument.
    assert command.index(f"-javaagent:{agent}=127.0.0.1:9404:{rules}") < command.index("-cp")
    assert set(connect(settings, agent).ports) == {8083, 9404}
    # The cluster's data plane stands for a Kafka Connect of the user's own: no agent.
    bare = connect(settings, None)
    assert not [word for word in bare.program().command if word.startswith("-javaagent")]
    assert set(bare.ports) == {8083}


def test_prometheus_scrapes_connect_and_the_lag_exporter_with_the_charts_rules(
    tmp_path: Path,
) -> None:
    settings = StackSettings(dir=tmp_path)
    prometheus = Prometheus(settings, scrape_targets(settings))
    prometheus.prepare()
    config = yaml.safe_load(prometheus.config.read_text())
    assert config["rule_files"] == [str(CONTRACTS / "monitoring" / "rules.yaml")]
    jobs = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    assert jobs["connect"] == [{"targets": ["127.0.0.1:9404"]}]
    assert jobs["lag-exporter"] == [{"targets": ["127.0.0.1:9308"]}]


def test_prometheus_is_restarted_when_its_configuration_or_its_rules_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """supervisord restarts a program whose definition changed when `make up` runs again;
    Prometheus reads both files at start only."""
    settings = StackSettings(dir=tmp_path)
    rules = tmp_path / "rules.yaml"
    rules.write_text("groups: []\n")
    monkeypatch.setattr(Prometheus, "rules", rules)
    targets = scrape_targets(settings)

    def definition(targets: dict[str, str]) -> dict[str, str]:
        return Prometheus(settings, targets).program().environment

    first = definition(targets)
    assert definition(targets) == first
    assert definition({**targets, "connect": "127.0.0.1:19404"}) != first
    rules.write_text("groups: [{name: jobflow, rules: []}]\n")
    assert definition(targets) != first
