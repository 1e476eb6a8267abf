"""Load, faults and the reckoning afterwards, for the fault-injection scenarios.

A scenario runs a steady load against the local stack's receiver, injects one fault, stops the
load, waits for the pipeline to drain, then counts every accepted job in each place it must be
exactly once: processor-topic, postgres-topic, clickhouse-topic (read_committed), PostgreSQL,
ClickHouse's deduplicated query, the informer.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from local.components import Component, Kafka
from local.config import StackSettings
from local.stack import components
from local.supervisor import Supervisor

from jobflow.core.settings import PostgresSettings
from tests.polling import eventually


@dataclass(frozen=True)
class ChaosProfile:
    """How hard and how long each scenario pushes."""

    rate_per_s: int
    load_s: float
    fault_after_s: float
    postgres_outage_s: float
    drain_timeout_s: float


# `make chaos` runs the full profile; `make test` the short one (CHAOS_PROFILE unset).
PROFILES = {
    "short": ChaosProfile(
        rate_per_s=100, load_s=10, fault_after_s=3, postgres_outage_s=10, drain_timeout_s=150
    ),
    "full": ChaosProfile(
        rate_per_s=300, load_s=40, fault_after_s=10, postgres_outage_s=30, drain_timeout_s=300
    ),
}


# How old a transaction still open must be to be one the broker left open: a live one is
# aborted by the coordinator past its timeout (15 s, transactional_config).
LEFT_OPEN_AFTER_S = 30
# Kafka 4.3's TransactionMarkerChannelManager when a partition's leader is not in its metadata.
_MARKERS_SKIPPED = re.compile(
    r"Couldn't find leader endpoint for partitions (?:Hash)?Set\((.*?)\) while trying to send "
    r"transaction markers for (\S+), these"
)
# A transaction the coordinator is still completing: its markers may yet arrive.
_COMPLETING = {"PrepareCommit", "PrepareAbort", "PrepareEpochFence"}


def _read_from(log: Path, offset: int) -> str:
    if not log.exists():
        return ""
    with log.open("rb") as lines:
        lines.seek(offset)
        return lines.read().decode(errors="replace")


def profile() -> ChaosProfile:
    name = os.environ.get("CHAOS_PROFILE", "short")
    if name not in PROFILES:
        raise ValueError(f"CHAOS_PROFILE={name!r}: expected one of {sorted(PROFILES)}")
    return PROFILES[name]


# --- Load --------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    accepted: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    # When (time.monotonic()) each request was due, and each accepted one was sent.
    sent_at: list[float] = field(default_factory=list)
    accepted_sent_at: list[float] = field(default_factory=list)

    def before(self, moment: float) -> tuple[int, int]:
        """How many requests were sent before ``moment``, and how many of those accepted."""
        return (
            sum(1 for sent in self.sent_at if sent < moment),
            sum(1 for sent in self.accepted_sent_at if sent < moment),
        )


class Load:
    """POST /api/v1/create/job at a fixed rate from a thread of its own, until stopped.

    Open model: requests are started on schedule whether or not earlier ones have answered
    (up to ``max_in_flight``; beyond that a tick is counted as an error, not queued). The jobs
    ask for ``sleeps_ms`` in turn."""

    def __init__(
        self,
        receiver_url: str,
        rate_per_s: int,
        max_in_flight: int = 200,
        sleeps_ms: Sequence[int] = (100,),
    ) -> None:
        self._url = receiver_url
        self._sleeps_ms = itertools.cycle(sleeps_ms)
        self._interval_s = 1 / rate_per_s
        self._max_in_flight = max_in_flight
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.result = LoadResult()

    def __enter__(self) -> Load:
        """Start, and return once the first request is due: setting up the client takes a
        loaded machine a second, which the scenario's time before its fault must not lose."""
        self._thread.start()
        self._started.wait(timeout=30)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        self._thread.join(timeout=60)
        return self.result

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self._max_in_flight)
        async with httpx.AsyncClient(base_url=self._url, timeout=10, limits=limits) as client:
            in_flight: set[asyncio.Task[None]] = set()
            self._started.set()
            next_at = time.monotonic()
            while not self._stop.is_set():
                self.result.sent_at.append(time.monotonic())
                if len(in_flight) >= self._max_in_flight:
                    self.result.errors["client: too many in flight"] += 1
                else:
                    task = asyncio.create_task(self._one(client))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                next_at += self._interval_s
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if in_flight:
                await asyncio.wait(in_flight)

    async def _one(self, client: httpx.AsyncClient) -> None:
        sent = time.monotonic()
        try:
            sleep_ms = next(self._sleeps_ms)
            answer = await client.post("/api/v1/create/job", json={"sleep": sleep_ms})
        except httpx.HTTPError as exc:
            self.result.errors[f"client: {type(exc).__name__}"] += 1
            return
        if answer.status_code == httpx.codes.OK:
            self.result.accepted.append(answer.json()["id"])
            self.result.accepted_sent_at.append(sent)
        else:
            self.result.errors[f"HTTP {answer.status_code}"] += 1


