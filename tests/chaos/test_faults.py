"""The fault-injection suite: each scenario loads the local stack, breaks one thing, lets the
pipeline drain, and fails on any accepted job lost or any job seen twice downstream.

`make chaos` runs it with the full profile (CHAOS_PROFILE=full: 300 jobs/s, Postgres away for
30 s); `make test` with the short one. See docs/operations.md for what each scenario shows.
"""

from __future__ import annotations

import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import pytest
from local.components import service_environment
from local.config import StackSettings

from jobflow.core.settings import KafkaSettings, PostgresSettings
from tests.chaos.harness import (
    LEFT_OPEN_AFTER_S,
    Load,
    Outcome,
    Stack,
    clickhouse_counts,
    create_one,
    first_time,
    informer_statuses,
    postgres_statuses,
    profile,
)
from tests.stack.processes import ServiceProcess, service_process
from tests.stack.topics import partition_end_offsets, produce, records_since

POISON_PER_TOPIC = 5


@dataclass
class Scenario:
    name: str
    inject: Callable[[Stack, list[ServiceProcess]], None]
    # Extra processes running through the whole scenario (the third scenario's processors).
    setup: Callable[[Stack], AbstractContextManager[list[ServiceProcess]]] = lambda _: nullcontext(
        []
    )
    poison_per_topic: int = 0
    # What the load's jobs ask for, in turn.
    sleeps_ms: tuple[int, ...] = (100,)
    # The longest a job created once the fault was cleared may take to reach both sinks.
    max_recovery_s: float | None = None
    # Whether the fault restarts a broker, after which it may drop transaction markers
    # (KAFKA-20734): its log is read once a live transaction can no longer be open.
    restarts_broker: bool = False


def kill_9(name: str) -> Callable[[Stack, list[ServiceProcess]], None]:
    return lambda stack, _: stack.kill_9(name)


def restart(name: str) -> Callable[[Stack, list[ServiceProcess]], None]:
    def inject(stack: Stack, _: list[ServiceProcess]) -> None:
        stack.stop(name)
        stack.start(name)

    return inject


def stop_postgres_for_a_while(stack: Stack, _: list[ServiceProcess]) -> None:
    stack.stop("postgres")
    time.sleep(profile().postgres_outage_s)
    stack.start("postgres")


@contextmanager
def two_more_processors(stack: Stack) -> Iterator[list[ServiceProcess]]:
    environment = service_environment(stack.settings, PostgresSettings())
    with (
        service_process("processor", {**environment, "PROCESSOR_INSTANCE_ID": "chaos-2"}) as second,
        service_process("processor", {**environment, "PROCESSOR_INSTANCE_ID": "chaos-3"}) as third,
    ):
        yield [second, third]


def kill_9_one_of_three(_: Stack, extra: list[ServiceProcess]) -> None:
    extra[0].process.send_signal(signal.SIGKILL)
    extra[0].process.wait(timeout=10)


def poison(stack: Stack, _: list[ServiceProcess]) -> None:
    kafka = KafkaSettings(bootstrap_servers=stack.settings.kafka_bootstrap)
    garbage = [b"", b"not json", b'{"id": 1}', b"\xff\xfe", b'{"id": "x", "sleep": "soon"}']
    for topic in (kafka.receiver_topic, kafka.processor_topic):
        produce(
            kafka,
            topic,
            [(f"poison-{uuid.uuid4()}".encode(), value) for value in garbage[:POISON_PER_TOPIC]],
        )


SCENARIOS = [
    Scenario("kill -9 processor", kill_9("processor")),
    # One job in a hundred runs 20 s: the processor dies with short jobs finished above long
    # ones, committed in its offsets' metadata or not yet.
    Scenario(
        "kill -9 processor, long jobs among short",
        kill_9("processor"),
        sleeps_ms=(*[100] * 99, 20_000),
    ),
    Scenario("kill -9 converter", kill_9("converter")),
    Scenario("3 processors, kill -9 one", kill_9_one_of_three, setup=two_more_processors),
    # A crash, not a graceful stop: see docs/operations.md on stopping the only broker.
    Scenario("kill -9 Kafka", kill_9("kafka"), restarts_broker=True),
    Scenario("stop PostgreSQL", stop_postgres_for_a_while),
    # Bounded: 18.16 does not leave its consumer group when it stops, and with librdkafka's
    # session timeout its new consumer got the partitions back 45 s after the start.
    Scenario("restart ClickHouse", restart("clickhouse"), max_recovery_s=30),
    Scenario("poison records", poison, poison_per_topic=POISON_PER_TOPIC),
]


