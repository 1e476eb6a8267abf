"""The converter's domain: one JobDone, three records in the sinks' formats."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from jobflow.core.kafka import OutRecord
from jobflow.core.metrics import JOB_BUCKETS
from jobflow.core.models import ClickhouseMessage, JobDone, PostgresMessage
from jobflow.core.service import serve
from jobflow.core.settings import KafkaSettings
from jobflow.core.stage import Stage, StageSettings, create_stage_app
from jobflow.core.timestamps import NANOS_PER_SECOND, now_ns

JOBS_CONVERTED = Counter("jobflow_jobs_converted_total", "JobDone records the converter converted.")
PIPELINE_LATENCY = Histogram(
    "jobflow_pipeline_latency_seconds",
    "From a job's create_date to the converter handing its rows to the sinks' topics.",
    buckets=JOB_BUCKETS,
)


class ConverterSettings(StageSettings):
    model_config = SettingsConfigDict(env_prefix="CONVERTER_", extra="ignore")

    port: int = Field(default=8003, ge=1, le=65535, description="Port of metrics and probes.")
    group_id: str = Field(default="converter", description="Kafka consumer group.")


def convert(done: JobDone, postgres_topic: str, clickhouse_topic: str) -> list[OutRecord]:
    """The Postgres row message, then the ``create`` and ``finish`` CSV rows, all keyed by id."""
    key = done.id.encode()
    return [
        OutRecord(postgres_topic, key=key, value=PostgresMessage.from_job_done(done).to_json()),
        *(
            OutRecord(clickhouse_topic, key=key, value=row.to_csv())
            for row in ClickhouseMessage.rows_for(done)
        ),
    ]


class ConvertJobs(Stage[JobDone]):
    name = "converter"
    input_model = JobDone

    def __init__(self, postgres_topic: str, clickhouse_topic: str) -> None:
        self._postgres_topic = postgres_topic
        self._clickhouse_topic = clickhouse_topic

    async def handle(self, record: JobDone) -> list[OutRecord]:
        JOBS_CONVERTED.inc()
        PIPELINE_LATENCY.observe((now_ns() - record.create_date) / NANOS_PER_SECOND)
        return convert(record, self._postgres_topic, self._clickhouse_topic)


def create(settings: ConverterSettings, kafka: KafkaSettings) -> FastAPI:
    return create_stage_app(
        "converter",
        ConvertJobs(kafka.postgres_topic, kafka.clickhouse_topic),
        input_topic=kafka.processor_topic,
        output_topics={kafka.postgres_topic, kafka.clickhouse_topic},
        settings=settings,
        kafka=kafka,
    )


def main() -> None:
    """``python -m jobflow converter``: serve until SIGTERM, with settings from the environment."""
    settings = ConverterSettings()
    serve(create(settings, KafkaSettings()), settings, "converter")
