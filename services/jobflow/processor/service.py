"""The processor's domain: a Job becomes a JobDone once its work (a sleep) is over."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from jobflow.core.kafka import OutRecord
from jobflow.core.metrics import JOB_BUCKETS
from jobflow.core.models import Job, JobDone
from jobflow.core.service import serve
from jobflow.core.settings import KafkaSettings
from jobflow.core.stage import Stage, StageSettings, create_stage_app
from jobflow.core.timestamps import NANOS_PER_SECOND, now_ns

JOBS_FINISHED = Counter("jobflow_jobs_finished_total", "Jobs the processor finished.")
JOB_DURATION = Histogram(
    "jobflow_job_duration_seconds",
    "From a job's create_date to its finish_date.",
    buckets=JOB_BUCKETS,
)


class ProcessorSettings(StageSettings):
    model_config = SettingsConfigDict(env_prefix="PROCESSOR_", extra="ignore")

    port: int = Field(default=8002, ge=1, le=65535, description="Port of metrics and probes.")
    group_id: str = Field(default="processor", description="Kafka consumer group.")


class ProcessJobs(Stage[Job]):
    name = "processor"
    input_model = Job

    def __init__(self, output_topic: str) -> None:
        self._output_topic = output_topic

    async def handle(self, record: Job) -> list[OutRecord]:
        await asyncio.sleep(record.sleep / 1000)
        done = JobDone(id=record.id, create_date=record.create_date, finish_date=now_ns())
        JOBS_FINISHED.inc()
        JOB_DURATION.observe((done.finish_date - done.create_date) / NANOS_PER_SECOND)
        return [OutRecord(self._output_topic, key=done.id.encode(), value=done.to_json())]


def create(settings: ProcessorSettings, kafka: KafkaSettings) -> FastAPI:
    return create_stage_app(
        "processor",
        ProcessJobs(kafka.processor_topic),
        input_topic=kafka.receiver_topic,
        output_topics={kafka.processor_topic},
        settings=settings,
        kafka=kafka,
    )


def main() -> None:
    """``python -m jobflow processor``: serve until SIGTERM, with settings from the environment."""
    settings = ProcessorSettings()
    serve(create(settings, KafkaSettings()), settings, "processor")
