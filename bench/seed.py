"""The seed's acceptance load: its yandex-tank profile (25 requests a second for 300 s) against
the local stack's receiver, with BFG in place of phantom.

Every acknowledged id is looked up in receiver-topic: the receiver's side of the count, which
the tank's own statistics (short of their last second) cannot replace.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from loadtest import tank
from tests.stack.topics import partition_end_offsets, records_since

from bench.measures import PerSecond, per_second
from jobflow.core.settings import KafkaSettings


@dataclass
class SeedResult:
    schedule: str
    shots: int
    errors: int
    acked: int
    p50_ms: float
    p99_ms: float
    missing_in_receiver_topic: int
    duplicated_in_receiver_topic: int
    load: list[PerSecond] = field(default_factory=list)


def run(kafka: KafkaSettings, receiver_url: str, schedule: str) -> SeedResult:
    start = partition_end_offsets(kafka, kafka.receiver_topic)
    load = tank.run(schedule, url=f"{receiver_url}/api/v1/create/job")
    written = Counter(key.decode() for key, _ in records_since(kafka, start, kafka.receiver_topic))
    acked = set(load.acked_ids)
    return SeedResult(
        schedule=schedule,
        shots=len(load.shots),
        errors=load.errors,
        acked=len(load.acked_ids),
        p50_ms=load.quantile_ms(0.5),
        p99_ms=load.quantile_ms(0.99),
        missing_in_receiver_topic=len(acked - written.keys()),
        duplicated_in_receiver_topic=sum(written[job] - 1 for job in acked if written[job] > 1),
        load=per_second(load.shots),
    )
