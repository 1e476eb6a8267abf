"""A stage whose partitions cannot start fetching says so in its liveness probe.

A read_committed consumer starts a partition only once its committed offset is stable: while
another producer's transaction holds offsets of the group open, the broker answers
UNSTABLE_OFFSET_COMMIT and librdkafka asks again, silently, until it is completed. After a
broker restart, Kafka 4.3 can complete a transaction without writing its markers to a partition
that had no leader at that moment (docs/operations.md); its offsets then stay pending for good,
and a stage restarted on them waited, live and ready, for ever.

Here a real processor process and a real broker: another transactional producer commits offsets
of the processor's group in a transaction left open, as that one was.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from jobflow.core.models import Job
from jobflow.core.settings import KafkaSettings
from jobflow.core.timestamps import now_ns
from tests.polling import eventually
from tests.stack.processes import service_process
from tests.stack.topics import produce, read_until, stage_topics, with_key

START_TIMEOUT_S = 10


@contextmanager
def offsets_held_open(kafka: KafkaSettings, group: str, topic: str) -> Iterator[Callable[[], None]]:
    """A transaction that commits offsets of ``group`` on ``topic`` and stays open (the broker
    would abort it after two minutes); yields what aborts it."""
    producer = Producer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "transactional.id": f"tests-held-open-{uuid.uuid4()}",
            "transaction.timeout.ms": 120_000,
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    member = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": group})
    try:
        producer.send_offsets_to_transaction(
            [TopicPartition(topic, 0, 0)], member.consumer_group_metadata(), 30
        )
    finally:
        member.close()
    aborted = False

    def abort() -> None:
        nonlocal aborted
        if not aborted:
            producer.abort_transaction(30)
            aborted = True

    try:
        yield abort
    finally:
        abort()


@pytest.mark.timeout(180)
def test_a_stage_whose_committed_offsets_stay_unstable_fails_liveness_until_they_are_settled(
    kafka: KafkaSettings,
) -> None:
    source, target = stage_topics(kafka, "unstable")
    job = Job(id=str(uuid.uuid4()), create_date=now_ns(), sleep=0, data="")
    produce(kafka, source, [(job.id.encode(), job.to_json())])
    group = f"{source}-group"
    environment = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_RECEIVER_TOPIC": source,
        "KAFKA_PROCESSOR_TOPIC": target,
        "PROCESSOR_GROUP_ID": group,
        "PROCESSOR_PARTITION_START_TIMEOUT_S": str(START_TIMEOUT_S),
    }
    with (
        offsets_held_open(kafka, group, source) as settle,
        service_process("processor", environment) as processor,
    ):

        def dead() -> str | None:
            answer = processor.get("/healthz")
            return answer.text if answer is not None and answer.status_code == 503 else None

        # Regression: /healthz answered ok for as long as the transaction stayed open.
        reason = eventually(dead, 60, "the processor stayed live with its partition stuck")
        assert f"{source}[0]" in reason
        assert f"not fetching for over {START_TIMEOUT_S} s" in reason
        assert processor.metric(f'jobflow_records_consumed_total{{topic="{source}"}}') == 0

        settle()
        processor.until_ok("/healthz", 30)
        done = read_until(kafka, target, lambda found: bool(found), with_key(job.id), 30)
        assert len(done) == 1
