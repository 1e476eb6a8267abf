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
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

from confluent_kafka import KafkaException, Message
from fastapi import FastAPI
from pydantic import Field, ValidationError
from tenacity import AsyncRetrying, before_sleep_log, retry_if_exception, wait_exponential

from jobflow.core.kafka import (
    AsyncProducer,
    BatchConsumer,
    DeliveryError,
    OutRecord,
    Position,
    ProducerFailedError,
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
        # An acknowledgement later than librdkafka's own delivery timeout will never come.
        self._ack_timeout_s = kafka.delivery_timeout_ms / 1000 + 5.0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, handle, produce and commit batches until ``stop`` is set.

        Returns only when stopped; raises when the pipeline cannot go on (an error no retry
        fixes), leaving the current batch uncommitted for whoever consumes it next.
        """
        await self._consumer.subscribe()
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
            await self._commit(batch)
        finally:
            in_flight.dec(len(batch))
        BATCH_SECONDS.labels(self._stage.name).observe(time.perf_counter() - started)

    async def _commit(self, batch: list[Message]) -> None:
        try:
            await self._consumer.commit(batch)
        except KafkaException as exc:
            # The outputs are acknowledged; the batch will be consumed again (a rebalance moved
            # the partition, or the coordinator is away), which at-least-once allows.
            log.warning("offset commit failed; the batch will be replayed: %s", exc)

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

    async def _deliver(self, records: list[OutRecord], stop: asyncio.Event) -> None:
        """Produce every record, retrying those the broker did not acknowledge.

        Retries go on with backoff while the service runs: committing past an unacknowledged
        record would lose it. An error no retry fixes is raised at once; once stopping, the
        last error is raised. Either way the batch stays uncommitted, to be replayed.
        """
        pending = records
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_worth_retrying),
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
                await asyncio.wait_for(acked, self._ack_timeout_s)
            except DeliveryError as exc:
                failed.append(record)
                first_error = first_error or exc
            except TimeoutError:
                raise ProducerFailedError(
                    f"no acknowledgement within {self._ack_timeout_s:.0f}s"
                ) from None
        return failed, first_error


def _worth_retrying(error: BaseException) -> bool:
    if isinstance(error, DeliveryError):
        return not error.permanent
    return isinstance(error, ProducerQueueFullError)


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

    def on_worker_exit(task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # The stage cannot go on: say why, and stop the process so that its supervisor
        # (supervisord locally, the kubelet in a cluster) starts a fresh one.
        log.critical("stage stopped", exc_info=task.exception())
        os.kill(os.getpid(), signal.SIGTERM)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal worker
        producer.start()
        worker = asyncio.create_task(runner.run(stop), name=f"{service}-stage")
        worker.add_done_callback(on_worker_exit)
        yield
        stop.set()
        finished, _pending = await asyncio.wait({worker}, timeout=settings.shutdown_timeout_s)
        if not finished:
            log.warning("stage did not finish its batch in time; it will be replayed")
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
        return None

    topics = {input_topic, kafka.dlq_topic(input_topic), *output_topics}
    return create_app(
        service=service,
        lifespan=lifespan,
        readiness=kafka_readiness(producer, topics),
        liveness=liveness,
    )
