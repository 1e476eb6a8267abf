"""The benchmark's clock of when a JobDone becomes visible downstream notes each record as it
arrives, not when a batch of them fills or its poll times out."""

from __future__ import annotations

import statistics
import time
import uuid

from bench.pipeline import ArrivalClock
from confluent_kafka import Producer

from jobflow.core.models import JobDone
from jobflow.core.settings import KafkaSettings
from jobflow.core.timestamps import now_ns
from tests.stack.topics import create_topics, delete_topics, partition_end_offsets


def test_a_record_is_noted_within_milliseconds_of_its_write(kafka: KafkaSettings) -> None:
    topic = f"test-arrivals-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, topic)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "linger.ms": 0})
    written: dict[str, float] = {}
    try:
        with ArrivalClock(kafka, partition_end_offsets(kafka, topic)) as clock:
            time.sleep(1)  # assigned and fetching
            for _ in range(20):
                job = str(uuid.uuid4())
                done = JobDone(id=job, create_date=now_ns(), finish_date=now_ns())
                producer.produce(topic, key=job.encode(), value=done.to_json())
                producer.flush(10)
                written[job] = time.time()
                time.sleep(0.06)
            time.sleep(0.5)
        lags_ms = [(clock.arrived[job] - at) * 1000 for job, at in written.items()]
    finally:
        delete_topics(kafka, topic)
    # Held back until its 50 ms poll timed out, a record waited 25 ms on average.
    assert statistics.median(lags_ms) < 15, lags_ms