class ProbeWatch:
    """When a job created right after the fault was cleared reached both sinks."""

    def __init__(self, stack: Stack, job: str, since: int, timeout_s: float) -> None:
        self.arrived_at: float | None = None

        def arrived() -> bool:
            return postgres_statuses(since).get(job) == ["finish"] and (
                clickhouse_counts(stack.settings, since)[(job, "finish")] >= 1
            )

        def watch() -> None:
            self.arrived_at = first_time(arrived, timeout_s)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()

    def wait(self) -> float | None:
        self._thread.join()
        return self.arrived_at


def run(scenario: Scenario, stack: Stack) -> Outcome:
    chosen = profile()
    kafka = KafkaSettings(bootstrap_servers=stack.settings.kafka_bootstrap)
    receiver = stack.parts["receiver"].endpoint
    informer = stack.parts["informer"].endpoint
    outputs = [kafka.processor_topic, kafka.postgres_topic, kafka.clickhouse_topic]
    dead_letters = [f"{topic}.dlq" for topic in (kafka.receiver_topic, *outputs)]
    start = partition_end_offsets(kafka, *outputs, *dead_letters)
    since = int(time.time()) - 1

    with (
        scenario.setup(stack) as extra,
        Load(receiver, chosen.rate_per_s, sleeps_ms=scenario.sleeps_ms) as load,
    ):
        started = time.monotonic()
        time.sleep(chosen.fault_after_s)
        fault_at = time.monotonic()
        log_from, fault_ms = stack.broker_log_sizes(), int(time.time() * 1000)
        scenario.inject(stack, extra)
        skipped, aborted = settle_what_the_broker_left_open(
            stack, log_from, fault_ms, scenario.restarts_broker
        )
        cleared = time.monotonic()
        probe = create_one(receiver)
        watch = ProbeWatch(stack, probe, since, chosen.drain_timeout_s)
        time.sleep(max(0.0, chosen.load_s - (time.monotonic() - started)))
        result = load.stop()
        accepted = set(result.accepted) | {probe}

        def drained() -> bool:
            in_postgres = postgres_statuses(since)
            in_clickhouse = clickhouse_counts(stack.settings, since)
            return all(
                in_postgres.get(job) == ["finish"]
                and in_clickhouse[(job, "create")] >= 1
                and in_clickhouse[(job, "finish")] >= 1
                for job in accepted
            )

        first_time(drained, chosen.drain_timeout_s)
        arrived = watch.wait()

    in_postgres = postgres_statuses(since)
    in_clickhouse = clickhouse_counts(stack.settings, since)
    informer_says = informer_statuses(informer, sorted(accepted))
    by_key = {
        topic: Counter(key.decode() for key, _ in records_since(kafka, start, topic))
        for topic in (kafka.processor_topic, kafka.postgres_topic)
    }
    csv_rows = Counter(
        (key.decode(), value.decode().split(",")[1])
        for key, value in records_since(kafka, start, kafka.clickhouse_topic)
    )
    dead_lettered = sum(len(records_since(kafka, start, topic)) for topic in dead_letters)

    # Where each job seen twice was seen twice, for the failure's detail.
    twice = {
        **{topic: {job for job, n in counts.items() if n > 1} for topic, counts in by_key.items()},
        kafka.clickhouse_topic: {job for (job, _), n in csv_rows.items() if n > 1},
        "ClickHouse": {job for (job, _), n in in_clickhouse.items() if n > 1},
        "PostgreSQL": {job for job, statuses in in_postgres.items() if len(statuses) > 1},
    }
    duplicated = set().union(*twice.values())
    complete = {
        job
        for job in accepted
        if in_postgres.get(job) == ["finish"]
        and in_clickhouse[(job, "create")] == 1
        and in_clickhouse[(job, "finish")] == 1
        and informer_says.get(job) == "finish"
    }
    lost = accepted - complete
    detail = [
        f"{job}: Postgres {in_postgres.get(job)}, ClickHouse create "
        f"{in_clickhouse[(job, 'create')]} finish {in_clickhouse[(job, 'finish')]}, "
        f"informer {informer_says.get(job)}"
        for job in sorted(lost)[:5]
    ]
    detail += [
        f"twice in {place}: {len(jobs)} jobs, e.g. {sorted(jobs)[:3]}"
        for place, jobs in twice.items()
        if jobs
    ]
    detail += [f"errors: {dict(result.errors)}"] if result.errors else []
    before_fault = result.before(fault_at)
    detail += ["sent before the fault: {}, of which accepted: {}".format(*before_fault)]
    return Outcome(
        scenario=scenario.name,
        accepted=len(accepted),
        errors=sum(result.errors.values()),
        in_postgres=sum(1 for job in accepted if job in in_postgres),
        in_clickhouse=sum(1 for job in accepted if in_clickhouse[(job, "finish")] >= 1),
        duplicates=len(duplicated),
        lost=len(lost),
        dead_lettered=dead_lettered,
        recovery_s=None if arrived is None else arrived - cleared,
        unacknowledged_written=len(set(by_key[kafka.processor_topic]) - accepted),
        before_fault=before_fault,
        markers_skipped=skipped,
        aborted=aborted,
        detail=detail,
    )


