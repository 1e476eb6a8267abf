"""Processor throughput: one instance, a backlog of jobs, transactions per batch.

The processor under measurement runs on topics of its own (three partitions in, as the
pipeline's receiver-topic), so the stack's data is untouched. The backlog is produced first;
the rate is read from the output records' timestamps (first to last), so the process's start
does not count. The same backlog with 0 ms sleeps is measured in the same run: the ratio says
what the 100 ms sleeps cost once a batch's sleeps run concurrently.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from local.config import REPO

from jobflow.core.models import Job
from jobflow.core.timestamps import now_ns

TARGET_JOBS_PER_S = 1000


@dataclass(frozen=True)
class Throughput:
    jobs: int
    sleep_ms: int
    jobs_per_s: float
    lost: int
    duplicated: int


def _topics(bootstrap: str, *names: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
    ).values():
        future.result(30)


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


def _read_outputs(
    bootstrap: str, topic: str, expected: int, timeout_s: float
) -> list[tuple[str, int]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    found: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < expected and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is None:
                    found.append(((message.key() or b"").decode(), message.timestamp()[1]))
    finally:
        consumer.close()
    return found


def measure(bootstrap: str, jobs: int, sleep_ms: int, port: int) -> Throughput:
    suffix = uuid.uuid4().hex[:8]
    source, target = f"bench-in-{suffix}", f"bench-out-{suffix}"
    _topics(bootstrap, source, partitions=3)
    _topics(bootstrap, f"{source}.dlq", target, partitions=1)
    ids = _backlog(bootstrap, source, jobs, sleep_ms)
    environment = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_RECEIVER_TOPIC": source,
        "KAFKA_PROCESSOR_TOPIC": target,
        "PROCESSOR_GROUP_ID": f"bench-{suffix}",
        "PROCESSOR_INSTANCE_ID": f"bench-{suffix}",
        "PROCESSOR_PORT": str(port),
        "PROCESSOR_LOG_LEVEL": "WARNING",
    }
    processor = subprocess.Popen(
        [sys.executable, "-m", "jobflow", "processor"],
        env=environment,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        outputs = _read_outputs(bootstrap, target, jobs, timeout_s=60 + jobs * sleep_ms / 100_000)
    finally:
        processor.terminate()
        processor.wait(timeout=60)
        AdminClient({"bootstrap.servers": bootstrap}).delete_topics(
            [source, f"{source}.dlq", target]
        )
    seen = [job for job, _ in outputs]
    stamps = sorted(stamp for _, stamp in outputs)
    span_s = (stamps[-1] - stamps[0]) / 1000 if len(stamps) > 1 else float("inf")
    return Throughput(
        jobs=jobs,
        sleep_ms=sleep_ms,
        jobs_per_s=round((len(stamps) - 1) / span_s, 1) if span_s > 0 else 0.0,
        lost=len(ids - set(seen)),
        duplicated=len(seen) - len(set(seen)),
    )
