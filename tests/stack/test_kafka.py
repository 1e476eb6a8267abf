"""The local Kafka broker as the pipeline needs it: transactions work on a single node."""

from __future__ import annotations

import uuid

from confluent_kafka import Producer

from jobflow.core.settings import KafkaSettings
from tests.stack.topics import create_topics, read_until, value_of


def test_transactions_commit_and_abort_on_the_single_node(kafka: KafkaSettings) -> None:
    topic = f"test-transactions-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, topic)
    producer = Producer(
        {"bootstrap.servers": kafka.bootstrap_servers, "transactional.id": f"test-{topic}"}
    )
    # Blocks forever when the transaction log's replication factor exceeds the broker count.
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"aborted")
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed")
    producer.commit_transaction(30)
    seen = read_until(kafka, topic, lambda found: len(found) >= 1, lambda _: True, timeout_s=15)
    assert [value_of(message) for message in seen] == [b"committed"]