def create_one(receiver_url: str, timeout_s: float = 60) -> str:
    """One job, retried until the receiver accepts it; its id."""

    def attempt() -> str | None:
        try:
            answer = httpx.post(f"{receiver_url}/api/v1/create/job", json={"sleep": 100}, timeout=5)
        except httpx.HTTPError:
            return None
        return answer.json()["id"] if answer.status_code == httpx.codes.OK else None

    return eventually(attempt, timeout_s, "the receiver accepted no job")


# --- Faults ------------------------------------------------------------------------------------


class Stack:
    """The running local stack's components, to break and mend."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.supervisor = Supervisor(settings)
        self.parts = {component.name: component for component in components(settings)}

    def pid(self, name: str) -> int:
        state, pid = self.supervisor.state(name)
        assert state == "RUNNING", f"{name} is {state}"
        return pid

    def kill_9(self, name: str) -> None:
        """SIGKILL the component; supervisord starts it again (it exited unexpectedly)."""
        before = self.pid(name)
        os.kill(before, signal.SIGKILL)

        def restarted() -> bool:
            state, pid = self.supervisor.state(name)
            return state == "RUNNING" and pid not in (0, before)

        eventually(restarted, 60, f"supervisord did not start {name} again")
        self.wait_ready(name)

    def stop(self, name: str) -> None:
        self.supervisor.stop(name)

    def start(self, name: str) -> None:
        self.supervisor.start(name)
        self.wait_ready(name)

    def wait_ready(self, name: str, timeout_s: float = 120) -> None:
        component: Component = self.parts[name]
        eventually(
            lambda: asyncio.run(component.unready_reason()) is None,
            timeout_s,
            f"{name} not ready again after {timeout_s:.0f}s",
        )

    def wait_healthy(self, when: str, timeout_s: float = 60) -> None:
        """Every component running and ready; a program just started (supervisord's STARTING)
        gets a moment."""
        try:
            eventually(lambda: not self.unwell(), timeout_s)
        except AssertionError:
            raise AssertionError(
                f"{when}: not running and ready within {timeout_s:.0f}s: "
                f"{', '.join(self.unwell()) or '(all well just now)'}"
            ) from None

    # --- Transactions a broker left open (KAFKA-20734) ---

    def broker_log_sizes(self) -> dict[Path, int]:
        """Each broker's log file and its size now: where a scenario's lines begin."""
        logs = [self.settings.path("logs", f"{name}.log") for name in self.brokers().values()]
        return {log: log.stat().st_size for log in logs}

    def markers_skipped(self, since: dict[Path, int]) -> dict[str, set[str]]:
        """The partitions to which a broker skipped a transaction's markers, taking them for
        deleted, by transactional id, in its log from ``since`` on (docs/operations.md). A log
        rolled over since is read on from the rolled file."""
        skipped: dict[str, set[str]] = {}
        for log, offset in since.items():
            if log.stat().st_size >= offset:
                text = _read_from(log, offset)
            else:
                text = _read_from(log.parent / f"{log.name}.1", offset) + _read_from(log, 0)
            for found in _MARKERS_SKIPPED.finditer(text):
                partitions = {partition.strip() for partition in found.group(1).split(",")}
                skipped.setdefault(found.group(2), set()).update(partitions)
        return skipped

    def abort_offsets_left_open(self, skipped: dict[str, set[str]], before_ms: int) -> list[str]:
        """Abort, with Kafka's own tool, the transaction each transactional id of ``skipped``
        left open on its ``__consumer_offsets`` partitions, when the coordinator is done with it
        (not completing it, nor running it as its current transaction) and its last write there
        came before ``before_ms`` (epoch milliseconds) and longer ago than any transaction may
        stay open: its pending offsets keep the group from starting. Output partitions are left
        to their writer's next commit, which completes them as the coordinator decided;
        aborting one would drop records it had committed. What an operator does
        (docs/operations.md); returns what was aborted, or failed to be."""
        last_write_before_ms = min(before_ms, time.time() * 1000 - LEFT_OPEN_AFTER_S * 1000)
        aborted = []
        for transactional_id, partitions in sorted(skipped.items()):
            offsets = sorted(p for p in partitions if p.startswith("__consumer_offsets-"))
            if not offsets:
                continue
            description = self._transactions_tool(
                "describe", "--transactional-id", transactional_id
            ).splitlines()[1]
            _, _, producer, current_epoch, state, *_ = description.split()
            if state in _COMPLETING:
                continue
            live_epoch = current_epoch if state == "Ongoing" else None
            for name in offsets:
                topic, partition = name.rsplit("-", 1)
                where = ["--topic", topic, "--partition", partition]
                for epoch, start in self._left_open(
                    where, producer, live_epoch, last_write_before_ms
                ):
                    what = f"{name}: {transactional_id}, epoch {epoch}, from {start}"
                    try:
                        self._transactions_tool("abort", *where, "--start-offset", start)
                    except subprocess.CalledProcessError as failed:
                        what += f": abort failed: {failed.stderr.strip()[-200:]}"
                    aborted.append(what)
        return aborted

    def _left_open(
        self, where: list[str], producer: str, live_epoch: str | None, last_write_before_ms: float
    ) -> list[tuple[str, str]]:
        """The epoch and start offset of ``producer``'s transaction open on the partition
        ``where`` names, unless it is the live one (``live_epoch``) or was written to since
        ``last_write_before_ms``."""
        found = []
        for row in self._transactions_tool("describe-producers", *where).splitlines()[1:]:
            row_producer, epoch, _, _, last_write_ms, start = row.split()
            if (
                row_producer == producer
                and start != "None"  # "None": nothing of it open there
                and epoch != live_epoch
                and int(last_write_ms) < last_write_before_ms
            ):
                found.append((epoch, start))
        return found

    def _transactions_tool(self, *arguments: str) -> str:
        kafka = next(part for part in self.parts.values() if isinstance(part, Kafka))
        command = kafka.java(
            "org.apache.kafka.tools.TransactionsCommand",
            "--bootstrap-server",
            self.settings.kafka_bootstrap,
            *arguments,
            heap="256m",
            log_name="kafka-transactions",
        )
        return subprocess.run(  # noqa: S603
            command, check=True, capture_output=True, text=True, timeout=60
        ).stdout

    # --- Brokers (a stack of several) ---

    def brokers(self) -> dict[int, str]:
        """Each broker's component name by its node id."""
        return {part.node: name for name, part in self.parts.items() if isinstance(part, Kafka)}

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap, "log_level": 0})

    def leaders(self, topic: str) -> Counter[int]:
        """How many of the topic's partitions each broker leads, by node id."""
        metadata = self.admin().list_topics(topic, timeout=10)
        return Counter(partition.leader for partition in metadata.topics[topic].partitions.values())

    def leader_of(self, topic: str, partition: int) -> int:
        """The node id of the broker leading the partition."""
        metadata = self.admin().list_topics(topic, timeout=10)
        return int(metadata.topics[topic].partitions[partition].leader)

    def out_of_sync(self) -> list[str]:
        """Partitions, internal topics' included, with a replica missing from their ISR (or
        no leader); empty when every replica is in sync."""
        metadata = self.admin().list_topics(timeout=10)
        return [
            f"{topic.topic}-{partition.id}"
            for topic in metadata.topics.values()
            for partition in topic.partitions.values()
            if partition.leader < 0 or set(partition.isrs) != set(partition.replicas)
        ]

    def wait_in_sync(self, when: str, timeout_s: float = 180) -> None:
        """Every partition's replicas all back in its ISR: no under-replicated partitions."""

        def in_sync() -> bool:
            try:
                return not self.out_of_sync()
            except KafkaException:  # no broker answered in time: ask again
                return False

        eventually(
            in_sync,
            timeout_s,
            f"{when}: partitions still under-replicated after {timeout_s:.0f}s",
        )

    def unwell(self) -> list[str]:
        """Components not running or not ready (empty when all are well)."""
        unwell = []
        for name, component in self.parts.items():
            state, _ = self.supervisor.state(name)
            if state != "RUNNING" or asyncio.run(component.unready_reason()) is not None:
                unwell.append(f"{name} ({state})")
        return unwell


