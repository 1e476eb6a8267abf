"""Ingest ceiling: the receiver side by side with the same endpoint without Kafka.

Both targets are fresh processes on this machine, measured one after the other in the same run
with the same load tool (yandex-tank, BFG, loadtest/gun.py), the same request (the seed's,
no body) and the same schedules:

- a step ramp, for the highest rate held for a window of seconds with under 1% errors;
- a constant 500 requests per second, for the latency quantiles.

The receiver writes to a topic of its own, so no stage downstream takes CPU from it while it is
measured; the bare endpoint (bench/bare.py) is the receiver's app without Kafka.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient
from loadtest import tank
from tests.stack.processes import ServiceProcess, service_process
from tests.stack.topics import create_topics

from bench.measures import PerSecond, per_second, rss_mib, sustained_rps
from jobflow.core.settings import KafkaSettings

RAMP = "step(250, 3000, 250, 5s)"
FIXED_RPS = 500
# The first seconds of the constant load open the tank's connections; they are not counted.
WARM_UP_S = 5
FIXED = f"const({FIXED_RPS}, {30 + WARM_UP_S}s)"
# Enough processes for 3,000 requests a second at about 10 ms each, with room for slow ones.
INSTANCES = 48


@dataclass
class IngestResult:
    target: str
    max_rps: float
    p50_ms_at_fixed: float
    p99_ms_at_fixed: float
    errors_at_fixed: int
    shots_at_fixed: int
    rss_mib: float
    ramp: list[PerSecond] = field(default_factory=list)
    fixed: list[PerSecond] = field(default_factory=list)


def measure(
    target: str, process: ServiceProcess, ramp_schedule: str, fixed_schedule: str
) -> IngestResult:
    url = f"{process.url}/api/v1/create/job"
    ramp = tank.run(ramp_schedule, url=url, instances=INSTANCES)
    fixed = tank.run(fixed_schedule, url=url, instances=INSTANCES)
    warm = fixed.after(WARM_UP_S)
    return IngestResult(
        target=target,
        max_rps=sustained_rps(ramp.shots),
        p50_ms_at_fixed=warm.quantile_ms(0.5),
        p99_ms_at_fixed=warm.quantile_ms(0.99),
        errors_at_fixed=warm.errors,
        shots_at_fixed=len(warm.shots),
        rss_mib=rss_mib(process.process.pid),
        ramp=per_second(ramp.shots),
        fixed=per_second(fixed.shots),
    )


@contextmanager
def bare_endpoint() -> Iterator[ServiceProcess]:
    with service_process(
        "receiver", {"RECEIVER_LOG_LEVEL": "WARNING"}, module="bench.bare"
    ) as bare:
        yield bare


@contextmanager
def receiver_on_own_topic(bootstrap: str) -> Iterator[ServiceProcess]:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, topic, partitions=3)
    environment = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_RECEIVER_TOPIC": topic,
        "RECEIVER_LOG_LEVEL": "WARNING",
    }
    try:
        with service_process("receiver", environment) as receiver:
            yield receiver
    finally:
        AdminClient({"bootstrap.servers": bootstrap}).delete_topics([topic])


def run(bootstrap: str, ramp: str = RAMP, fixed: str = FIXED) -> list[IngestResult]:
    results = []
    with bare_endpoint() as bare:
        results.append(measure("bare", bare, ramp, fixed))
    with receiver_on_own_topic(bootstrap) as receiver:
        results.append(measure("receiver", receiver, ramp, fixed))
    return results
