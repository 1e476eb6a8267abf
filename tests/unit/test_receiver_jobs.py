"""The receiver's domain: defaults and bounds of a new job."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from jobflow.receiver.jobs import CreateJobRequest, new_job, random_hex

# run by make security-check too (tests/targets.mk)
pytestmark = pytest.mark.security


def test_a_job_without_a_request_takes_the_defaults() -> None:
    jobs = [new_job(CreateJobRequest(), 100, 10, 1024) for _ in range(200)]
    assert all(90 <= job.sleep <= 110 for job in jobs)
    assert len({job.sleep for job in jobs}) > 1, "default sleeps are spread, as the seed's are"
    assert all(len(job.data) == 1024 for job in jobs)
    assert len({job.id for job in jobs}) == len(jobs)


def test_a_request_overrides_the_defaults() -> None:
    job = new_job(CreateJobRequest(sleep=0, data_size=7), 100, 10, 1024)
    assert (job.sleep, len(job.data)) == (0, 7)


def test_jitter_never_makes_a_negative_sleep() -> None:
    assert all(new_job(CreateJobRequest(), 2, 10, 1).sleep >= 0 for _ in range(100))


@pytest.mark.parametrize("length", [0, 1, 2, 33, 1024])
def test_payload_is_that_many_hex_characters(length: int) -> None:
    assert re.fullmatch(f"[0-9a-f]{{{length}}}", random_hex(length))


@pytest.mark.parametrize(
    "body",
    [{"sleep": True}, {"sleep": "5"}, {"data_size": -1}, {"data_size": 65_537}, {"other": 1}],
)
def test_requests_outside_the_documented_bounds_are_rejected(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CreateJobRequest.model_validate(body)


def test_an_integral_json_number_is_an_integer_as_the_openapi_schema_says() -> None:
    # JSON Schema's "integer" (the OpenAPI document's type for sleep and data_size) includes
    # 296.0; a strict int rejected it, so a request the schema allows got 422.
    request = CreateJobRequest.model_validate_json(b'{"sleep": 296.0, "data_size": 7.0}')
    assert (request.sleep, request.data_size) == (296, 7)
    assert isinstance(request.sleep, int)


@pytest.mark.parametrize("body", [b'{"sleep": 1.5}', b'{"sleep": "296"}', b'{"sleep": true}'])
def test_what_is_not_an_integer_is_rejected(body: bytes) -> None:
    with pytest.raises(ValidationError, match="Input should be a valid integer"):
        CreateJobRequest.model_validate_json(body)


def test_the_openapi_document_states_the_bounds_as_json_schema_does() -> None:
    properties = CreateJobRequest.model_json_schema()["properties"]
    assert properties["sleep"]["anyOf"][0] == {"type": "integer", "minimum": 0, "maximum": 60000}
    assert properties["data_size"]["anyOf"][0] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 65536,
    }
