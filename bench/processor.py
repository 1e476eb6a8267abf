"""Processor throughput: one instance, a backlog of jobs, transactions per batch.

The processor under measurement runs on topics of its own (three partitions in, as the
pipeline's receiver-topic), so the stack's data is untouched. The backlog is produced first;
the rate is read from the output records' timestamps (first to last), so the process's start
does not count. The same backlog with 0 ms sleeps is measured in the same run: the ratio says
what the 100 ms sleeps cost once a batch's sleeps run concurrently.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from tests.stack.processes import service_process
from tests.stack.topics import create_topics, read_until

from jobflow.core.models import Job
from jobflow.core.settings import KafkaSettings
from jobflow.core.timestamps import now_ns

TARGET_JOBS_PER_S = 1000


@dataclass(frozen=True)
class Throughput:
    jobs: int
    sleep_ms: int
    jobs_per_s: float
    lost: int
    duplicated: int


def _backlog(bootstrap: str, topic: str, count: int, sleep_ms: int) -> set[str]:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    ids = set()
    for _ in range(count):
        job = Job(id=str(uuid.uuid4()), create_date=now_ns(), sleep=sleep_ms, data="")
        producer.produce(topic, key=job.id.encode(), value=job.to_json())
        producer.poll(0)
        ids.add(str(job.id))
    if producer.flush(60) != 0:
        raise RuntimeError("the backlog was not written")
    return ids


def measure(bootstrap: str, jobs: int, sleep_ms: int) -> Throughput:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    suffix = uuid.uuid4().hex[:8]
    source, target = f"bench-in-{suffix}", f"bench-out-{suffix}"
    create_topics(kafka, source, partitions=3)
    create_topics(kafka, f"{source}.dlq", target)
    ids = _backlog(bootstrap, source, jobs, sleep_ms)
    environment = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_RECEIVER_TOPIC": source,
        "KAFKA_PROCESSOR_TOPIC": target,
        "PROCESSOR_GROUP_ID": f"bench-{suffix}",
        "PROCESSOR_INSTANCE_ID": f"bench-{suffix}",
        "PROCESSOR_LOG_LEVEL": "WARNING",
    }
    try:
        with service_process("processor", environment):
            outputs = read_until(
                kafka,
                target,
                lambda found: len(found) >= jobs,
                lambda _: True,
                timeout_s=60 + jobs * sleep_ms / 100_000,
            )
    finally:
        AdminClient({"bootstrap.servers": bootstrap}).delete_topics(
            [source, f"{source}.dlq", target]
        )
    seen = [(message.key() or b"").decode() for message in outputs]
    stamps = sorted(message.timestamp()[1] for message in outputs)
    span_s = (stamps[-1] - stamps[0]) / 1000 if len(stamps) > 1 else float("inf")
    return Throughput(
        jobs=jobs,
        sleep_ms=sleep_ms,
        jobs_per_s=round((len(stamps) - 1) / span_s, 1) if span_s > 0 else 0.0,
        lost=len(ids - set(seen)),
        duplicated=len(seen) - len(set(seen)),
    )