# --- The reckoning -----------------------------------------------------------------------------


def postgres_statuses(
    since_epoch_s: int, postgres: PostgresSettings | None = None
) -> dict[str, list[str]]:
    conninfo = (postgres or PostgresSettings()).conninfo()
    with psycopg.connect(conninfo, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT id, status FROM jobs WHERE create_date >= %s", (since_epoch_s,)
        ).fetchall()
    statuses: dict[str, list[str]] = {}
    for job, status in rows:
        statuses.setdefault(str(job), []).append(str(status))
    return statuses


def clickhouse_counts(settings: StackSettings, since_epoch_s: int) -> Counter[tuple[str, str]]:
    """(id, status) → rows in the deduplicated query, for rows created since then."""
    query = (
        "SELECT id, status, count() FROM jobs FINAL "
        f"WHERE timestamp >= toDateTime({since_epoch_s}) GROUP BY id, status FORMAT TSV"
    )
    answer = httpx.post(settings.clickhouse_url, content=query.encode(), timeout=60)
    assert answer.status_code == httpx.codes.OK, answer.text
    counts: Counter[tuple[str, str]] = Counter()
    for line in answer.text.splitlines():
        job, status, count = line.split("\t")
        counts[(job, status)] = int(count)
    return counts


def informer_statuses(informer_url: str, ids: list[str]) -> dict[str, str]:
    async def look_up_all() -> dict[str, str]:
        gate = asyncio.Semaphore(20)
        async with httpx.AsyncClient(base_url=informer_url, timeout=10) as client:

            async def one(job: str) -> tuple[str, str]:
                async with gate:
                    answer = await client.get(f"/info/{job}")
                return job, answer.json()["status"] if answer.status_code == 200 else "error"

            return dict(await asyncio.gather(*(one(job) for job in ids)))

    return asyncio.run(look_up_all())


