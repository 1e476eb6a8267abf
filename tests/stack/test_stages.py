"""processor and converter on the local stack: outputs, concurrency, dead letters."""

from __future__ import annotations

import time
import uuid

import orjson

from jobflow.core.models import Job, JobDone
from jobflow.core.settings import KafkaSettings
from jobflow.core.timestamps import now_ns
from tests.stack.topics import produce, read_until, value_of, with_key


def _job(sleep_ms: int) -> Job:
    return Job(id=str(uuid.uuid4()), create_date=now_ns(), sleep=sleep_ms, data="ab")


def test_processor_reports_each_job_done_after_its_sleep(kafka: KafkaSettings) -> None:
    job = _job(300)
    produce(kafka, kafka.receiver_topic, [(job.id.encode(), job.to_json())])
    (message,) = read_until(kafka, kafka.processor_topic, lambda m: len(m) == 1, with_key(job.id))
    done = JobDone.from_json(value_of(message))
    assert list(orjson.loads(value_of(message))) == ["id", "status", "create_date", "finish_date"]
    assert (done.id, done.status, done.create_date) == (job.id, "finish", job.create_date)
    assert done.finish_date - job.create_date >= 300_000_000


def test_processor_runs_jobs_concurrently(kafka: KafkaSettings) -> None:
    # 100 jobs of 2 s each: one after the other that is 200 s; concurrently, a few seconds.
    jobs = [_job(2000) for _ in range(100)]
    started = time.monotonic()
    produce(kafka, kafka.receiver_topic, [(j.id.encode(), j.to_json()) for j in jobs])
    found = read_until(
        kafka, kafka.processor_topic, lambda m: len(m) == len(jobs), with_key(*(j.id for j in jobs))
    )
    assert len(found) == len(jobs)
    assert time.monotonic() - started < 60


def test_converter_writes_the_sink_formats(kafka: KafkaSettings) -> None:
    done = JobDone(
        id=str(uuid.uuid4()),
        create_date="2024-01-27T12:34:50.594423357Z",
        finish_date="2024-01-27T12:34:50.704464721Z",
    )
    produce(kafka, kafka.processor_topic, [(done.id.encode(), done.to_json())])
    (postgres,) = read_until(kafka, kafka.postgres_topic, lambda m: len(m) == 1, with_key(done.id))
    assert orjson.loads(value_of(postgres))["payload"] == {
        "id": done.id,
        "status": "finish",
        "create_date": 1706358890,
        "finish_date": 1706358890,
    }
    rows = read_until(kafka, kafka.clickhouse_topic, lambda m: len(m) == 2, with_key(done.id))
    assert [value_of(row) for row in rows] == [
        f"{done.id},create,2024-01-27T12:34:50.594423357Z".encode(),
        f"{done.id},finish,2024-01-27T12:34:50.704464721Z".encode(),
    ]


def test_undecodable_records_go_to_the_dead_letter_topic_and_the_rest_flows(
    kafka: KafkaSettings,
) -> None:
    poison_key = f"poison-{uuid.uuid4()}"
    job = _job(1)
    produce(
        kafka,
        kafka.receiver_topic,
        [(poison_key.encode(), b'{"id": "not-a-uuid"}'), (job.id.encode(), job.to_json())],
    )
    (dead,) = read_until(
        kafka, kafka.dlq_topic(kafka.receiver_topic), lambda m: len(m) == 1, with_key(poison_key)
    )
    headers = dict(dead.headers() or [])
    assert value_of(dead) == b'{"id": "not-a-uuid"}'
    assert headers["dlq.source.topic"] == kafka.receiver_topic.encode()
    assert headers["dlq.stage"] == b"processor"
    assert headers["dlq.reason"] == b"id: String should have at least 36 characters (4 error(s))"
    assert {"dlq.source.partition", "dlq.source.offset"} <= set(headers)
    assert read_until(kafka, kafka.processor_topic, lambda m: len(m) == 1, with_key(job.id))
