"""The receiver's domain: what a new job looks like, from an optional request."""

from __future__ import annotations

import os
import random
import uuid
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from jobflow.core.models import MAX_DATA_SIZE, MAX_SLEEP_MS, Job
from jobflow.core.timestamps import now_ns


def _json_integer(value: object) -> object:
    """An integer as JSON Schema (and so the OpenAPI document) defines it: 296 and 296.0 are
    the same number; "296", true and 1.5 are not integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


# The bounds go on the integer, before the validator wraps it: so the OpenAPI document shows
# them as its minimum and maximum (put after, pydantic writes keys JSON Schema does not know).
SleepMs = Annotated[int, Field(ge=0, le=MAX_SLEEP_MS), BeforeValidator(_json_integer)]
DataSize = Annotated[int, Field(ge=0, le=MAX_DATA_SIZE), BeforeValidator(_json_integer)]


class CreateJobRequest(BaseModel):
    """Optional body of POST /api/v1/create/job; an absent field takes its default."""

    model_config = ConfigDict(extra="forbid")

    sleep: SleepMs | None = Field(default=None, description="Work time of the job, in ms.")
    data_size: DataSize | None = Field(default=None, description="Length of the job's payload.")


def random_sleep_ms(center_ms: int, jitter_ms: int) -> int:
    """A work time around ``center_ms``, as the seed's jobs have (~100 ms)."""
    low = max(0, center_ms - jitter_ms)
    return random.randint(low, center_ms + jitter_ms)  # noqa: S311 - not for security


def random_hex(length: int) -> str:
    """``length`` random hexadecimal characters: the job's payload."""
    return os.urandom((length + 1) // 2).hex()[:length]


def new_job(
    request: CreateJobRequest, default_sleep_ms: int, sleep_jitter_ms: int, default_data_size: int
) -> Job:
    sleep = (
        request.sleep
        if request.sleep is not None
        else random_sleep_ms(default_sleep_ms, sleep_jitter_ms)
    )
    size = request.data_size if request.data_size is not None else default_data_size
    return Job(id=str(uuid.uuid4()), create_date=now_ns(), sleep=sleep, data=random_hex(size))