@dataclass
class Outcome:
    scenario: str
    accepted: int
    errors: int
    in_postgres: int
    in_clickhouse: int
    duplicates: int
    lost: int
    dead_lettered: int
    recovery_s: float | None
    unacknowledged_written: int
    # Of the requests sent before the fault: how many, and how many were accepted.
    before_fault: tuple[int, int] = (0, 0)
    # Partitions to which the broker skipped a transaction's markers (KAFKA-20734), by
    # transactional id, and the transactions it so left open that were aborted
    # (docs/operations.md).
    markers_skipped: dict[str, set[str]] = field(default_factory=dict)
    aborted: list[str] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)

    def row(self) -> list[str]:
        recovery = "-" if self.recovery_s is None else f"{self.recovery_s:.1f}"
        return [
            self.scenario,
            str(self.accepted),
            str(self.errors),
            str(self.in_postgres),
            str(self.in_clickhouse),
            str(self.duplicates),
            str(self.lost),
            str(self.dead_lettered),
            recovery,
        ]


HEADER = [
    "scenario",
    "accepted",
    "errors",
    "in Postgres",
    "in ClickHouse",
    "duplicates",
    "lost",
    "DLQ'd",
    "recovery s",
]


def table(outcomes: list[Outcome]) -> str:
    rows = [HEADER, *(outcome.row() for outcome in outcomes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def first_time(probe: Callable[[], bool], timeout_s: float) -> float | None:
    """When ``probe`` first held (time.monotonic()), or None within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return time.monotonic()
        time.sleep(0.25)
    return None
