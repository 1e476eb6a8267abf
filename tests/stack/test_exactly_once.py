"""A stage's outputs and its input offsets are committed in one Kafka transaction: whatever
happens to a processor, a read_committed reader of its output sees every job exactly once.
Instances join and leave the group without holding it up.

The processors under test run on topics of their own, so that the stack's data is untouched.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter

import orjson
import pytest
from bench.processor import wait_for_members
from confluent_kafka import KafkaException, Producer

from jobflow.core.models import MAX_SLEEP_MS, Job
from jobflow.core.settings import KafkaSettings
from jobflow.core.timestamps import now_ns
from tests.polling import eventually
from tests.stack.processes import ServiceProcess, service_process
from tests.stack.topics import (
    committed_offsets,
    create_topics,
    partition_end_offsets,
    produce,
    read_until,
    records_since,
)

JOBS = 3000


@pytest.fixture
def isolated(kafka: KafkaSettings) -> dict[str, str]:
    """Topics (three partitions in) and a consumer group of its own for the processors."""
    suffix = uuid.uuid4().hex[:8]
    source, target = f"test-eos-in-{suffix}", f"test-eos-out-{suffix}"
    create_topics(kafka, source, partitions=3)
    create_topics(kafka, f"{source}.dlq", target)
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_RECEIVER_TOPIC": source,
        "KAFKA_PROCESSOR_TOPIC": target,
        "PROCESSOR_GROUP_ID": f"test-eos-{suffix}",
        "PROCESSOR_MAX_IN_FLIGHT": "200",
    }


def load(kafka: KafkaSettings, topic: str, count: int = JOBS, sleep_ms: int = 20) -> list[str]:
    work = [
        Job(id=str(uuid.uuid4()), create_date=now_ns(), sleep=sleep_ms, data="")
        for _ in range(count)
    ]
    produce(kafka, topic, [(job.id.encode(), job.to_json()) for job in work])
    return [str(job.id) for job in work]


def load_into(kafka: KafkaSettings, topic: str, partition: int, sleeps_ms: list[int]) -> list[Job]:
    """Jobs written in this order into one ``partition`` of ``topic``."""
    work = [Job(id=str(uuid.uuid4()), create_date=now_ns(), sleep=ms, data="") for ms in sleeps_ms]
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "enable.idempotence": True})
    for job in work:
        producer.produce(topic, key=job.id.encode(), value=job.to_json(), partition=partition)
    assert producer.flush(10) == 0
    return work


def done_ids(kafka: KafkaSettings, topic: str, wanted: set[str], timeout_s: float) -> set[str]:
    """Which of ``wanted`` a read_committed reader finds done in ``topic`` within the time."""
    found = read_until(
        kafka,
        topic,
        lambda messages: {(m.key() or b"").decode() for m in messages} >= wanted,
        lambda message: (message.key() or b"").decode() in wanted,
        timeout_s,
    )
    return {(message.key() or b"").decode() for message in found}


def transactions(processor: ServiceProcess, outcome: str) -> float:
    return processor.metric(f'jobflow_transactions_total{{outcome="{outcome}",stage="processor"}}')


def assert_each_job_done_exactly_once(
    kafka: KafkaSettings, env: dict[str, str], ids: list[str]
) -> None:
    source, target = env["KAFKA_RECEIVER_TOPIC"], env["KAFKA_PROCESSOR_TOPIC"]

    def all_committed() -> bool:
        # While a transaction holds offsets not yet committed, the group's offsets are
        # "unstable" and the lookup may time out: that is not done yet.
        try:
            return committed_offsets(kafka, env["PROCESSOR_GROUP_ID"], source) == len(ids)
        except KafkaException:
            return False

    eventually(all_committed, 120, "the processor left did not finish the input")
    # Read to the timeout, so that a duplicate would show: longer than a killed instance's
    # open transaction can hold back read_committed readers (transaction.timeout.ms).
    done = read_until(kafka, target, lambda found: len(found) > len(ids), lambda _: True, 20)
    counts = Counter((message.key() or b"").decode() for message in done)
    assert set(counts) == set(ids), "lost or unknown jobs"
    assert [job for job, seen in counts.items() if seen > 1] == [], "duplicated jobs"


@pytest.mark.timeout(300)
def test_kill_9_mid_load_then_restart_leaves_each_job_done_exactly_once(
    kafka: KafkaSettings, isolated: dict[str, str]
) -> None:
    ids = load(kafka, isolated["KAFKA_RECEIVER_TOPIC"])
    with service_process("processor", isolated) as first:
        eventually(lambda: transactions(first, "committed") >= 3, 60, "no transaction committed")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
    with service_process("processor", isolated):
        assert_each_job_done_exactly_once(kafka, isolated, ids)


@pytest.mark.timeout(300)
def test_a_second_instance_with_the_same_id_fences_the_first(
    kafka: KafkaSettings, isolated: dict[str, str]
) -> None:
    ids = load(kafka, isolated["KAFKA_RECEIVER_TOPIC"])
    same_name = {**isolated, "PROCESSOR_INSTANCE_ID": "twin"}
    with service_process("processor", same_name) as first:
        eventually(lambda: transactions(first, "committed") >= 1, 60, "no transaction committed")
        with service_process("processor", same_name):
            # The newer producer's init_transactions fences the older one, whose next
            # transaction (on the partitions it still has, with the jobs below) fails fatally:
            # it stops rather than commit anything more.
            ids += load(kafka, isolated["KAFKA_RECEIVER_TOPIC"])
            eventually(lambda: first.process.poll() is not None, 60, "the first was not fenced")
            assert_each_job_done_exactly_once(kafka, same_name, ids)


# Per partition, in order. Slow jobs, so that each rebalance finds records in flight:
# consumed, being handled, not yet committed. Those of partitions taken away must not be
# committed by the instance that loses them, or the new owner would do them again. Among them
# long ones, so that a rebalance also finds records finished above an unfinished one,
# committed with it in the metadata or not yet. Enough of them to last (200 in flight) until
# the second instance is in and out. (A run of 1 s jobs alone found nothing this one misses,
# and took 80 s more.)
LONG_AMONG_SHORT_MS = ([10_000] + [1_000] * 199) * 10


@pytest.mark.timeout(300)
def test_instances_joining_and_leaving_mid_load_leave_each_job_done_exactly_once(
    kafka: KafkaSettings, isolated: dict[str, str]
) -> None:
    source = isolated["KAFKA_RECEIVER_TOPIC"]
    ids = [
        str(job.id) for p in range(3) for job in load_into(kafka, source, p, LONG_AMONG_SHORT_MS)
    ]
    with service_process("processor", isolated) as first:
        eventually(lambda: transactions(first, "committed") >= 3, 60, "no transaction committed")
        with service_process("processor", isolated) as second:
            eventually(
                lambda: transactions(second, "committed") >= 3, 60, "the second got no partition"
            )
        # The second left: its partitions went back to the first.
        assert first.process.poll() is None, "the first instance stopped"
        assert_each_job_done_exactly_once(kafka, isolated, ids)


def in_flight(processor: ServiceProcess) -> float:
    return processor.metric('jobflow_records_in_flight{stage="processor"}')


@pytest.mark.timeout(300)
def test_an_instance_full_of_long_jobs_lets_a_new_instance_in_at_once(
    kafka: KafkaSettings, isolated: dict[str, str]
) -> None:
    # The first instance fills its in-flight bound with jobs of a minute. A joining instance
    # starts an eager rebalance, which waits until every member has run its callbacks, inside
    # a poll: a full instance that stopped polling held the group up until a job ended.
    env = {**isolated, "PROCESSOR_MAX_IN_FLIGHT": "6"}
    load(kafka, isolated["KAFKA_RECEIVER_TOPIC"], count=30, sleep_ms=MAX_SLEEP_MS)
    with service_process("processor", env) as first:
        eventually(lambda: in_flight(first) == 6, 30, "the first instance did not fill up")
        with service_process("processor", env) as second:
            # Well within the minute the first instance's jobs take.
            eventually(lambda: in_flight(second) > 0, 30, "the second got no partition")
            # The first dropped what it had in flight and took its new partitions' jobs up:
            # they are not left paused by the pause that preceded the rebalance.
            eventually(lambda: in_flight(first) > 0, 30, "the first stays paused")
            assert transactions(first, "committed") == 0, "a job of a minute ended already"


# Records of one partition finish out of order: each is committed when it is done, with the
# offsets done above a long job in the commit's metadata.

LONG_MS = 12_000


@pytest.mark.timeout(120)
def test_short_jobs_behind_a_long_one_in_its_partition_are_done_while_it_runs(
    kafka: KafkaSettings, isolated: dict[str, str]
) -> None:
    # One job of 12 s, then 20 of 50 ms, all in one partition: the short ones' outputs are
    # committed as each ends, not when the long one does.
    with service_process("processor", isolated) as processor:
        long_job, *short = load_into(
            kafka, isolated["KAFKA_RECEIVER_TOPIC"], 0, [LONG_MS] + [50] * 20
        )
        started = time.monotonic()
        short_ids = {str(job.id) for job in short}
        target = isolated["KAFKA_PROCESSOR_TOPIC"]
        assert done_ids(kafka, target, short_ids, timeout_s=10) == short_ids
        assert time.monotonic() - started < LONG_MS / 1000 / 2, "the short jobs waited"
        assert str(long_job.id) not in done_ids(kafka, target, {str(long_job.id)}, 0.5)
        assert in_flight(processor) == 1
        assert_each_job_done_exactly_once(
            kafka, isolated, [str(job.id) for job in [long_job, *short]]
        )


def handled(processor: ServiceProcess, topic: str) -> float:
    """How many records of ``topic`` the processor handled (not counting those it skipped)."""
    return processor.metric(f'jobflow_records_consumed_total{{topic="{topic}"}}')


@pytest.mark.timeout(180)
def test_after_kill_9_only_the_unfinished_jobs_are_done_again(
    kafka: KafkaSettings, isolated: dict[str, str]
) -> None:
    # Each partition starts with a long job, then short ones. Once the short ones are done,
    # the processor is killed: its successor does the long jobs again and skips the rest.
    source, target = isolated["KAFKA_RECEIVER_TOPIC"], isolated["KAFKA_PROCESSOR_TOPIC"]
    work = [job for p in range(3) for job in load_into(kafka, source, p, [LONG_MS] + [20] * 100)]
    short_ids = {str(job.id) for job in work if job.sleep != LONG_MS}
    with service_process("processor", isolated) as first:
        assert done_ids(kafka, target, short_ids, timeout_s=15) == short_ids
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
    with service_process("processor", isolated) as second:
        assert_each_job_done_exactly_once(kafka, isolated, [str(job.id) for job in work])
        assert handled(second, source) == 3
        assert second.metric(f'jobflow_records_skipped_total{{topic="{source}"}}') == 300


@pytest.mark.timeout(180)
def test_when_the_offsets_above_a_long_job_do_not_fit_its_partition_commits_in_order(
    kafka: KafkaSettings, isolated: dict[str, str]
) -> None:
    # No room for metadata at all: what finishes above the long job waits for it, then all is
    # committed; a crash meanwhile loses nothing either.
    env = {**isolated, "PROCESSOR_OFFSET_METADATA_MAX_BYTES": "0"}
    source, target = env["KAFKA_RECEIVER_TOPIC"], env["KAFKA_PROCESSOR_TOPIC"]
    work = load_into(kafka, source, 0, [10_000] + [20] * 50)
    ids = [str(job.id) for job in work]
    with service_process("processor", env) as first:
        eventually(
            lambda: first.metric('jobflow_offset_metadata_full_total{stage="processor"}') > 0,
            10,
            "the metadata did not overflow",
        )
        assert done_ids(kafka, target, set(ids[1:]), timeout_s=2) == set()
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
    with service_process("processor", env) as second:
        assert done_ids(kafka, target, set(ids[1:]), timeout_s=5) == set()
        assert_each_job_done_exactly_once(kafka, env, ids)
        assert handled(second, source) == len(ids)


# A rolling upgrade: the current processor and its next version in one group, while the jobs
# written gain a field that only the next version knows.


@pytest.mark.timeout(180)
def test_old_and_new_processors_side_by_side_read_each_others_jobs(
    kafka: KafkaSettings, isolated: dict[str, str]
) -> None:
    source = isolated["KAFKA_RECEIVER_TOPIC"]
    start = partition_end_offsets(kafka, f"{source}.dlq")
    with (
        service_process("processor", {**isolated, "PROCESSOR_INSTANCE_ID": "old"}) as old,
        service_process(
            "processor",
            {**isolated, "PROCESSOR_INSTANCE_ID": "new"},
            module="tests.stack.next_processor",
        ) as new,
    ):
        wait_for_members(kafka.bootstrap_servers, isolated["PROCESSOR_GROUP_ID"], 2)
        before = load(kafka, source, count=300)
        newer = [
            Job(id=str(uuid.uuid4()), create_date=now_ns(), sleep=20, data="") for _ in range(300)
        ]
        produce(
            kafka,
            source,
            [
                (job.id.encode(), orjson.dumps({**orjson.loads(job.to_json()), "priority": 5}))
                for job in newer
            ],
        )
        assert_each_job_done_exactly_once(kafka, isolated, before + [str(job.id) for job in newer])
        assert records_since(kafka, start, f"{source}.dlq") == []
        # Each read both kinds: the old one the field it does not know, the new one jobs
        # from before its field (with its default).
        assert handled(old, source) > 0
        assert new.metric('next_processor_jobs_total{priority="5"}') > 0
        assert new.metric('next_processor_jobs_total{priority="0"}') > 0
