"""The local stack's Kafka brokers: one by default, three with LOCAL_KAFKA_BROKERS=3, each with
its ports and data, the replication following their count."""

from __future__ import annotations

from pathlib import Path

from local.components import Connect, Kafka, KraftCluster
from local.config import StackSettings
from local.stack import components

from jobflow.core.settings import PostgresSettings


def properties(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def rendered(broker: Kafka) -> dict[str, str]:
    # A formatted data dir: prepare() renders the config and formats nothing.
    broker.data.mkdir(parents=True)
    (broker.data / "meta.properties").touch()
    broker.prepare()
    return properties(broker.config)


def test_one_broker_is_the_stack_of_before(tmp_path: Path) -> None:
    stack = StackSettings(dir=tmp_path)
    brokers = [part for part in components(stack) if isinstance(part, Kafka)]
    assert [(b.name, b.endpoint) for b in brokers] == [("kafka", "127.0.0.1:9092")]
    assert (brokers[0].data, brokers[0].config) == (
        tmp_path / "kafka" / "data",
        tmp_path / "kafka" / "server.properties",
    )
    config = rendered(brokers[0])
    assert config["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    replication = {key: value for key, value in config.items() if "replication" in key}
    assert set(replication.values()) == {"1"}
    assert config["min.insync.replicas"] == config["transaction.state.log.min.isr"] == "1"


def test_three_brokers_each_have_their_ports_and_data_and_replicate_three_times(
    tmp_path: Path,
) -> None:
    stack = StackSettings(dir=tmp_path, kafka_brokers=3, kafka_port=19092)
    brokers = [part for part in components(stack) if isinstance(part, Kafka)]
    assert [b.name for b in brokers] == ["kafka-1", "kafka-2", "kafka-3"]
    assert stack.kafka_bootstrap == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    ports = [port for broker in brokers for port in broker.ports]
    assert len(set(ports)) == 6
    assert len({broker.data for broker in brokers}) == 3
    configs = [rendered(broker) for broker in brokers]
    assert [c["node.id"] for c in configs] == ["1", "2", "3"]
    assert {c["controller.quorum.bootstrap.servers"] for c in configs} == {
        "127.0.0.1:9093,127.0.0.1:9095,127.0.0.1:9097"
    }
    for config in configs:
        assert config["default.replication.factor"] == "3"
        assert config["offsets.topic.replication.factor"] == "3"
        assert config["transaction.state.log.replication.factor"] == "3"
        assert config["min.insync.replicas"] == config["transaction.state.log.min.isr"] == "2"
    # Every node is formatted with the same cluster id and first voters.
    assert KraftCluster.of(stack) == KraftCluster.of(stack)
    voters = KraftCluster.of(stack).initial_controllers.split(",")
    assert [voter.split("@")[0] for voter in voters] == ["1", "2", "3"]


def test_kafka_connect_reaches_every_broker_and_replicates_its_topics_as_they_do(
    tmp_path: Path,
) -> None:
    stack = StackSettings(dir=tmp_path, kafka_brokers=3)
    connect = Connect(stack, Kafka(stack, tmp_path), PostgresSettings(), tmp_path)
    connect.prepare()
    config = properties(connect.config)
    assert config["bootstrap.servers"] == stack.kafka_bootstrap
    for topic in ("config", "offset", "status"):
        assert config[f"{topic}.storage.replication.factor"] == "3"
