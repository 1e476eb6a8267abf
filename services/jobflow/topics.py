"""``python -m jobflow topics``: create the pipeline's topics in a Kafka jobflow does not manage.

The chart runs it as a pre-install and pre-upgrade hook Job when ``kafka.strimzi.enabled`` is
false (with Strimzi, KafkaTopic resources do the same); the local stack creates its topics with
the same code. The topics are ``charts/jobflow/files/topics.yaml``, mounted at ``TOPICS_FILE``.

Topics that are missing are created with the file's partitions and config. A topic that exists
is left as it is: its data and its config are the cluster owner's, and adding partitions moves
keys to other partitions, which nothing should do behind anybody's back. One with fewer
partitions than the file says is reported, and the command exits 1: the processor and the
converter could not scale to the replicas the chart allows. One with more is only reported.

Exits 0 when every topic is in place, 1 when a topic could not be created or has too few
partitions, 2 when Kafka did not answer within ``TOPICS_TIMEOUT_S``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata
from confluent_kafka.cimpl import NewTopic
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobflow.core.settings import KafkaSettings

Report = Callable[[str], None]
# How long one metadata request may take before it is tried again, while Kafka starts.
LIST_ATTEMPT_S = 5.0


class TopicSpec(BaseModel):
    """One topic of the topics file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    partitions: int = Field(ge=1)
    # -1 leaves it to the brokers' default.replication.factor.
    replicas: int = Field(ge=-1)
    config: dict[str, str | int] = Field(default_factory=dict)


class TopicsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topics: list[TopicSpec]


def load_topics(path: Path) -> list[TopicSpec]:
    """The topics of a topics file (charts/jobflow/files/topics.yaml's format)."""
    return TopicsFile.model_validate(yaml.safe_load(path.read_text())).topics


class TopicsSettings(BaseSettings):
    """Settings of the topics command (``TOPICS_`` prefix); Kafka is reached with ``KAFKA_*``."""

    model_config = SettingsConfigDict(env_prefix="TOPICS_", extra="ignore")

    file: Path = Field(description="The topics file (charts/jobflow/files/topics.yaml).")
    replication_factor: int | None = Field(
        default=None,
        ge=-1,
        description=(
            "Replication factor of each topic created, in place of the file's replicas; -1 "
            "leaves it to the brokers' default.replication.factor."
        ),
    )
    timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="How long Kafka may take to answer, and to create the topics.",
    )


class KafkaUnreachableError(Exception):
    """Kafka did not answer within the timeout."""


@dataclass
class TopicsOutcome:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _metadata(admin: AdminClient, deadline: float, report: Report) -> ClusterMetadata:
    """The cluster's topics; a Kafka that does not answer yet (starting, a pod's network not
    ready) is asked again until the deadline, and each failed attempt is reported."""
    while True:
        remaining = deadline - time.monotonic()
        try:
            return admin.list_topics(timeout=max(0.1, min(LIST_ATTEMPT_S, remaining)))
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if time.monotonic() >= deadline:
                raise KafkaUnreachableError(error.str()) from exc
            report(f"Kafka not answering yet: {error.str()}")
            # A refusal can come at once: no faster than one attempt a second.
            time.sleep(1.0)


def ensure_topics(
    admin: AdminClient,
    topics: list[TopicSpec],
    report: Report,
    timeout_s: float,
    replication_factor: int | None = None,
) -> TopicsOutcome:
    """Create the topics that are missing, and say what is wrong with those that exist."""
    deadline = time.monotonic() + timeout_s
    existing = _metadata(admin, deadline, report).topics
    outcome = TopicsOutcome()
    for topic in topics:
        if topic.name not in existing:
            continue
        outcome.existing.append(topic.name)
        partitions = len(existing[topic.name].partitions)
        if partitions < topic.partitions:
            outcome.problems.append(
                f"topic {topic.name} has {partitions} partitions, the topics file says "
                f"{topic.partitions}: add partitions (kafka-topics.sh --alter) or lower the "
                "replicas of the services that read it"
            )
        elif partitions > topic.partitions:
            report(f"topic {topic.name} has {partitions} partitions, more than the file's")
    wanted = [
        NewTopic(
            topic.name,
            num_partitions=topic.partitions,
            replication_factor=topic.replicas if replication_factor is None else replication_factor,
            config={key: str(value) for key, value in topic.config.items()},
        )
        for topic in topics
        if topic.name not in existing
    ]
    if not wanted:
        return outcome
    remaining = max(1.0, deadline - time.monotonic())
    futures = admin.create_topics(wanted, operation_timeout=remaining, request_timeout=remaining)
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            # Another client made it in the meantime: it is in place all the same.
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                outcome.existing.append(name)
                continue
            outcome.problems.append(f"topic {name} not created: {error.str()}")
            continue
        outcome.created.append(name)
        report(f"created topic {name}")
    return outcome


def report_line(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    settings = TopicsSettings()
    kafka = KafkaSettings()
    topics = load_topics(settings.file)
    report_line(f"{len(topics)} topics of {settings.file} on {kafka.bootstrap_servers}")
    # librdkafka's own lines would repeat each refused connection many times a second while
    # Kafka is away; every failed attempt is reported once instead, with its reason.
    admin = AdminClient({**kafka.client_config(), "log_level": 0})
    try:
        outcome = ensure_topics(
            admin, topics, report_line, settings.timeout_s, settings.replication_factor
        )
    except KafkaUnreachableError as exc:
        report_line(f"Kafka did not answer within {settings.timeout_s:.0f}s: {exc}")
        return 2
    for problem in outcome.problems:
        report_line(f"failed: {problem}")
    if outcome.problems:
        return 1
    report_line(f"done: {len(outcome.created)} created, {len(outcome.existing)} already there")
    return 0
