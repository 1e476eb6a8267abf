"""Consume-transform-produce: the loop shared by processor and converter.

Records are handled as soon as they are consumed, many at once (the processor's sleeps
overlap), and each is committed as soon as it is done, whatever else is in flight: in one Kafka
transaction, the outputs of the records finished since the last one are produced and their
input offsets committed, so readers of the output topics (read_committed) see a record's
outputs exactly when it is committed, and a crash anywhere neither loses a record nor
duplicates one. Kafka commits one offset per partition, below which every record is done; the
records done above it (finished while an earlier one still runs) travel in the commit's
metadata and are skipped by whoever consumes the partition next (see offsets.py).

What is promised: each record's outputs are produced exactly once, together, in one
transaction. Not promised: any order between records, even of one key or partition; a job
finishes when its own sleep ends.

A record that cannot be decoded goes to the input topic's dead-letter topic, with headers
saying why, in the same way, and the stage goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from confluent_kafka import KafkaException, Message, TopicPartition
from fastapi import FastAPI
from pydantic import Field, ValidationError

from jobflow.core.kafka import (
    AssignmentLostError,
    AsyncProducer,
    BatchConsumer,
    DeliveryError,
    OutRecord,
    Position,
    ProducerQueueFullError,
    position,
)
from jobflow.core.metrics import (
    DLQ_RECORDS,
    OFFSET_METADATA_FULL,
    RECORD_SECONDS,
    RECORDS_CONSUMED,
    RECORDS_IN_FLIGHT,
    RECORDS_SKIPPED,
)
from jobflow.core.models import WireModel
from jobflow.core.offsets import DEFAULT_MAX_METADATA_BYTES, Completions, Partition
from jobflow.core.service import create_app, kafka_readiness, stop_process_on_failure
from jobflow.core.settings import KafkaSettings, TransactionalServiceSettings
from jobflow.core.transactions import (
    give_up_if_retriable,
    run_transaction,
    transaction_timeout_s,
    transactional_config,
    worth_retrying,
)

log = logging.getLogger(__name__)

# The longest pause before a batch whose transaction was aborted is consumed again.
MAX_ABORT_PAUSE_S = 5.0

In = TypeVar("In", bound=WireModel)


class Stage(ABC, Generic[In]):
    """The domain part of a pipeline stage: what one input record turns into."""

    name: str
    input_model: type[In]

    @abstractmethod
    async def handle(self, record: In) -> list[OutRecord]:
        """The records to produce for one decoded input record."""


@dataclass
class _Record:
    """A consumed record, from its handling to its commit."""

    message: Message
    where: Position
    started: float
    outputs: list[OutRecord] = field(default_factory=list)

    @property
    def partition(self) -> Partition:
        return (self.where.topic, self.where.partition)


class StageRunner(Generic[In]):
    """Runs a Stage over a consumer and a producer until asked to stop."""

    def __init__(
        self,
        stage: Stage[In],
        consumer: BatchConsumer,
        producer: AsyncProducer,
        kafka: KafkaSettings,
        max_in_flight: int,
        poll_timeout_s: float,
        drain_timeout_s: float = 10.0,
        max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES,
    ) -> None:
        self._stage = stage
        self._consumer = consumer
        self._producer = producer
        self._kafka = kafka
        self._max_in_flight = max_in_flight
        self._poll_timeout_s = poll_timeout_s
        self._drain_timeout_s = drain_timeout_s
        self._transaction_timeout_s = transaction_timeout_s(kafka)
        self._aborts_in_a_row = 0
        self._completions = Completions(max_metadata_bytes)
        self._handling: dict[asyncio.Future[list[OutRecord]], _Record] = {}
        self._finished: list[_Record] = []
        # Set whenever a record finishes; cleared when the finished ones are committed.
        self._a_record_finished = asyncio.Event()
        # Set whenever records leave the in-flight bound (committed or dropped).
        self._room = asyncio.Event()
        # One transaction or one rewind at a time: a rewind must not drop what a transaction
        # under way is committing, nor a transaction commit what a rewind dropped.
        self._transaction = asyncio.Lock()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, handle, and produce-and-commit records until ``stop`` is set.

        Records are consumed as they come and handled at once, while earlier ones are still
        being handled. Whatever has finished is committed in the next transaction, which
        begins as soon as the previous one ends, while consuming goes on: the more a
        transaction takes, the more records the next one carries. A long job holds one place
        of the in-flight bound, and no other record.

        Returns only when stopped, after committing what finishes within the drain time (the
        rest is consumed again by whoever gets its partitions); raises when the
        pipeline cannot go on (an error no retry fixes, or this instance was fenced), leaving
        what is in flight uncommitted for whoever consumes it next.
        """
        await self._producer.init_transactions(self._transaction_timeout_s)
        await self._consumer.subscribe()
        committer = asyncio.create_task(self._commit_as_records_finish(stop), name="commits")
        try:
            while not stop.is_set():
                if committer.done():
                    committer.result()  # its error: the stage cannot go on
                await self._consume_more()
            # Stopping: commit what finishes within the drain time; the rest is dropped (no
            # transaction is open for it) and handled again by whoever gets its partitions.
            deadline = time.monotonic() + self._drain_timeout_s
            while self._open_records() and (left_s := deadline - time.monotonic()) > 0:
                if committer.done():
                    committer.result()
                self._room.clear()
                await _wait_for(self._room, min(left_s, self._poll_timeout_s))
            async with self._transaction:  # a transaction under way ends first
                committer.cancel()
        finally:
            # Cancelled in the middle of a transaction, the committer aborts it (shielded from
            # further cancels) before it ends.
            committer.cancel()
            await asyncio.wait({committer}, timeout=self._transaction_timeout_s)
            self._drop_in_flight()

    def _open_records(self) -> int:
        return len(self._handling) + len(self._finished)

    async def _commit_as_records_finish(self, stop: asyncio.Event) -> None:
        """Commit what has finished, one transaction after the other, beside the loop that
        consumes: a record arriving during a transaction is consumed at once, and one
        finishing during it goes into the next."""
        while True:
            await self._a_record_finished.wait()
            async with self._transaction:
                await self._commit_finished(stop)

    async def _consume_more(self) -> None:
        """Start handling what has arrived, within the in-flight bound; when full, wait a
        little for records to be committed."""
        room = self._max_in_flight - self._open_records()
        if room <= 0:
            self._room.clear()
            if await _wait_for(self._room, self._poll_timeout_s):
                return
            # Still full: fetch nothing more, but go on polling while the records in flight
            # are handled. A rebalance's callbacks run only inside a poll, and an eager
            # rebalance waits for every member's: not polling would hold the whole group up for
            # as long as the longest job (a minute). Not paused at once: a pause throws away
            # what was fetched ahead, which short jobs, freeing room within a poll timeout,
            # need.
            await self._consumer.pause()
            messages = await self._consumer.consume(1, 0)
        else:
            await self._consumer.resume()
            messages = await self._poll(room)
        if self._consumer.take_revoked():
            # A rebalance ran inside that poll. Records consumed before it may be of
            # partitions that are now another instance's: committing them would duplicate its
            # work. They are dropped, with what the poll brought, and consumed again from the
            # committed offsets (skipping what the commits' metadata says is done).
            async with self._transaction:
                await self._rewind()
            return
        if messages:
            await self._start(messages)

    async def _poll(self, room: int) -> list[Message]:
        """Up to ``room`` records: waits up to a poll timeout for the first one, then takes
        what is there. (A batch consume would wait for the whole batch or the timeout.)"""
        messages = await self._consumer.consume(1, self._poll_timeout_s)
        if messages and room > 1:
            messages += await self._consumer.consume(room - 1, 0)
        return messages

    async def _start(self, messages: list[Message]) -> None:
        """Handle each record that is not done already."""
        records = [_Record(m, position(m), time.perf_counter()) for m in messages]
        unknown = self._completions.unknown(record.partition for record in records)
        if unknown:
            # Newly assigned: where its committed offset is, and what is done above it.
            self._completions.load(
                await self._consumer.committed(unknown, self._transaction_timeout_s)
            )
        for record in records:
            if not self._completions.admit(record.partition, record.where.offset):
                RECORDS_SKIPPED.labels(record.where.topic).inc()
                continue
            RECORDS_IN_FLIGHT.labels(self._stage.name).inc()
            handling = asyncio.ensure_future(self._handle(record.message))
            self._handling[handling] = record
            handling.add_done_callback(self._on_finished)

    def _on_finished(self, handling: asyncio.Future[list[OutRecord]]) -> None:
        record = self._handling.pop(handling, None)
        if record is None or handling.cancelled():
            return  # dropped: it will be consumed again
        record.outputs = handling.result()
        self._finished.append(record)
        self._a_record_finished.set()

    async def _commit_finished(self, stop: asyncio.Event) -> None:
        """Commit the records finished since the last commit, in one transaction (those of a
        partition whose offset metadata would not hold them wait for its earlier records)."""
        self._a_record_finished.clear()
        if not self._finished:
            return
        finished: dict[Partition, list[int]] = defaultdict(list)
        for record in self._finished:
            finished[record.partition].append(record.where.offset)
        plan = self._completions.plan(finished)
        if plan.held_back:
            OFFSET_METADATA_FULL.labels(self._stage.name).inc(plan.held_back)
        committing = {
            (partition, offset) for partition, offsets in plan.records.items() for offset in offsets
        }
        done = [r for r in self._finished if (r.partition, r.where.offset) in committing]
        if not done:
            return
        outputs = [output for record in done for output in record.outputs]
        if not await self._commit_in_transaction(plan.offsets, outputs, stop):
            return
        # Records finished meanwhile stay for the next transaction.
        self._finished = [
            r for r in self._finished if (r.partition, r.where.offset) not in committing
        ]
        self._completions.mark_committed(plan)
        self._room.set()
        RECORDS_IN_FLIGHT.labels(self._stage.name).dec(len(done))
        committed = time.perf_counter()
        for record in done:
            RECORD_SECONDS.labels(self._stage.name).observe(committed - record.started)

    def _drop_in_flight(self) -> None:
        """Forget every record not committed yet: each is consumed again."""
        RECORDS_IN_FLIGHT.labels(self._stage.name).dec(self._open_records())
        handling = list(self._handling)
        self._handling.clear()
        for future in handling:
            future.cancel()
        self._finished.clear()
        self._completions.clear()
        self._room.set()

    async def _rewind(self) -> None:
        """Drop what is in flight and consume again from the committed offsets."""
        self._drop_in_flight()
        self._consumer.forget_revoked()
        committed = await self._consumer.rewind_to_committed(self._transaction_timeout_s)
        self._completions.load(committed)

    async def _commit_in_transaction(
        self, offsets: list[TopicPartition], records: list[OutRecord], stop: asyncio.Event
    ) -> bool:
        """Produce ``records`` and commit ``offsets``, atomically; false when aborted.

        After an abortable failure (a broker away, a record not delivered in time, a
        rebalance) the transaction is aborted, what is in flight dropped, and the consumer
        rewound to its committed offsets: the records, or those still assigned here, are
        consumed and handled again, after a pause that grows while aborts follow one another.
        """
        try:
            with self._consumer.committing():
                await self._transact(offsets, records)
        except AssignmentLostError:
            # A rebalance: what was in flight is dropped at once, and consumed again by
            # whoever has its partitions now.
            await self._rewind()
            return False
        except (KafkaException, ProducerQueueFullError, DeliveryError) as exc:
            if not worth_retrying(exc):
                raise
            self._aborts_in_a_row += 1
            pause_s = min(MAX_ABORT_PAUSE_S, 0.1 * 2**self._aborts_in_a_row)
            log.warning(
                "transaction aborted; its records will be consumed again",
                extra={"error": str(exc), "pause_s": pause_s},
            )
            if not stop.is_set():
                await asyncio.sleep(pause_s)
            await self._rewind()
            return False
        self._aborts_in_a_row = 0
        return True

    async def _transact(self, offsets: list[TopicPartition], records: list[OutRecord]) -> None:
        await run_transaction(
            self._producer,
            records,
            writer=self._stage.name,
            timeout_s=self._transaction_timeout_s,
            before_commit=lambda: self._send_offsets(offsets),
        )

    async def _send_offsets(self, offsets: list[TopicPartition]) -> None:
        """send_offsets_to_transaction, once, for the reason give_up_if_retriable gives."""
        metadata = self._consumer.group_metadata()
        try:
            await self._producer.send_offsets_to_transaction(
                offsets, metadata, self._transaction_timeout_s
            )
        except KafkaException as exc:
            give_up_if_retriable(exc, "offsets", self._stage.name)
            raise

    async def _handle(self, message: Message) -> list[OutRecord]:
        where = position(message)
        RECORDS_CONSUMED.labels(where.topic).inc()
        try:
            record = self._stage.input_model.from_json(message.value() or b"")
            return await self._stage.handle(record)
        except ValidationError as exc:
            reason = describe(exc)
        except Exception as exc:
            log.exception("record could not be handled", extra={"topic": where.topic})
            reason = f"{type(exc).__name__}: {exc}"
        DLQ_RECORDS.labels(where.topic).inc()
        log.warning(
            "dead-lettered a record",
            extra={
                "topic": where.topic,
                "partition": where.partition,
                "offset": where.offset,
                "reason": reason,
            },
        )
        return [self._dead_letter(message, where, reason)]

    def _dead_letter(self, message: Message, where: Position, reason: str) -> OutRecord:
        return OutRecord(
            topic=self._kafka.dlq_topic(where.topic),
            key=message.key(),
            value=message.value() or b"",
            headers=(
                ("dlq.reason", reason.encode()),
                ("dlq.stage", self._stage.name.encode()),
                ("dlq.source.topic", where.topic.encode()),
                ("dlq.source.partition", str(where.partition).encode()),
                ("dlq.source.offset", str(where.offset).encode()),
            ),
        )


