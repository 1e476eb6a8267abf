"""Processor throughput: a backlog of jobs, one to three instances in one group.

The processors under measurement run on topics of their own (three partitions in, as the
pipeline's receiver-topic), so the stack's data is untouched. The backlog is produced first,
so the load is above what any number of instances can take; the rate is read from the output
records' timestamps (first to last), so the processes' start does not count. The same backlog
with 0 ms sleeps is measured in the same run: the ratio says what the 100 ms sleeps cost once
they run concurrently. Scaling runs the 100 ms backlog through 1, 2 and 3 instances.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from tests.stack.processes import service_process
from tests.stack.topics import (
    create_topics,
    delete_topics,
    partition_end_offsets,
    read_until,
    records_since,
)

from bench.measures import rss_mib
from jobflow.core.models import Job
from jobflow.core.settings import KafkaSettings
from jobflow.core.timestamps import now_ns


@dataclass(frozen=True)
class Throughput:
    jobs: int
    sleep_ms: int
    instances: int
    jobs_per_s: float
    lost: int
    duplicated: int
    rss_mib: list[float] = field(default_factory=list)


def backlog(bootstrap: str, topic: str, count: int, sleep_ms: int) -> dict[str, int]:
    """``count`` jobs of ``sleep_ms`` (see jobs_backlog); each one's id and create_date (ns)."""
    jobs = jobs_backlog(bootstrap, topic, [sleep_ms] * count)
    return {job_id: job.create_date for job_id, job in jobs.items()}


def jobs_backlog(bootstrap: str, topic: str, sleeps_ms: Sequence[int]) -> dict[str, Job]:
    """A job for each of ``sleeps_ms``, made visible to the processors (read_committed) all at
    once: written in one transaction, so that the processors meet a full backlog, not the rate
    it is written at. Returns the jobs by id, once the transaction is committed."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "transactional.id": f"bench-backlog-{uuid.uuid4()}",
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    created: dict[str, Job] = {}
    for sleep_ms in sleeps_ms:
        job = Job(id=str(uuid.uuid4()), create_date=now_ns(), sleep=sleep_ms, data="")
        producer.produce(topic, key=job.id.encode(), value=job.to_json())
        producer.poll(0)
        created[str(job.id)] = job
    producer.commit_transaction(60)
    return created


@contextmanager
def own_topics(kafka: KafkaSettings) -> Iterator[tuple[str, str]]:
    """Fresh input and output topics laid out as the pipeline's (three partitions in, and the
    input's dead-letter topic), so the stack's data is untouched; deleted afterwards."""
    suffix = uuid.uuid4().hex[:8]
    source, target = f"bench-in-{suffix}", f"bench-out-{suffix}"
    create_topics(kafka, source, partitions=3)
    create_topics(kafka, f"{source}{kafka.dlq_suffix}", target)
    try:
        _wait_for_leaders(kafka, source, target)
        yield source, target
    finally:
        delete_topics(kafka, source, f"{source}{kafka.dlq_suffix}", target)


def _wait_for_leaders(kafka: KafkaSettings, *topics: str, timeout_s: float = 30) -> None:
    """Until every partition of new ``topics`` answers for its offsets: a broker that has just
    created a topic answers NOT_LEADER_FOR_PARTITION for a moment."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            partition_end_offsets(kafka, *topics)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def processor_environment(bootstrap: str, source: str, target: str, group: str) -> dict[str, str]:
    """The environment of a processor of its own: ``source`` to ``target`` in ``group``."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_RECEIVER_TOPIC": source,
        "KAFKA_PROCESSOR_TOPIC": target,
        "PROCESSOR_GROUP_ID": group,
        "PROCESSOR_LOG_LEVEL": "WARNING",
    }


def wait_for_members(bootstrap: str, group: str, members: int, timeout_s: float = 60) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        described = admin.describe_consumer_groups([group])[group].result(timeout=10)
        if len(described.members) == members and str(described.state).endswith("STABLE"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"group {group} did not settle on {members} members in {timeout_s:.0f}s")


def measure(bootstrap: str, jobs: int, sleep_ms: int, instances: int = 1) -> Throughput:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    with own_topics(kafka) as (source, target), ExitStack() as running:
        start = partition_end_offsets(kafka, target)
        group = f"bench-{uuid.uuid4().hex[:8]}"
        environment = processor_environment(bootstrap, source, target, group)
        processors = [
            running.enter_context(
                service_process("processor", {**environment, "PROCESSOR_INSTANCE_ID": f"bench-{n}"})
            )
            for n in range(instances)
        ]
        # All instances share the partitions before the backlog arrives: what is measured
        # is the group's rate, not one instance's head start.
        wait_for_members(bootstrap, group, instances)
        ids = backlog(bootstrap, source, jobs, sleep_ms)
        outputs = read_until(
            kafka,
            target,
            lambda found: len({message.key() for message in found}) >= jobs,
            lambda _: True,
            timeout_s=60 + jobs * sleep_ms / 100_000,
        )
        rss = [rss_mib(processor.process.pid) for processor in processors]
        # All of it, to its end: a duplicate committed after the last new job counts too.
        seen = Counter(key.decode() for key, _ in records_since(kafka, start, target))
    stamps = sorted(message.timestamp()[1] for message in outputs)
    span_s = (stamps[-1] - stamps[0]) / 1000 if len(stamps) > 1 else float("inf")
    return Throughput(
        jobs=jobs,
        sleep_ms=sleep_ms,
        instances=instances,
        jobs_per_s=round((len(stamps) - 1) / span_s, 1) if span_s > 0 else 0.0,
        lost=len(ids.keys() - seen.keys()),
        duplicated=sum(count - 1 for count in seen.values()),
        rss_mib=rss,
    )
