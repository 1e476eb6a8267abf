"""POST /api/v1/create/job: a job is answered only once it is committed to Kafka.

Jobs are written in transactions, the jobs of all the requests that arrive while one commits
going together in the next: a job answered 503 is in no read_committed reader's view, and one
answered 200 is there once. (An idempotent producer was not enough: when a broker went away,
librdkafka gave its records up, bumped its epoch and sent them again, and records the broker
had written were written twice.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Body, FastAPI, HTTPException, Response
from prometheus_client import Counter
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from jobflow.core.body_guard import JsonBodyGuard
from jobflow.core.kafka import AsyncProducer, OutRecord
from jobflow.core.models import MAX_DATA_SIZE, MAX_SLEEP_MS, CreatedJob, ErrorAnswer, Job
from jobflow.core.service import create_app, kafka_readiness, serve, stop_process_on_failure
from jobflow.core.settings import KafkaSettings, TransactionalServiceSettings
from jobflow.core.transactions import (
    GroupCommitWriter,
    WriteFailedError,
    WriterOverloadedError,
    WriteUnconfirmedError,
    transaction_timeout_s,
    transactional_config,
)
from jobflow.receiver.jobs import CreateJobRequest, new_job

JOBS_ACCEPTED = Counter("jobflow_jobs_accepted_total", "Jobs written to Kafka and answered 200.")
JOBS_REJECTED = Counter(
    "jobflow_jobs_rejected_total", "Valid jobs the receiver could not write.", ["reason"]
)


class ReceiverSettings(TransactionalServiceSettings):
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
        description="Jobs that may wait for their transaction; past it requests get 503.",
    )
    producers: int = Field(
        default=2,
        ge=1,
        le=16,
        description=(
            "Transactional producers taking turns: while one commits, the next gathers the "
            "jobs that arrive. Their transactional.id is receiver-<instance id>-<n>."
        ),
    )
    retry_after_s: int = Field(
        default=1, ge=1, description="Retry-After sent with a 503 when the queue is full."
    )
    max_body_bytes: int = Field(
        default=4096,
        ge=64,
        description="Longest request body accepted; a longer one gets 413 unread.",
    )

    def producer_transactional_id(self, number: int) -> str:
        return f"receiver-{self.instance_id}-{number}"

    def new_job(self, request: CreateJobRequest | None) -> Job:
        """The job a request asks for, this receiver's defaults filling in what it leaves out."""
        return new_job(
            request or CreateJobRequest(),
            self.default_sleep_ms,
            self.sleep_jitter_ms,
            self.default_data_size,
        )


def create(settings: ReceiverSettings, kafka: KafkaSettings) -> FastAPI:
    def new_producer(number: int) -> AsyncProducer:
        return AsyncProducer(
            kafka,
            {
                **transactional_config(settings.producer_transactional_id(number), kafka),
                "queue.buffering.max.messages": settings.queue_max_records,
            },
        )

    writer = GroupCommitWriter(
        new_producer,
        writer="receiver",
        timeout_s=transaction_timeout_s(kafka),
        max_waiting=settings.queue_max_records,
        lanes=settings.producers,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for lane in writer.start():
            lane.add_done_callback(stop_process_on_failure)
        yield
        await writer.stop(settings.shutdown_timeout_s)

    check_topics = kafka_readiness(writer, {kafka.receiver_topic})

    async def readiness() -> str | None:
        return writer.not_ready() or await check_topics()

    app = create_app(
        service="receiver", lifespan=lifespan, readiness=readiness, liveness=writer.failure
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
                    "Kafka did not take the job (its transaction was aborted, or none could "
                    "begin in time), or the receiver is overloaded: the job was not written. "
                    "Rarely Kafka does not confirm a commit in time; the job may then still be "
                    "written, once, and the detail says so."
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
            await writer.write(record)
        except WriterOverloadedError:
            JOBS_REJECTED.labels("queue_full").inc()
            raise HTTPException(
                503,
                "receiver is overloaded: too many jobs waiting for Kafka",
                headers={"Retry-After": str(settings.retry_after_s)},
            ) from None
        except WriteUnconfirmedError as exc:
            JOBS_REJECTED.labels("kafka_unconfirmed").inc()
            raise HTTPException(
                503, f"Kafka did not confirm the job in time; it may still be written, once: {exc}"
            ) from None
        except WriteFailedError as exc:
            JOBS_REJECTED.labels("kafka_unavailable").inc()
            raise HTTPException(503, f"Kafka did not acknowledge the job: {exc}") from None
        JOBS_ACCEPTED.inc()
        return Response(CreatedJob.from_job(job).to_json(), media_type="application/json")

    return app


def main() -> None:
    """``python -m jobflow receiver``: serve until SIGTERM, with settings from the environment."""
    settings = ReceiverSettings()
    serve(create(settings, KafkaSettings()), settings, "receiver")
