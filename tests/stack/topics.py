"""Reading and writing the pipeline's topics directly, to check what services produce."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Literal

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from jobflow.core.settings import KafkaSettings


def produce(kafka: KafkaSettings, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    # Idempotent: a retried send must not write a record twice, since tests count records.
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "enable.idempotence": True})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0


def partition_end_offsets(kafka: KafkaSettings, *topics: str) -> dict[TopicPartition, int]:
    """Each partition's high watermark (where the next record will be written)."""
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "tests-offsets"})
    try:
        return {
            TopicPartition(topic, p): consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=10
            )[1]
            for topic in topics
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
        }
    finally:
        consumer.close()


Isolation = Literal["read_committed", "read_uncommitted"]


def records_since(
    kafka: KafkaSettings,
    start: dict[TopicPartition, int],
    topic: str,
    isolation: Isolation = "read_committed",
) -> list[tuple[bytes, bytes]]:
    """(key, value) of every committed record of ``topic`` from ``start`` to its current end
    (or of every record, committed or not, read_uncommitted)."""
    return [
        (message.key() or b"", message.value() or b"")
        for message in messages_since(kafka, start, topic, isolation)
    ]


def messages_since(
    kafka: KafkaSettings,
    start: dict[TopicPartition, int],
    topic: str,
    isolation: Isolation = "read_committed",
) -> list[Message]:
    """Every committed record of ``topic`` from ``start`` to its current end (or every record,
    read_uncommitted)."""
    end = partition_end_offsets(kafka, topic)
    assignment = [
        TopicPartition(tp.topic, tp.partition, offset)
        for tp, offset in start.items()
        if tp.topic == topic and end[tp] > offset
    ]
    if not assignment:
        return []
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"tests-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    found: list[Message] = []
    try:
        consumer.assign(assignment)
        remaining = {tp.partition for tp in assignment}
        deadline = time.monotonic() + 60
        while remaining and time.monotonic() < deadline:
            found += [m for m in consumer.consume(1000, 0.5) if m.error() is None]
            # Transaction markers take offsets too: done when the position reaches the end.
            for tp in consumer.position([TopicPartition(topic, p) for p in remaining]):
                if tp.offset >= end[TopicPartition(topic, tp.partition)]:
                    remaining.discard(tp.partition)
        assert not remaining, f"{topic}: partitions {sorted(remaining)} not read to the end"
    finally:
        consumer.close()
    return found


def end_offsets(kafka: KafkaSettings, topic: str) -> int:
    """The sum of the topic's high watermarks: grows by one with every record written."""
    return sum(partition_end_offsets(kafka, topic).values())


def read_until(
    kafka: KafkaSettings,
    topic: str,
    done: Callable[[list[Message]], bool],
    keep: Callable[[Message], bool],
    timeout_s: float = 60.0,
) -> list[Message]:
    """Read ``topic`` from the start, keeping matching records, until ``done`` or timeout."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"tests-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    kept: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not done(kept) and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() is None and keep(message):
                    kept.append(message)
    finally:
        consumer.close()
    return kept


def value_of(message: Message) -> bytes:
    value = message.value()
    assert isinstance(value, bytes)
    return value


def with_key(*keys: str) -> Callable[[Message], bool]:
    wanted = {key.encode() for key in keys}
    return lambda message: message.key() in wanted


def create_topics(
    kafka: KafkaSettings, *names: str, partitions: int = 1, config: dict[str, str] | None = None
) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, config=config or {}) for name in names]
    )
    for future in futures.values():
        future.result(timeout=30)


def stage_topics(kafka: KafkaSettings, name: str) -> tuple[str, str]:
    """A stage's input topic (with its dead-letter topic) and output topic, new, named after
    ``name``: ``(input, output)``."""
    suffix = uuid.uuid4().hex[:8]
    source, target = f"test-{name}-in-{suffix}", f"test-{name}-out-{suffix}"
    create_topics(kafka, source, f"{source}.dlq", target)
    return source, target


def delete_topics(kafka: KafkaSettings, *names: str) -> None:
    """Delete those of ``names`` that exist."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    existing = admin.list_topics(timeout=10).topics
    gone = [name for name in names if name in existing]
    if gone:
        for future in admin.delete_topics(gone).values():
            future.result(30)


def committed_offsets(kafka: KafkaSettings, group: str, topic: str) -> int:
    """The sum of ``group``'s committed offsets on ``topic`` (0 for a partition never committed)."""
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return sum(max(tp.offset, 0) for tp in committed)
    finally:
        consumer.close()
