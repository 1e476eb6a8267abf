"""Our processor beside Quix Streams: the same job, one instance each, measured the same way.

python -m bench.quix [--jobs N] [--slow-jobs N] [--intervals 0.1,0.5,1]

Each run gets fresh topics laid out as the pipeline's (three partitions in), starts one instance
(our processor, or bench/quix_processor.py in .venv-quix with exactly-once on), waits until its
consumer group is stable, and then writes the backlog in one transaction, so that it becomes
visible all at once. The clock runs from that commit to the moment a read_committed reader,
started before the backlog, first sees the last of the jobs' outputs: when the output really is
visible downstream. Output record timestamps would not do: Quix gives an output its input's
timestamp. Per job, created (the Job's create_date) to visible (that reader's time.time_ns).
After the instance has stopped, the output topic is read to its end: every job must be there
exactly once.

Quix commits every 5 s by default; shorter intervals are measured too, and its best rate at
0 ms sleeps is what ours is compared with. Quix runs one record at a time, so at 100 ms sleeps
it gets a smaller backlog (--slow-jobs); the rate is what is compared.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import TopicPartition
from loadtest.tank import quantile
from local import stack
from local.config import REPO, StackSettings
from tests.stack.processes import service_process
from tests.stack.topics import partition_end_offsets, records_since

from bench.pipeline import ArrivalClock, consume_arrived
from bench.processor import backlog, own_topics, processor_environment, wait_for_members
from jobflow.core.models import JobDone
from jobflow.core.settings import KafkaSettings

QUIX_PYTHON = REPO / ".venv-quix" / "bin" / "python"
SLEEP_MS = 100
JOBS = 60_000
# About 20 s of work for one Quix instance at 100 ms sleeps, one record after another.
SLOW_JOBS = 200
SHORT_INTERVALS_S = (0.1, 0.5, 1.0)
# How long a run may take beyond its backlog's work done one job at a time.
SLACK_S = 60.0


@dataclass(frozen=True)
class PeerThroughput:
    peer: str  # "jobflow" or "quix"
    jobs: int
    sleep_ms: int
    # Quix's commit interval; None: Quix's own default (or ours, which commits as it goes).
    commit_interval_s: float | None
    # From the first job's create_date to the backlog's commit: every job waits at least
    # this much less, and at most this much longer, than the drain itself.
    backlog_written_s: float
    # From the backlog's commit to the last output seen by the reader.
    seconds: float
    jobs_per_s: float
    create_to_visible_p50_ms: float
    create_to_visible_p99_ms: float
    lost: int
    duplicated: int


def summarise(
    peer: str,
    sleep_ms: int,
    commit_interval_s: float | None,
    created: dict[str, int],
    committed_ns: int,
    visible: dict[str, int],
    outputs: Counter[str],
) -> PeerThroughput:
    """One run's figures from its clocks: ``created`` and ``visible`` map a job's id to epoch
    ns, ``committed_ns`` is when the backlog's transaction was committed, ``outputs`` counts
    the output records by key, read to the end."""
    seen = [job for job in created if job in visible]
    seconds = (max(visible[job] for job in seen) - committed_ns) / 1e9 if seen else 0.0
    latencies = [(visible[job] - created[job]) / 1e6 for job in seen]
    return PeerThroughput(
        peer=peer,
        jobs=len(created),
        sleep_ms=sleep_ms,
        commit_interval_s=commit_interval_s,
        backlog_written_s=round(
            (committed_ns - min(created.values(), default=committed_ns)) / 1e9, 3
        ),
        seconds=round(seconds, 3),
        jobs_per_s=round(len(seen) / seconds, 1) if seconds > 0 else 0.0,
        create_to_visible_p50_ms=round(quantile(latencies, 0.5), 1),
        create_to_visible_p99_ms=round(quantile(latencies, 0.99), 1),
        lost=len(created.keys() - outputs.keys()),
        duplicated=sum(count - 1 for count in outputs.values()),
    )


def best(runs: list[PeerThroughput]) -> PeerThroughput:
    """The run with the highest rate; the earliest of equals."""
    return max(runs, key=lambda run: run.jobs_per_s)


def ratio(ours: PeerThroughput, theirs: PeerThroughput) -> float | None:
    return round(ours.jobs_per_s / theirs.jobs_per_s, 2) if theirs.jobs_per_s else None


class Visibility(ArrivalClock):
    """ArrivalClock's read_committed reader, noting only when each key is first seen
    (time.time_ns): the outputs are decoded and checked after the run, not while it is timed."""

    def __init__(self, kafka: KafkaSettings, start: dict[TopicPartition, int]) -> None:
        super().__init__(kafka, start)
        self.seen: dict[str, int] = {}

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in consume_arrived(self._consumer, 0.05):
                now = time.time_ns()
                if message.error() is None:
                    self.seen.setdefault((message.key() or b"").decode(), now)

    def wait_for(self, keys: Collection[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.seen) >= len(keys) and all(key in self.seen for key in keys):
                return
            time.sleep(0.1)


@contextmanager
def quix_process(
    bootstrap: str, source: str, target: str, group: str, commit_interval_s: float | None
) -> Iterator[subprocess.Popen[bytes]]:
    """bench/quix_processor.py in .venv-quix, stopped with SIGTERM afterwards (Quix then
    commits its last checkpoint)."""
    if not QUIX_PYTHON.exists():
        raise RuntimeError(f"{QUIX_PYTHON} is missing: make quix-env")
    with tempfile.TemporaryDirectory(prefix="bench-quix-") as scratch:
        interval = (
            [] if commit_interval_s is None else ["--commit-interval", f"{commit_interval_s}"]
        )
        log = Path(scratch) / "quix.log"
        # A file, not a pipe: nobody reads the log while the app runs, and a full pipe would
        # stop it.
        with log.open("wb") as output:
            process = subprocess.Popen(  # noqa: S603 - our own app in our own environment
                [str(QUIX_PYTHON), "-m", "bench.quix_processor", "--broker", bootstrap,
                 "--input", source, "--output", target, "--group", group,
                 "--state-dir", str(Path(scratch) / "state"), *interval],
                cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            yield process
        except Exception as failure:
            failure.add_note(f"the Quix app's log: {log.read_text(errors='replace')[-3000:]}")
            raise
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


@contextmanager
def our_process(bootstrap: str, source: str, target: str, group: str) -> Iterator[object]:
    with service_process(
        "processor", processor_environment(bootstrap, source, target, group)
    ) as running:
        yield running


Peer = Callable[[str, str, str], AbstractContextManager[object]]


def _run(
    bootstrap: str,
    jobs: int,
    sleep_ms: int,
    name: str,
    commit_interval_s: float | None,
    peer: Peer,
) -> PeerThroughput:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    group = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    with own_topics(kafka) as (source, target):
        start = partition_end_offsets(kafka, target)
        with peer(source, target, group):
            wait_for_members(bootstrap, group, 1)
            visibility = Visibility(kafka, start)
            with visibility:
                created = backlog(bootstrap, source, jobs, sleep_ms)
                committed_ns = time.time_ns()
                visibility.wait_for(
                    created.keys(), SLACK_S + jobs * sleep_ms / 1000 + (commit_interval_s or 5)
                )
        # Read once the instance has stopped: what its last commit wrote counts too.
        records = records_since(kafka, start, target)
    for key, value in records:
        done = JobDone.from_json(value)
        if done.id != key.decode() or done.create_date != created.get(done.id):
            raise ValueError(f"{name}: output {value!r} under key {key!r} is not its job's")
    outputs = Counter(key.decode() for key, _ in records)
    return summarise(
        name, sleep_ms, commit_interval_s, created, committed_ns, visibility.seen, outputs
    )


def measure(
    bootstrap: str, jobs: int, sleep_ms: int, commit_interval_s: float | None
) -> PeerThroughput:
    """One Quix instance (exactly-once; ``commit_interval_s`` None: Quix's default) through a
    backlog of ``jobs`` with ``sleep_ms`` each."""
    return _run(
        bootstrap,
        jobs,
        sleep_ms,
        "quix",
        commit_interval_s,
        lambda source, target, group: quix_process(
            bootstrap, source, target, group, commit_interval_s
        ),
    )


def measure_ours(bootstrap: str, jobs: int, sleep_ms: int) -> PeerThroughput:
    """One of our processors through the same backlog, measured as ``measure`` measures Quix."""
    return _run(
        bootstrap,
        jobs,
        sleep_ms,
        "jobflow",
        None,
        lambda source, target, group: our_process(bootstrap, source, target, group),
    )


def compare(
    bootstrap: str,
    jobs: int = JOBS,
    slow_jobs: int = SLOW_JOBS,
    intervals: tuple[float, ...] = SHORT_INTERVALS_S,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Every run of the comparison and its figures: ours at 0 and 100 ms, Quix at its default
    interval and at each of ``intervals`` at 0 ms, then at its default and its best at 100 ms.
    Each run takes its own fresh topics and instance, one after the other."""
    progress(f"jobflow: {jobs} jobs at 0 and {SLEEP_MS} ms")
    ours_fast = measure_ours(bootstrap, jobs, 0)
    ours_slow = measure_ours(bootstrap, jobs, SLEEP_MS)
    progress(f"quix: {jobs} jobs at 0 ms, its default interval and {intervals} s")
    quix_default_fast = measure(bootstrap, jobs, 0, None)
    quix_short_fast = [measure(bootstrap, jobs, 0, interval) for interval in intervals]
    quix_best_fast = best([quix_default_fast, *quix_short_fast])
    progress(
        f"quix: {slow_jobs} jobs at {SLEEP_MS} ms, default and {quix_best_fast.commit_interval_s} s"
    )
    quix_default_slow = measure(bootstrap, slow_jobs, SLEEP_MS, None)
    quix_best_slow = measure(bootstrap, slow_jobs, SLEEP_MS, quix_best_fast.commit_interval_s)
    runs = [
        ours_fast,
        ours_slow,
        quix_default_fast,
        *quix_short_fast,
        quix_default_slow,
        quix_best_slow,
    ]
    return {
        "jobflow_jobs_per_s": {"0ms": ours_fast.jobs_per_s, "100ms": ours_slow.jobs_per_s},
        "quix_default_jobs_per_s": {
            "0ms": quix_default_fast.jobs_per_s,
            "100ms": quix_default_slow.jobs_per_s,
        },
        "quix_best_interval_s": quix_best_fast.commit_interval_s,
        "quix_best_jobs_per_s": {
            "0ms": quix_best_fast.jobs_per_s,
            "100ms": quix_best_slow.jobs_per_s,
        },
        "jobflow_vs_quix": {
            "0ms": ratio(ours_fast, quix_best_fast),
            "100ms": ratio(ours_slow, quix_best_slow),
        },
        "create_to_visible_p50_p99_ms": {
            f"{run.peer}_{label}_{run.sleep_ms}ms": [
                run.create_to_visible_p50_ms,
                run.create_to_visible_p99_ms,
            ]
            for label, run in [
                ("", ours_fast),
                ("", ours_slow),
                ("default", quix_default_fast),
                ("best", quix_best_fast),
                ("default", quix_default_slow),
                ("best", quix_best_slow),
            ]
        },
        "lost_jobs": sum(run.lost for run in runs),
        "duplicated_jobs": sum(run.duplicated for run in runs),
        "runs": [dataclasses.asdict(run) for run in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quix", description=__doc__)
    parser.add_argument("--jobs", type=int, default=JOBS, help="backlog at 0 ms, and ours at 100")
    parser.add_argument("--slow-jobs", type=int, default=SLOW_JOBS, help="Quix's at 100 ms")
    parser.add_argument(
        "--intervals",
        default=",".join(f"{interval:g}" for interval in SHORT_INTERVALS_S),
        help="Quix's commit intervals to try besides its default, in seconds",
    )
    arguments = parser.parse_args()
    settings = StackSettings()
    asyncio.run(stack.up(settings))
    figures = compare(
        settings.kafka_bootstrap,
        arguments.jobs,
        arguments.slow_jobs,
        tuple(float(interval) for interval in arguments.intervals.split(",")),
        lambda step: print(f"==> {step}", flush=True),
    )
    figures["machine"] = {"cpus": os.cpu_count()}
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
