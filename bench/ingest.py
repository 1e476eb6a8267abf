"""Ingest ceiling: the receiver side by side with the same endpoint without Kafka, and with the
seed's own design of it in Go.

The targets are fresh processes on this machine, measured one after the other in the same run
with the same load tool (yandex-tank, BFG, loadtest/gun.py), the same request (the seed's,
no body) and the same schedules:

- a step ramp, for the highest rate held for a window of seconds with under 1% errors;
- a constant 500 requests per second, for the latency quantiles.

The receivers write to topics of their own, so no stage downstream takes CPU from them while
they are measured; the bare endpoint (bench/bare.py) is the receiver's app without Kafka; the Go
receiver (bench/go_receiver, net/http and franz-go) does the receiver's work with the same
producer settings, to say what the seed's language and libraries would have made of it.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from loadtest import tank
from local.config import REPO
from tests.stack.processes import ServiceProcess, service_process
from tests.stack.topics import create_topics, delete_topics

from bench.measures import PerSecond, per_second, rss_mib, sustained_rps
from jobflow.core.settings import KafkaSettings

# Above the seed's Go receiver's ceiling here (about 5,000), in as many steps as before.
RAMP = "step(500, 6000, 500, 5s)"
FIXED_RPS = 500
# The first seconds of the constant load open the tank's connections; they are not counted.
WARM_UP_S = 5
FIXED = f"const({FIXED_RPS}, {30 + WARM_UP_S}s)"
# Enough processes for 3,000 requests a second at about 10 ms each, with room for slow ones.
INSTANCES = 48
# Where `make go-receiver` builds the Go receiver.
GO_RECEIVER = REPO / ".local" / "bench" / "go-receiver"
# A target that held this share of the ramp's last step was never pushed to its ceiling.
RAMP_TOP_SHARE = 0.95


@dataclass
class IngestResult:
    target: str
    max_rps: float
    p50_ms_at_fixed: float
    p99_ms_at_fixed: float
    errors_at_fixed: int
    shots_at_fixed: int
    rss_mib: float
    # True when max_rps is only a lower bound: the target kept up with the ramp's top rate.
    reached_ramp_top: bool = False
    ramp: list[PerSecond] = field(default_factory=list)
    fixed: list[PerSecond] = field(default_factory=list)


def top_rate(schedule: str) -> int:
    """The highest rate a tank schedule asks for: `step(250, 3000, 250, 5s)` → 3000."""
    rates: list[int] = []
    for name, arguments in re.findall(r"(const|line|step)\(([^)]*)\)", schedule):
        values = arguments.split(",")
        # const(rate, duration); line and step go from their first rate to their second.
        rates += [int(value) for value in values[: 1 if name == "const" else 2]]
    if not rates:
        raise ValueError(f"no const, line or step in the schedule {schedule!r}")
    return max(rates)


def measure(
    target: str, process: ServiceProcess, ramp_schedule: str, fixed_schedule: str
) -> IngestResult:
    url = f"{process.url}/api/v1/create/job"
    ramp = tank.run(ramp_schedule, url=url, instances=INSTANCES)
    fixed = tank.run(fixed_schedule, url=url, instances=INSTANCES)
    warm = fixed.after(WARM_UP_S)
    max_rps = sustained_rps(ramp.shots)
    return IngestResult(
        target=target,
        max_rps=max_rps,
        p50_ms_at_fixed=warm.quantile_ms(0.5),
        p99_ms_at_fixed=warm.quantile_ms(0.99),
        errors_at_fixed=warm.errors,
        shots_at_fixed=len(warm.shots),
        rss_mib=rss_mib(process.process.pid),
        reached_ramp_top=max_rps >= RAMP_TOP_SHARE * top_rate(ramp_schedule),
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
def receiver_on_own_topic(
    bootstrap: str, executable: Path | None = None
) -> Iterator[ServiceProcess]:
    """The receiver, or ``executable`` (a peer read from the same environment), writing to a
    topic of its own with as many partitions as receiver-topic; the topic goes afterwards."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, topic, partitions=3)
    environment = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_RECEIVER_TOPIC": topic,
        "RECEIVER_LOG_LEVEL": "WARNING",
    }
    try:
        with service_process("receiver", environment, executable=executable) as receiver:
            yield receiver
    finally:
        # Waited for: a deletion still queued when the process exits is never sent.
        delete_topics(kafka, topic)


def go_receiver() -> Path:
    """The Go receiver's binary, built first when its sources are newer (`make go-receiver`:
    make's own check, so a run outside `make bench` never measures a stale build)."""
    build = subprocess.run(
        ["make", "--no-print-directory", "go-receiver"],  # noqa: S607
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if build.returncode != 0:
        raise RuntimeError(
            f"make go-receiver failed ({build.returncode}):\n{build.stdout}{build.stderr}"
        )
    return GO_RECEIVER


def run(bootstrap: str, ramp: str = RAMP, fixed: str = FIXED) -> list[IngestResult]:
    """bare, receiver and go-receiver, in that order."""
    results = []
    with bare_endpoint() as bare:
        results.append(measure("bare", bare, ramp, fixed))
    with receiver_on_own_topic(bootstrap) as receiver:
        results.append(measure("receiver", receiver, ramp, fixed))
    with receiver_on_own_topic(bootstrap, go_receiver()) as peer:
        results.append(measure("go-receiver", peer, ramp, fixed))
    return results
