"""The sinks' metrics on the real local stack: the lag exporter's consumer group lag against
Kafka's own consumer group tool, and Kafka Connect's states (its JMX exporter) against Connect's
REST API, read through the alert rule that watches them on the real Prometheus.

Each test works on a topic, a consumer group or a connector of its own, removed afterwards.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import yaml
from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from local.components import Connect
from local.config import CONTRACTS, StackSettings
from prometheus_client.parser import text_string_to_metric_families

from jobflow.core.settings import KafkaSettings
from tests.polling import eventually
from tests.ports import free_port
from tests.stack.topics import create_topics, delete_topics

# run by make observability-check too (tests/targets.mk)
pytestmark = pytest.mark.observability


def query(stack: StackSettings, expr: str) -> list[dict[str, str]]:
    """The label sets of the expression's series, now, on the local Prometheus."""
    answer = httpx.get(
        f"{stack.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10
    ).json()
    assert answer["status"] == "success", answer
    return [series["metric"] for series in answer["data"]["result"]]


def delete_groups(kafka: KafkaSettings, *groups: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    existing = {g.group_id for g in admin.list_consumer_groups().result(30).valid}
    gone = [group for group in groups if group in existing]
    if gone:
        for future in admin.delete_consumer_groups(gone).values():
            future.result(30)


@pytest.fixture
def own_topic(kafka: KafkaSettings) -> Iterator[str]:
    name = f"tests-lag-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, name, partitions=2)
    yield name
    delete_groups(kafka, name)
    delete_topics(kafka, name)


def consumer_group_tool(stack: StackSettings, group: str) -> list[list[str]]:
    """The rows of Kafka's kafka-consumer-groups.sh --describe: GROUP TOPIC PARTITION
    CURRENT-OFFSET LOG-END-OFFSET LAG ..."""
    described = subprocess.run(  # noqa: S603 - the java and the jars of the local Kafka
        [  # noqa: S607
            "java",
            "-Xmx128m",
            "-cp",
            f"{stack.path('java', 'lib')}/*",
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            "--bootstrap-server",
            stack.kafka_bootstrap,
            "--describe",
            "--group",
            group,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line.split() for line in described.stdout.splitlines() if line.startswith(group)]


def exported_lag(stack: StackSettings, group: str) -> dict[tuple[str, str], float]:
    text = httpx.get(f"http://{stack.host}:{stack.lag_exporter_port}/metrics", timeout=10).text
    return {
        (sample.labels["topic"], sample.labels["partition"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "kafka_consumergroup_lag"
        for sample in family.samples
        if sample.labels["consumergroup"] == group
    }


def test_the_lag_exporter_reports_what_kafkas_own_consumer_group_tool_does(
    local_stack: StackSettings, kafka: KafkaSettings, own_topic: str
) -> None:
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for partition, count in ((0, 10), (1, 4)):
        for n in range(count):
            producer.produce(own_topic, value=str(n).encode(), partition=partition)
    assert producer.flush(10) == 0
    # A group (named after the topic) that committed 3 on partition 0 and nothing on 1.
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    committed = ConsumerGroupTopicPartitions(own_topic, [TopicPartition(own_topic, 0, 3)])
    for future in admin.alter_consumer_group_offsets([committed]).values():
        future.result(30)

    rows = consumer_group_tool(local_stack, own_topic)
    assert [row[1:6] for row in rows] == [[own_topic, "0", "3", "10", "7"]]
    # Kafka Exporter's meaning: -1 on a partition of the topic without a commit of the group.
    assert exported_lag(local_stack, own_topic) == {(own_topic, "0"): 7, (own_topic, "1"): -1}

    def scraped() -> list[dict[str, str]]:
        return query(local_stack, f'kafka_consumergroup_lag{{consumergroup="{own_topic}"}} >= 0')

    (series,) = eventually(scraped, 30, "Prometheus never scraped the group's lag")
    assert (series["job"], series["topic"], series["partition"]) == (
        "lag-exporter",
        own_topic,
        "0",
    )


def connector_alert(connector: str) -> str:
    """JobflowConnectorNotRunning's expression, for ``connector`` in place of the pipeline's."""
    rules = yaml.safe_load((CONTRACTS / "monitoring" / "rules.yaml").read_text())
    (rule,) = (
        rule
        for group in rules["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "JobflowConnectorNotRunning"
    )
    expr = str(rule["expr"])
    assert f'"{Connect.connector}"' in expr
    return expr.replace(f'"{Connect.connector}"', f'"{connector}"')


@pytest.fixture
def connect(local_stack: StackSettings) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_stack.connect_url, timeout=30) as client:
        yield client


@pytest.fixture
def failing_connector(kafka: KafkaSettings, connect: httpx.Client) -> Iterator[str]:
    """The contract's connector under a name of its own, on a topic of its own, pointed at a
    port where no database answers: its task fails as it starts."""
    name = f"tests-connector-{uuid.uuid4().hex[:8]}"
    topic = f"{name}-input"
    create_topics(kafka, topic)
    contract = orjson.loads((CONTRACTS / "connect" / "postgres-connector.json").read_bytes())
    config = {
        **contract,
        "topics": topic,
        "errors.deadletterqueue.topic.name": f"{topic}.dlq",
        "connection.url": f"jdbc:postgresql://127.0.0.1:{free_port()}/postgres",
        "connection.username": "nobody",
        "connection.password": "nothing",
    }
    assert connect.put(f"/connectors/{name}/config", json=config).is_success
    yield name
    connect.delete(f"/connectors/{name}")
    delete_topics(kafka, topic, f"{topic}.dlq")
    delete_groups(kafka, f"connect-{name}")


def test_the_connector_alert_reads_connects_states_on_the_real_prometheus(
    local_stack: StackSettings, connect: httpx.Client, failing_connector: str
) -> None:
    """The rule's condition (its `for` is promtool's to test): a failed task, named; a paused
    connector, once; a deleted one, missing; the pipeline's own running connector, nothing."""
    alert = connector_alert(failing_connector)

    def status() -> dict[str, Any]:
        answer = connect.get(f"/connectors/{failing_connector}/status")
        return answer.json() if answer.is_success else {}

    def task_failed() -> bool:
        tasks = status().get("tasks", [])
        return [task["state"] for task in tasks] == ["FAILED"]

    eventually(task_failed, 60, "the connector's task never failed")
    assert status()["connector"]["state"] == "RUNNING"
    # Until Prometheus has scraped the new connector, the rule finds it missing.
    failed = {"connector": failing_connector, "task": "0", "status": "failed"}
    eventually(lambda: query(local_stack, alert) == [failed], 60, f"not {failed} alone")

    assert connect.put(f"/connectors/{failing_connector}/pause").is_success
    eventually(lambda: status()["connector"]["state"] == "PAUSED", 30, "never paused")
    paused = {"connector": failing_connector, "status": "paused"}
    eventually(lambda: query(local_stack, alert) == [paused], 60, f"not {paused} alone")

    assert connect.delete(f"/connectors/{failing_connector}").is_success
    missing = {"connector": failing_connector, "status": "missing"}
    eventually(lambda: query(local_stack, alert) == [missing], 60, f"not {missing}")

    assert query(local_stack, connector_alert(Connect.connector)) == []
