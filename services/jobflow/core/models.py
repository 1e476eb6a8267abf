"""Every message of the pipeline, one model each, in the order the data flows.

Field names, types and formats are the contract of the seed specification: receiver-topic
carries ``Job``, processor-topic ``JobDone``, postgres-topic ``PostgresMessage`` (Kafka Connect's
"JSON with schema" envelope) and clickhouse-topic two CSV rows per job.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from jobflow.core.timestamps import EpochNanos, epoch_seconds, format_rfc3339_nano

JobId = Annotated[
    str,
    StringConstraints(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        min_length=36,
        max_length=36,
    ),
]
"""A job id: a UUID in canonical lower-case form, exactly as the receiver generates it."""


MAX_SLEEP_MS = 60_000
"""Longest work time a job may ask for: a longer one would hold its whole batch."""
MAX_DATA_SIZE = 65_536
"""Longest payload a job may carry."""


class JobStatus(StrEnum):
    CREATE = "create"
    FINISH = "finish"
    UNKNOWN = "unknown"


class WireModel(BaseModel):
    """A message on a topic: strict about its fields' values, serialised compactly with orjson.

    Readers accept a record from one version ahead or one back, so that during a rolling
    upgrade old and new instances read each other's records: a field they do not know is
    dropped (none of the stages copies a record whole: JobDone and the sinks' rows are built
    from named fields), and a field added later must have a default, which a record from before
    it gets. A field is removed only once no reader requires it. A record with a field missing
    or of the wrong type is invalid, and goes to the dead-letter topic.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Self:
        return cls.model_validate_json(raw)


class Job(WireModel):
    """receiver-topic: a job to run, keyed by ``id``."""

    id: JobId
    create_date: EpochNanos
    sleep: int = Field(
        ge=0, le=MAX_SLEEP_MS, description="How long the processor works on the job, in ms."
    )
    data: str = Field(description="Payload, random hex characters.")


class CreatedJob(WireModel):
    """The receiver's answer to POST /api/v1/create/job."""

    id: JobId
    create_date: EpochNanos
    sleep: int
    data_size: int

    @classmethod
    def from_job(cls, job: Job) -> CreatedJob:
        return cls(id=job.id, create_date=job.create_date, sleep=job.sleep, data_size=len(job.data))


class JobDone(WireModel):
    """processor-topic: a finished job, keyed by ``id``."""

    id: JobId
    status: Literal[JobStatus.FINISH] = JobStatus.FINISH
    create_date: EpochNanos
    finish_date: EpochNanos


class ConnectField(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    optional: bool
    field: str


class ConnectSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["struct"] = "struct"
    fields: tuple[ConnectField, ...]


class PostgresPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: JobId
    status: JobStatus
    create_date: int = Field(description="Seconds since the epoch.")
    finish_date: int = Field(description="Seconds since the epoch.")


class PostgresMessage(WireModel):
    """postgres-topic: a row of table ``jobs`` in Kafka Connect's JSON-with-schema envelope."""

    SCHEMA: ClassVar[ConnectSchema] = ConnectSchema(
        fields=(
            ConnectField(type="string", optional=False, field="id"),
            ConnectField(type="string", optional=False, field="status"),
            ConnectField(type="int64", optional=False, field="create_date"),
            ConnectField(type="int64", optional=False, field="finish_date"),
        )
    )

    # The field is named schema_ because BaseModel.schema is taken; the alias is the wire name.
    schema_: ConnectSchema = Field(default=SCHEMA, alias="schema")
    payload: PostgresPayload

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True))

    @classmethod
    def from_job_done(cls, done: JobDone) -> PostgresMessage:
        return cls(
            payload=PostgresPayload(
                id=done.id,
                status=done.status,
                create_date=epoch_seconds(done.create_date),
                finish_date=epoch_seconds(done.finish_date),
            )
        )


class ClickhouseMessage(BaseModel):
    """clickhouse-topic: one CSV row ``id,status,timestamp`` per job event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: JobId
    status: JobStatus
    # Named as the seed names it; it is the time of the event: the job's create_date on its
    # `create` row, its finish_date on its `finish` row.
    create_date: EpochNanos

    def to_csv(self) -> bytes:
        # None of the fields can hold a comma, quote or newline (a UUID, an enum, a timestamp),
        # so no quoting is needed. One message is one row, without a line end: the Kafka engine
        # parses each message on its own (kafka_row_delimiter, on servers that need one).
        return f"{self.id},{self.status.value},{format_rfc3339_nano(self.create_date)}".encode()

    @classmethod
    def rows_for(cls, done: JobDone) -> tuple[ClickhouseMessage, ClickhouseMessage]:
        return (
            cls(id=done.id, status=JobStatus.CREATE, create_date=done.create_date),
            cls(id=done.id, status=JobStatus.FINISH, create_date=done.finish_date),
        )


class ErrorAnswer(BaseModel):
    """The body of an error answer (4xx other than 422, 5xx): what went wrong, in words."""

    detail: str


class JobInfo(BaseModel):
    """The informer's answer to GET /info/{id}; dates are absent for an unknown job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    status: str
    create_date: str | None = None
    finish_date: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(exclude_none=True))
