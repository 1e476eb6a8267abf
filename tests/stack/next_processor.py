"""The processor's next version, as a rolling upgrade would run it beside the current one: its
Job has gained an optional field (``priority``), which it reads; everything else is the
processor's own code.

    python -m tests.stack.next_processor        (settings as the processor's)
"""

from __future__ import annotations

from prometheus_client import Counter

from jobflow.core.kafka import OutRecord
from jobflow.core.models import Job
from jobflow.core.service import serve
from jobflow.core.settings import KafkaSettings
from jobflow.core.stage import create_stage_app
from jobflow.processor.service import ProcessJobs, ProcessorSettings

NEXT_JOBS = Counter(
    "next_processor_jobs_total", "Jobs the next version read, by priority.", ["priority"]
)


class NextJob(Job):
    priority: int = 0


class ProcessNextJobs(ProcessJobs):
    input_model = NextJob

    async def handle(self, record: Job) -> list[OutRecord]:
        if not isinstance(record, NextJob):
            raise TypeError(f"read as {type(record).__name__}")
        NEXT_JOBS.labels(str(record.priority)).inc()
        return await super().handle(record)


def main() -> None:
    settings, kafka = ProcessorSettings(), KafkaSettings()
    app = create_stage_app(
        "processor",
        ProcessNextJobs(kafka.processor_topic),
        input_topic=kafka.receiver_topic,
        output_topics={kafka.processor_topic},
        settings=settings,
        kafka=kafka,
    )
    serve(app, settings, "processor")


if __name__ == "__main__":
    main()
