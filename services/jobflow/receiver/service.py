"""POST /api/v1/create/job: a job is answered only once the broker has it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Body, FastAPI, HTTPException, Response
from prometheus_client import Counter
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from jobflow.core.body_guard import JsonBodyGuard
from jobflow.core.kafka import (
    AsyncProducer,
    DeliveryError,
    OutRecord,
    ProducerFailedError,
    ProducerQueueFullError,
)
from jobflow.core.models import MAX_DATA_SIZE, MAX_SLEEP_MS, CreatedJob, ErrorAnswer, Job
from jobflow.core.service import create_app, kafka_readiness, serve
from jobflow.core.settings import KafkaSettings, ServiceSettings
from jobflow.receiver.jobs import CreateJobRequest, new_job

JOBS_ACCEPTED = Counter("jobflow_jobs_accepted_total", "Jobs written to Kafka and answered 200.")
JOBS_REJECTED = Counter(
    "jobflow_jobs_rejected_total", "Valid jobs the receiver could not write.", ["reason"]
)


class ReceiverSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RECEIVER_", extra="ignore")

    port: int = Field(default=8001, ge=1, le=65535, description="Port of the HTTP API.")
    default_sleep_ms: int = Field(
        default=100, ge=0, le=MAX_SLEEP_MS, description="Work time of a job created without one."
    )
    sleep_jitter_ms: int = Field(
        default=10, ge=0, description="Default work times spread uniformly by this much either way."
    )
    default_data_size: int = Field(
        default=1024,
        ge=0,
        le=MAX_DATA_SIZE,
        description="Payload length of a job created without one.",
    )
    queue_max_records: int = Field(
        default=10_000,
        ge=1,
        description="Records the producer may hold unacknowledged; past it requests get 503.",
    )
    retry_after_s: int = Field(
        default=1, ge=1, description="Retry-After sent with a 503 when the queue is full."
    )
    max_body_bytes: int = Field(
        default=4096,
        ge=64,
        description="Longest request body accepted; a longer one gets 413 unread.",
    )

    def new_job(self, request: CreateJobRequest | None) -> Job:
        """The job a request asks for, this receiver's defaults filling in what it leaves out."""
        return new_job(
            request or CreateJobRequest(),
            self.default_sleep_ms,
            self.sleep_jitter_ms,
            self.default_data_size,
        )


def create(settings: ReceiverSettings, kafka: KafkaSettings) -> FastAPI:
    producer = AsyncProducer(kafka, {"queue.buffering.max.messages": settings.queue_max_records})
    # The broker's ack is awaited at most as long as librdkafka itself keeps trying, plus slack
    # for the delivery report to arrive.
    ack_timeout_s = kafka.delivery_timeout_ms / 1000 + 1.0

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        producer.start()
        yield
        await asyncio.to_thread(producer.close, settings.shutdown_timeout_s)

    app = create_app(
        service="receiver",
        lifespan=lifespan,
        readiness=kafka_readiness(producer, {kafka.receiver_topic}),
    )
    app.add_middleware(JsonBodyGuard, max_bytes=settings.max_body_bytes)

    @app.post(
        "/api/v1/create/job",
        response_model=CreatedJob,
        responses={
            400: {
                "model": ErrorAnswer,
                "description": "The body could not be read as JSON text (not UTF-8, say).",
            },
            413: {
                "model": ErrorAnswer,
                "description": "The body is longer than RECEIVER_MAX_BODY_BYTES; it was not read.",
            },
            415: {
                "model": ErrorAnswer,
                "description": "There is a body, and its Content-Type is not JSON.",
            },
            503: {
                "model": ErrorAnswer,
                "description": (
                    "Kafka did not acknowledge the job in time, or the receiver is overloaded. "
                    "The job may or may not have been written; it was not confirmed."
                ),
            },
        },
        summary="Create a job and write it to receiver-topic.",
    )
    async def create_job(
        request: Annotated[CreateJobRequest | None, Body()] = None,
    ) -> Response:
        job = settings.new_job(request)
        record = OutRecord(kafka.receiver_topic, key=job.id.encode(), value=job.to_json())
        try:
            await asyncio.wait_for(producer.produce(record), ack_timeout_s)
        except ProducerQueueFullError:
            JOBS_REJECTED.labels("queue_full").inc()
            raise HTTPException(
                503,
                "receiver is overloaded: too many jobs waiting for Kafka",
                headers={"Retry-After": str(settings.retry_after_s)},
            ) from None
        except (DeliveryError, ProducerFailedError, TimeoutError) as exc:
            JOBS_REJECTED.labels("kafka_unavailable").inc()
            raise HTTPException(503, f"Kafka did not acknowledge the job: {exc}") from None
        JOBS_ACCEPTED.inc()
        return Response(CreatedJob.from_job(job).to_json(), media_type="application/json")

    return app


def main() -> None:
    """``python -m jobflow receiver``: serve until SIGTERM, with settings from the environment."""
    settings = ReceiverSettings()
    serve(create(settings, KafkaSettings()), settings, "receiver")
