"""The pipeline end to end: jobs created over HTTP until each is a row in PostgreSQL.

The load goes to the local stack's own receiver and runs through every stage as in production.
Three clocks per acknowledged job:

- created: the job's `create_date` (receiver-topic);
- done: when a read_committed consumer of processor-topic first sees its JobDone, that is when
  the processor's transaction made it visible downstream (a consumer thread started before the
  load, polling with a short fetch wait);
- in PostgreSQL: the commit time of its row (`pg_xact_commit_timestamp`; the local server runs
  with `track_commit_timestamp`).

"Over sleep" takes away each job's own work time (its `sleep`): what the pipeline adds.
A job acknowledged by the receiver and missing from processor-topic or PostgreSQL is lost.

The load is the seed's request (the receiver picks ~100 ms sleeps), or a mix of sleeps given
as request bodies (`mixed_bodies`: 99% at 100 ms and 1% at 30 to 60 s), whose long jobs are
measured apart: what matters is that the short ones do not wait for them.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import psycopg
from confluent_kafka import Consumer, Message, TopicPartition
from loadtest import tank
from tests.stack.topics import partition_end_offsets, records_since

from bench.measures import PerSecond, per_second
from jobflow.core.models import Job, JobDone
from jobflow.core.settings import KafkaSettings, PostgresSettings

# More than the ingest runs use: under this load answers take tens of ms, and 48 processes
# waiting on them cannot keep 1,000 requests a second going.
INSTANCES = 96
DRAIN_TIMEOUT_S = 180
# Jobs sleeping this long or longer are the mixed load's long ones.
LONG_SLEEP_MS = 1_000


def mixed_bodies(lines: int = 1_000, long_share: float = 0.01) -> list[bytes]:
    """Request bodies, sent in turn: 100 ms jobs, and ``long_share`` of them 30 to 60 s long
    (spread evenly, in a fixed shuffled order)."""
    longs = round(lines * long_share)
    sleeps = [100] * (lines - longs) + [
        30_000 + 30_000 * n // max(longs - 1, 1) for n in range(longs)
    ]
    random.Random(0).shuffle(sleeps)  # noqa: S311 - a fixed order, not a secret
    return [b'{"sleep":%d}' % sleep for sleep in sleeps]


@dataclass
class PipelineResult:
    schedule: str
    acked: int
    # What the machine delivered of the schedule: answers per second, first to last.
    achieved_rps: float
    errors: int
    http_p50_ms: float
    http_p99_ms: float
    in_receiver_topic: int
    lost_in_processor_topic: int
    duplicated_in_processor_topic: int
    lost_in_postgres: int
    # Jobs under LONG_SLEEP_MS; the long ones apart.
    done_over_sleep_ms: list[float] = field(default_factory=list)
    long_done_over_sleep_ms: list[float] = field(default_factory=list)
    # done_over_sleep_ms in two: until the processor finished the sleep (the receiver's write,
    # the processor's fetch and scheduling), then until the JobDone was visible (waiting for
    # earlier records, the transaction, its markers).
    finished_over_sleep_ms: list[float] = field(default_factory=list)
    finished_to_visible_ms: list[float] = field(default_factory=list)
    postgres_after_create_ms: list[float] = field(default_factory=list)
    load: list[PerSecond] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.lost_in_processor_topic + self.lost_in_postgres


def consume_arrived(consumer: Consumer, wait_s: float) -> list[Message]:
    """The records the consumer has, waiting up to ``wait_s`` for the first one only.

    librdkafka's batch consume returns when its batch is full or its timeout is over: asked for
    1,000 records with 50 ms, it held each arrival back for up to 50 ms (about 25 on average)
    unless 1,000 were there, and the pipeline was measured that much slower than it was.
    """
    first = consumer.consume(1, wait_s)
    return first + consumer.consume(10_000, 0) if first else first


class ArrivalClock:
    """Notes when each key first becomes visible on a topic to a read_committed consumer."""

    def __init__(self, kafka: KafkaSettings, start: dict[TopicPartition, int]) -> None:
        self.arrived: dict[str, float] = {}
        self.finished: dict[str, int] = {}
        self._consumer = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap_servers,
                "group.id": "bench-arrivals",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                # The broker answers a fetch at once when data is there; otherwise within 10 ms,
                # not the default 500 ms, which would be measured as pipeline latency.
                "fetch.wait.max.ms": 10,
            }
        )
        self._consumer.assign(
            [TopicPartition(tp.topic, tp.partition, o) for tp, o in start.items()]
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arrivals", daemon=True)

    def __enter__(self) -> ArrivalClock:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in consume_arrived(self._consumer, 0.05):
                if message.error() is None:
                    key = (message.key() or b"").decode()
                    if key not in self.arrived:
                        self.arrived[key] = time.time()
                        self.finished[key] = JobDone.from_json(message.value() or b"").finish_date


def achieved_rps(shots: list[tank.Shot]) -> float:
    answered = sorted(shot.answered_at for shot in shots if shot.ok)
    if len(answered) < 2:
        return 0.0
    return round((len(answered) - 1) / (answered[-1] - answered[0]), 1)


def postgres_commit_times(ids: list[str]) -> dict[str, float]:
    """id → epoch seconds its `finish` row was committed, for the ids that have one."""
    with psycopg.connect(PostgresSettings().conninfo(), autocommit=True) as connection:
        rows = connection.execute(
            "SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM jobs "
            "WHERE id = ANY(%s) AND status = 'finish'",
            (ids,),
        ).fetchall()
    return {str(job): float(committed) for job, committed in rows}


def run(
    kafka: KafkaSettings, receiver_url: str, schedule: str, bodies: list[bytes] | None = None
) -> PipelineResult:
    start = partition_end_offsets(kafka, kafka.receiver_topic, kafka.processor_topic)
    processor_start = {tp: o for tp, o in start.items() if tp.topic == kafka.processor_topic}
    with ArrivalClock(kafka, processor_start) as clock:
        load = tank.run(
            schedule,
            url=f"{receiver_url}/api/v1/create/job",
            bodies=bodies or (),
            instances=INSTANCES,
        )
        acked = set(load.acked_ids)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while not acked <= clock.arrived.keys() and time.monotonic() < deadline:
            time.sleep(0.5)
    committed: dict[str, float] = {}
    while time.monotonic() < deadline:
        committed = postgres_commit_times(sorted(acked))
        if len(committed) == len(acked):
            break
        time.sleep(1)
    # Counted from the whole topic afterwards: the clock stops at the last first arrival, and a
    # duplicate could be committed later.
    done = Counter(key.decode() for key, _ in records_since(kafka, start, kafka.processor_topic))
    created = {
        job.id: job
        for job in (
            Job.from_json(value) for _, value in records_since(kafka, start, kafka.receiver_topic)
        )
    }
    both_known = [job for job in acked if job in clock.arrived and job in created]
    done_over_sleep = {
        job: (clock.arrived[job] - created[job].create_date / 1e9) * 1000 - created[job].sleep
        for job in both_known
    }
    finished_over_sleep = [
        (clock.finished[job] - created[job].create_date) / 1e6 - created[job].sleep
        for job in both_known
    ]
    finished_to_visible = [
        (clock.arrived[job] - clock.finished[job] / 1e9) * 1000 for job in both_known
    ]
    in_postgres = [
        (committed[job] - created[job].create_date / 1e9) * 1000
        for job in acked
        if job in committed and job in created
    ]
    return PipelineResult(
        schedule=schedule,
        acked=len(acked),
        achieved_rps=achieved_rps(load.shots),
        errors=load.errors,
        http_p50_ms=load.quantile_ms(0.5),
        http_p99_ms=load.quantile_ms(0.99),
        in_receiver_topic=len(acked & created.keys()),
        lost_in_processor_topic=len(acked - clock.arrived.keys()),
        duplicated_in_processor_topic=sum(done[job] - 1 for job in acked if done[job] > 1),
        lost_in_postgres=len(acked - committed.keys()),
        done_over_sleep_ms=[
            ms for job, ms in done_over_sleep.items() if created[job].sleep < LONG_SLEEP_MS
        ],
        long_done_over_sleep_ms=[
            ms for job, ms in done_over_sleep.items() if created[job].sleep >= LONG_SLEEP_MS
        ],
        finished_over_sleep_ms=finished_over_sleep,
        finished_to_visible_ms=finished_to_visible,
        postgres_after_create_ms=in_postgres,
        load=per_second(load.shots),
    )
