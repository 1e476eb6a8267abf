"""A stage's outputs and its input offsets are committed in one Kafka transaction: whatever
happens to a processor, a read_committed reader of its output sees every job exactly once.
Instances join and leave the group without holding it up.

The processors under test run on topics of their own, so that the stack's data is untouched.
"""

from __future__ import annotations

import signal
import uuid
from collections import Counter

import pytest
from confluent_kafka import KafkaException

from jobflow.core.models import MAX_SLEEP_MS, Job
from jobflow.core.settings import KafkaSettings
from jobflow.core.timestamps import now_ns
from tests.polling import eventually
from tests.stack.processes import ServiceProcess, service_process
from tests.stack.topics import committed_offsets, create_topics, produce, read_until

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


@pytest.mark.timeout(300)
def test_instances_joining_and_leaving_mid_load_leave_each_job_done_exactly_once(
    kafka: KafkaSettings, isolated: dict[str, str]
) -> None:
    # Slow jobs, so that each rebalance finds records in flight: consumed, being handled, not
    # yet committed. Those of partitions taken away must not be committed by the instance that
    # loses them, or the new owner would do them again.
    ids = load(kafka, isolated["KAFKA_RECEIVER_TOPIC"], count=6000, sleep_ms=1000)
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