async def _wait_for(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for ``event``; whether it is set."""
    with suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)
    return event.is_set()


def describe(error: ValidationError) -> str:
    """A one-line reason for a dead-lettered record."""
    first = error.errors(include_url=False)[0]
    location = ".".join(str(part) for part in first["loc"]) or "record"
    return f"{location}: {first['msg']} ({error.error_count()} error(s))"


class StageSettings(TransactionalServiceSettings):
    """Settings of a consume-transform-produce service; subclasses set the env prefix."""

    group_id: str = Field(description="Kafka consumer group of the service's instances.")
    max_in_flight: int = Field(
        default=2_000,
        ge=1,
        le=100_000,
        description=(
            "Most records consumed and not yet committed, handled concurrently; a long job "
            "holds one place. A crash makes the next instance handle again only those not "
            "finished: finished ones are committed within a transaction's time."
        ),
    )
    offset_metadata_max_bytes: int = Field(
        default=DEFAULT_MAX_METADATA_BYTES,
        ge=0,
        description=(
            "Longest offset commit metadata, which says what is done above a partition's "
            "lowest unfinished record: the brokers' offset.metadata.max.bytes (4096 by "
            "default), which it must not exceed. When that does not fit, records finished "
            "above a long job are committed after it; with 0 they always are."
        ),
    )
    poll_timeout_s: float = Field(
        default=0.2,
        gt=0,
        description=(
            "How long an idle poll waits for a record, and a full stage for one to finish "
            "before it pauses its partitions (it goes on polling, for the group's sake)."
        ),
    )
    partition_start_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description=(
            "How long an assigned partition may wait to start fetching before the liveness "
            "probe fails. It waits while a transaction holds its committed offset open: "
            "normally until the broker completes or times out that transaction (a crashed "
            "writer's, within its transaction timeout); for good when the broker never does "
            "(docs/operations.md). Keep it above that timeout (KAFKA_DELIVERY_TIMEOUT_MS + 10 s) "
            "and the brokers' check for timed-out transactions (10 s by default)."
        ),
    )
    session_timeout_ms: int = Field(
        default=10_000,
        ge=6_000,
        le=300_000,
        description=(
            "How long the group waits for a silent instance before handing its partitions to "
            "the others (Kafka's default is 45 s): the pause a crashed instance causes."
        ),
    )

    def transactional_id(self) -> str:
        return f"{self.group_id}-{self.instance_id}"


def create_stage_app(
    service: str,
    stage: Stage[In],
    input_topic: str,
    output_topics: set[str],
    settings: StageSettings,
    kafka: KafkaSettings,
) -> FastAPI:
    """The FastAPI app of a stage service: runs the stage in the background, serves probes."""
    producer = AsyncProducer(kafka, transactional_config(settings.transactional_id(), kafka))
    consumer = BatchConsumer(
        kafka,
        settings.group_id,
        [input_topic],
        {
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": settings.session_timeout_ms // 3,
        },
    )
    runner = StageRunner(
        stage,
        consumer,
        producer,
        kafka,
        settings.max_in_flight,
        settings.poll_timeout_s,
        # Half the shutdown time waits for records to finish; the rest is left for their
        # transaction, so that the process is not cancelled in the middle of one.
        drain_timeout_s=settings.shutdown_timeout_s / 2,
        max_metadata_bytes=settings.offset_metadata_max_bytes,
    )
    stop = asyncio.Event()
    worker: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal worker
        producer.start()
        worker = asyncio.create_task(runner.run(stop), name="stage")
        worker.add_done_callback(stop_process_on_failure)
        yield
        stop.set()
        finished, _pending = await asyncio.wait({worker}, timeout=settings.shutdown_timeout_s)
        if not finished:
            log.warning("stage did not commit its records in time; they will be replayed")
            worker.cancel()
            await asyncio.wait({worker})
        await consumer.close()
        await asyncio.to_thread(producer.close, 2.0)

    def liveness() -> str | None:
        if not producer.alive():
            return "producer polling thread died"
        if worker is not None and worker.done() and not stop.is_set():
            error = worker.exception() if not worker.cancelled() else None
            return f"stage stopped: {error!r}"
        if waiting := consumer.partitions_not_started(settings.partition_start_timeout_s):
            return (
                f"partitions assigned but not fetching for over "
                f"{settings.partition_start_timeout_s:.0f} s (is a transaction holding their "
                f"committed offsets open?): {', '.join(waiting)}"
            )
        return None

    topics = {input_topic, kafka.dlq_topic(input_topic), *output_topics}
    return create_app(
        service=service,
        lifespan=lifespan,
        readiness=kafka_readiness(producer, topics),
        liveness=liveness,
    )
