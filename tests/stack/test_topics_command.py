"""``python -m jobflow topics`` (the chart's topics hook Job without Strimzi) against the real
local Kafka, on topics of its own, each deleted afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource
from local.config import CONTRACTS, REPO

from jobflow.core.settings import KafkaSettings
from jobflow.topics import LIST_ATTEMPT_S
from tests.ports import free_port
from tests.stack.topics import create_topics, delete_topics

TopicsFile = Callable[..., Path]


def topics_command(
    kafka: KafkaSettings, file: Path, **settings: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobflow", "topics"],
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "TOPICS_FILE": str(file),
            **{f"TOPICS_{name.upper()}": str(value) for name, value in settings.items()},
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def admin(kafka: KafkaSettings) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka.bootstrap_servers})


@pytest.fixture
def names(kafka: KafkaSettings) -> Iterator[Callable[[str], str]]:
    """Fresh topic names, each deleted after the test whether it was made or not."""
    made: list[str] = []

    def name(suffix: str) -> str:
        made.append(f"tests-topics-{uuid.uuid4().hex[:8]}-{suffix}")
        return made[-1]

    yield name
    delete_topics(kafka, *made)


@pytest.fixture
def topics_file(tmp_path: Path) -> TopicsFile:
    def write(*topics: dict[str, object]) -> Path:
        path = tmp_path / f"topics-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(yaml.safe_dump({"topics": list(topics)}))
        return path

    return write


def described(admin: AdminClient, topic: str) -> tuple[int, int, dict[str, str]]:
    """Partitions, replicas of partition 0, and the topic configs set on the topic itself."""
    metadata = admin.list_topics(topic, timeout=10).topics[topic]
    (configs,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
    overrides = {
        name: entry.value
        for name, entry in configs.result(30).items()
        if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    }
    return len(metadata.partitions), len(metadata.partitions[0].replicas), overrides


def test_missing_topics_are_created_as_the_file_says_and_a_second_run_changes_nothing(
    kafka: KafkaSettings, admin: AdminClient, names: Callable[[str], str], topics_file: TopicsFile
) -> None:
    data, dead = names("data"), names("data.dlq")
    file = topics_file(
        {"name": data, "partitions": 3, "replicas": 1, "config": {"retention.ms": 604800000}},
        {"name": dead, "partitions": 1, "replicas": 1},
    )
    first = topics_command(kafka, file)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"created topic {data}" in first.stdout.splitlines()
    assert first.stdout.splitlines()[-1] == "done: 2 created, 0 already there"
    assert described(admin, data) == (3, 1, {"retention.ms": "604800000"})
    assert described(admin, dead) == (1, 1, {})

    second = topics_command(kafka, file)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.splitlines()[-1] == "done: 0 created, 2 already there"
    assert described(admin, data) == (3, 1, {"retention.ms": "604800000"})


def test_an_existing_topic_with_fewer_partitions_fails_the_run_and_is_left_alone(
    kafka: KafkaSettings, admin: AdminClient, names: Callable[[str], str], topics_file: TopicsFile
) -> None:
    short, wide, missing = names("short"), names("wide"), names("missing")
    create_topics(kafka, short, partitions=1)
    create_topics(kafka, wide, partitions=4)
    file = topics_file(
        {"name": short, "partitions": 3, "replicas": 1},
        {"name": wide, "partitions": 2, "replicas": 1},
        {"name": missing, "partitions": 2, "replicas": 1},
    )
    done = topics_command(kafka, file)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"failed: topic {short} has 1 partitions, the topics file says 3" in done.stdout
    # More partitions than the file's is only said.
    assert f"topic {wide} has 4 partitions, more than the file's" in done.stdout
    assert f"failed: topic {wide}" not in done.stdout
    # The missing one is made all the same; the existing ones keep their partitions.
    assert described(admin, missing)[0] == 2
    assert described(admin, short)[0] == 1
    assert described(admin, wide)[0] == 4


def test_the_replication_factor_can_be_left_to_the_brokers_or_refused_by_them(
    kafka: KafkaSettings, admin: AdminClient, names: Callable[[str], str], topics_file: TopicsFile
) -> None:
    default = names("default")
    done = topics_command(
        kafka, topics_file({"name": default, "partitions": 1, "replicas": 1}), replication_factor=-1
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The local broker's default.replication.factor is 1 (one broker).
    assert described(admin, default)[:2] == (1, 1)

    too_many = names("too-many")
    refused = topics_command(
        kafka, topics_file({"name": too_many, "partitions": 1, "replicas": 1}), replication_factor=3
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"failed: topic {too_many} not created: " in refused.stdout
    assert "replication factor" in refused.stdout.lower()
    assert too_many not in admin.list_topics(timeout=10).topics


def test_the_charts_topics_file_is_in_place_on_the_local_stack(kafka: KafkaSettings) -> None:
    """The contract file itself parses, and the local stack made exactly its topics."""
    contract = CONTRACTS / "topics.yaml"
    done = topics_command(kafka, contract)
    assert done.returncode == 0, done.stdout + done.stderr
    count = len(yaml.safe_load(contract.read_text())["topics"])
    assert done.stdout.splitlines()[-1] == f"done: 0 created, {count} already there"


def test_a_kafka_that_never_answers_fails_within_the_timeout(
    topics_file: TopicsFile, names: Callable[[str], str]
) -> None:
    unreachable = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    file = topics_file({"name": names("never"), "partitions": 1, "replicas": 1})
    # Longer than one attempt (LIST_ATTEMPT_S), so that one fails and is reported before the
    # deadline even when librdkafka takes an attempt's whole time to give up: with 3 s, an
    # attempt that did so on a busy machine ended at the deadline, unreported.
    done = topics_command(unreachable, file, timeout_s=LIST_ATTEMPT_S + 3)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"Kafka did not answer within {LIST_ATTEMPT_S + 3:.0f}s" in done.stdout
    # Each failed attempt is one line of ours, not librdkafka's lines for every reconnect.
    assert "Kafka not answering yet" in done.stdout
    assert "FAIL|rdkafka" not in done.stderr
