"""Consume-transform-produce, one batch at a time: the loop shared by processor and converter.

A batch is read, every record of it is handled concurrently, all outputs are produced and
acknowledged by the broker, and only then are the batch's offsets committed. A crash anywhere
before the commit replays the batch, so nothing acknowledged upstream is lost. A record that
cannot be decoded goes to the input topic's dead-letter topic, with headers saying why, and
the batch goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

from confluent_kafka import Message
from fastapi import FastAPI
from pydantic import Field, ValidationError
from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception_type,
    wait_exponential,
)

from jobflow.core.kafka import (
    AsyncProducer,
    BatchConsumer,
    DeliveryError,
    OutRecord,
    Position,
    ProducerQueueFullError,
    position,
)
from jobflow.core.metrics import BATCH_SECONDS, DLQ_RECORDS, RECORDS_CONSUMED, RECORDS_IN_FLIGHT
from jobflow.core.models import WireModel
from jobflow.core.service import create_app, kafka_readiness
from jobflow.core.settings import KafkaSettings, ServiceSettings

log = logging.getLogger(__name__)

In = TypeVar("In", bound=WireModel)


class Stage(ABC, Generic[In]):
    """The domain part of a pipeline stage: what one input record turns into."""

    name: str
    input_model: type[In]

    @abstractmethod
    async def handle(self, record: In) -> list[OutRecord]:
        """The records to produce for one decoded input record."""


class StageRunner(Generic[In]):
    """Runs a Stage over a consumer and a producer until asked to stop."""

    def __init__(
        self,
        stage: Stage[In],
        consumer: BatchConsumer,
        producer: AsyncProducer,
        kafka: KafkaSettings,
        max_batch: int,
        poll_timeout_s: float,
    ) -> None:
        self._stage = stage
        self._consumer = consumer
        self._producer = producer
        self._kafka = kafka
        self._max_batch = max_batch
        self._poll_timeout_s = poll_timeout_s
        self.batches_committed = 0

    async def run(self, stop: asyncio.Event) -> None:
        self._consumer.subscribe()
        while not stop.is_set():
            batch = await self._consumer.consume(self._max_batch, self._poll_timeout_s)
            if batch:
                await self.process(batch, stop)

    async def process(self, batch: list[Message], stop: asyncio.Event) -> None:
        started = time.perf_counter()
        in_flight = RECORDS_IN_FLIGHT.labels(self._stage.name)
        in_flight.inc(len(batch))
        try:
            outputs = await asyncio.gather(*(self._handle(message) for message in batch))
            await self._deliver([record for records in outputs for record in records], stop)
            await self._consumer.commit(batch)
            self.batches_committed += 1
        finally:
            in_flight.dec(len(batch))
        BATCH_SECONDS.labels(self._stage.name).observe(time.perf_counter() - started)

    async def _handle(self, message: Message) -> list[OutRecord]:
        where = position(message)
        RECORDS_CONSUMED.labels(where.topic).inc()
        try:
            record = self._stage.input_model.from_json(message.value() or b"")
        except ValidationError as exc:
            DLQ_RECORDS.labels(where.topic).inc()
            log.warning(
                "dead-lettered undecodable record",
                extra={"topic": where.topic, "partition": where.partition, "offset": where.offset},
            )
            return [self._dead_letter(message, where, describe(exc))]
        return await self._stage.handle(record)

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

    async def _deliver(self, records: list[OutRecord], stop: asyncio.Event) -> None:
        """Produce every record, retrying those the broker did not acknowledge.

        Retries go on with backoff while the service runs: committing past an unacknowledged
        record would lose it. Once stopping, the last error is raised and the batch stays
        uncommitted, to be replayed by whoever owns the partitions next.
        """
        pending = records
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((DeliveryError, ProducerQueueFullError)),
            wait=wait_exponential(multiplier=0.1, max=5),
            stop=lambda _: stop.is_set(),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        ):
            with attempt:
                pending, error = await self._produce_all(pending)
                if error is not None:
                    raise error

    async def _produce_all(
        self, records: Iterable[OutRecord]
    ) -> tuple[list[OutRecord], Exception | None]:
        """Produce ``records``; return those that failed and the first failure's error."""
        queued: list[tuple[OutRecord, asyncio.Future[Message]]] = []
        failed: list[OutRecord] = []
        first_error: Exception | None = None
        for record in records:
            try:
                queued.append((record, self._producer.produce(record)))
            except ProducerQueueFullError as exc:
                failed.append(record)
                first_error = first_error or exc
        for record, acked in queued:
            try:
                await acked
            except DeliveryError as exc:
                failed.append(record)
                first_error = first_error or exc
        return failed, first_error


def describe(error: ValidationError) -> str:
    """A one-line reason for a dead-lettered record."""
    first = error.errors(include_url=False)[0]
    location = ".".join(str(part) for part in first["loc"]) or "record"
    return f"{location}: {first['msg']} ({error.error_count()} error(s))"


class StageSettings(ServiceSettings):
    """Settings of a consume-transform-produce service; subclasses set the env prefix."""

    group_id: str = Field(description="Kafka consumer group of the service's instances.")
    max_batch: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="Most records handled concurrently in one batch (the commit unit).",
    )
    poll_timeout_s: float = Field(
        default=0.2, gt=0, description="How long one poll waits for records."
    )


def create_stage_app(
    service: str,
    stage: Stage[In],
    input_topic: str,
    output_topics: set[str],
    settings: StageSettings,
    kafka: KafkaSettings,
) -> FastAPI:
    """The FastAPI app of a stage service: runs the stage in the background, serves probes."""
    producer = AsyncProducer(kafka)
    consumer = BatchConsumer(kafka, settings.group_id, [input_topic])
    runner = StageRunner(
        stage, consumer, producer, kafka, settings.max_batch, settings.poll_timeout_s
    )
    stop = asyncio.Event()
    worker: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal worker
        producer.start()
        worker = asyncio.create_task(runner.run(stop), name=f"{service}-stage")
        yield
        stop.set()
        try:
            await asyncio.wait_for(worker, settings.shutdown_timeout_s)
        except TimeoutError:
            log.warning("stage did not finish its batch in time; it will be replayed")
        finally:
            consumer.close()
            producer.close(timeout_s=2.0)

    def liveness() -> str | None:
        if worker is not None and worker.done() and not stop.is_set():
            error = worker.exception() if not worker.cancelled() else None
            return f"stage stopped: {error!r}"
        return None

    topics = {input_topic, kafka.dlq_topic(input_topic), *output_topics}
    return create_app(
        service=service,
        lifespan=lifespan,
        readiness=kafka_readiness(producer, topics),
        liveness=liveness,
    )
