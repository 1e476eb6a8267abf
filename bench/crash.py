"""Crash cost: what a kill -9 makes the next processor do again.

One processor on topics of its own (three partitions in, as receiver-topic) meets 2,000 jobs,
its whole in-flight bound, written in one transaction: 1% of them 30 s long, spread through
every partition, the rest 100 ms. Once every short job's JobDone is visible downstream the
processor is killed (SIGKILL) and another started in its place. What it does again is what it
handles (its consumed-records counter: records it skips because a commit's metadata says they
are done are not counted there); what was unfinished is what no read_committed reader saw done
before the kill. The target: only the unfinished jobs are done again, and every job is seen
once in the output.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass

from tests.stack.processes import service_process
from tests.stack.topics import partition_end_offsets, read_until, records_since

from bench.processor import jobs_backlog, own_topics, processor_environment, wait_for_members
from jobflow.core.settings import KafkaSettings

JOBS = 2_000
LONG_EVERY = 100
LONG_MS = 30_000
SHORT_MS = 100


@dataclass(frozen=True)
class CrashCost:
    jobs: int
    unfinished: int
    redone: int
    skipped: int
    lost: int
    duplicated: int
    # From the kill to the last job visible, the long ones' sleeps included.
    recovery_s: float


def measure(bootstrap: str) -> CrashCost:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    sleeps = [LONG_MS if n % LONG_EVERY == LONG_EVERY // 2 else SHORT_MS for n in range(JOBS)]
    with own_topics(kafka) as (source, target):
        start = partition_end_offsets(kafka, target)
        group = f"bench-crash-{uuid.uuid4().hex[:8]}"
        environment = processor_environment(bootstrap, source, target, group)
        with service_process("processor", environment) as first:
            wait_for_members(bootstrap, group, 1)
            created = jobs_backlog(bootstrap, source, sleeps)
            short = {job_id for job_id, job in created.items() if job.sleep == SHORT_MS}
            read_until(
                kafka,
                target,
                lambda found: {(m.key() or b"").decode() for m in found} >= short,
                lambda _: True,
                timeout_s=120,
            )
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=10)
            killed = time.monotonic()
        # Whatever was committed up to the kill, the short jobs and any long one finished.
        finished = {(key or b"").decode() for key, _ in records_since(kafka, start, target)}
        with service_process("processor", environment) as second:
            read_until(
                kafka,
                target,
                lambda found: {(m.key() or b"").decode() for m in found} >= created.keys(),
                lambda _: True,
                timeout_s=LONG_MS / 1000 + 120,
            )
            recovery_s = time.monotonic() - killed
            redone = second.metric(f'jobflow_records_consumed_total{{topic="{source}"}}')
            skipped = second.metric(f'jobflow_records_skipped_total{{topic="{source}"}}')
        done = Counter(key.decode() for key, _ in records_since(kafka, start, target))
    return CrashCost(
        jobs=len(created),
        unfinished=len(created.keys() - finished),
        redone=int(redone),
        skipped=int(skipped),
        lost=len(created.keys() - done.keys()),
        duplicated=sum(count - 1 for count in done.values() if count > 1),
        recovery_s=round(recovery_s, 1),
    )