def settle_what_the_broker_left_open(
    stack: Stack, log_from: dict[Path, int], fault_ms: int, restarted: bool
) -> tuple[dict[str, set[str]], list[str]]:
    """When a broker skipped a transaction's markers during the fault (KAFKA-20734, a Kafka
    bug: docs/operations.md), abort the pending offsets it so left open once no live
    transaction can be that old, as the operator would: else the group's stage waits for them
    for ever. A restarted broker logs it when its old registration is fenced, maybe after it
    answers again: its log is read once that time is past. Returns the partitions skipped,
    by transactional id, and the transactions aborted."""
    skipped = stack.markers_skipped(log_from)
    if not (skipped or restarted):
        return skipped, []
    time.sleep(max(0.0, fault_ms / 1000 + LEFT_OPEN_AFTER_S - time.time()))
    skipped = stack.markers_skipped(log_from)
    return skipped, stack.abort_offsets_left_open(skipped, fault_ms)


def excused_by_kafka(outcome: Outcome) -> set[str]:
    """What the broker's dropped markers can cause (KAFKA-20734): jobs late past the drain when
    an output partition kept a transaction open (its writer's next commit there shows them),
    jobs done twice when pending offsets were aborted."""
    partitions = set().union(*outcome.markers_skipped.values())
    excused = set()
    if any(not partition.startswith("__consumer_offsets-") for partition in partitions):
        excused.add("lost")
    if any("abort failed" not in aborted for aborted in outcome.aborted):
        excused.add("duplicates")
    return excused


def scenario_id(scenario: Scenario) -> str:
    return re.sub(r"[^a-z0-9]+", "-", scenario.name.lower()).strip("-")


def check(scenario: Scenario, outcome: Outcome, excused: set[str] | None = None) -> None:
    """Nothing accepted lost, nothing duplicated, no dead letters but the poison; ``excused``
    may hold "lost" and "duplicates", not checked."""
    excused = excused or set()
    assert "lost" in excused or outcome.lost == 0, outcome.detail
    assert "duplicates" in excused or outcome.duplicates == 0, outcome.detail
    assert outcome.dead_lettered == 2 * scenario.poison_per_topic, outcome.detail
    if scenario.max_recovery_s is not None:
        assert outcome.recovery_s is not None, outcome.detail
        assert outcome.recovery_s <= scenario.max_recovery_s, outcome.detail
    # The load ran: before the fault, at least a second's worth of requests at the profile's
    # rate was sent, and more than half of them accepted (the requests under way when the fault
    # strikes may fail with it). Counted by what was sent, not by the nominal rate: on a
    # machine saturated by a three-broker stack the load itself sent 40 to 50 a second.
    sent, accepted = outcome.before_fault
    assert sent >= profile().rate_per_s, outcome.detail
    assert accepted > 0.5 * sent, outcome.detail


@pytest.mark.skipif(
    StackSettings().kafka_brokers != 1,
    reason="one broker's scenarios (kill -9 Kafka); test_broker_faults has those of several",
)
@pytest.mark.timeout(900)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=scenario_id)
def test_nothing_accepted_is_lost_and_nothing_is_duplicated(
    scenario: Scenario, chaos_stack: Stack, outcomes: list[Outcome]
) -> None:
    chaos_stack.wait_healthy("before the fault")
    outcome = run(scenario, chaos_stack)
    outcomes.append(outcome)
    excused = excused_by_kafka(outcome)
    check(scenario, outcome, excused)
    chaos_stack.wait_healthy("after the scenario")
    if excused and (outcome.lost or outcome.duplicates):
        # Kafka's bug, not the pipeline's (docs/operations.md).
        pytest.xfail(
            f"KAFKA-20734: the broker skipped transaction markers to {outcome.markers_skipped}; "
            f"aborted {outcome.aborted}; {outcome.lost} late, {outcome.duplicates} twice: "
            f"{outcome.detail}"
        )
