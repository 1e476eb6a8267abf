"""The seed specification's message formats, byte for byte."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from jobflow.converter.service import convert
from jobflow.core.models import (
    ClickhouseMessage,
    CreatedJob,
    Job,
    JobDone,
    JobInfo,
    PostgresMessage,
    WireModel,
)
from jobflow.core.timestamps import format_rfc3339_nano, parse_rfc3339_nano

JOB_ID = "b31b7446-20f7-4add-adea-157bac7fe73b"
CREATE_DATE = "2024-01-27T12:34:50.594423357Z"
FINISH_DATE = "2024-01-27T12:34:50.704464721Z"

SPEC_JOB = {"id": JOB_ID, "create_date": CREATE_DATE, "sleep": 99, "data": "4f16"}
SPEC_JOB_DONE = {
    "id": JOB_ID,
    "status": "finish",
    "create_date": CREATE_DATE,
    "finish_date": FINISH_DATE,
}

SPEC_POSTGRES_MESSAGE = {
    "schema": {
        "type": "struct",
        "fields": [
            {"type": "string", "optional": False, "field": "id"},
            {"type": "string", "optional": False, "field": "status"},
            {"type": "int64", "optional": False, "field": "create_date"},
            {"type": "int64", "optional": False, "field": "finish_date"},
        ],
    },
    "payload": {
        "id": JOB_ID,
        "status": "finish",
        "create_date": 1706358890,
        "finish_date": 1706358890,
    },
}


def test_job_round_trips_the_receiver_topic_format() -> None:
    raw = orjson.dumps(SPEC_JOB)
    job = Job.from_json(raw)
    assert job.to_json() == raw
    assert list(orjson.loads(job.to_json())) == ["id", "create_date", "sleep", "data"]


def test_created_job_is_the_receivers_answer() -> None:
    job = Job(id=JOB_ID, create_date=CREATE_DATE, sleep=99, data="ab" * 512)
    created = CreatedJob.from_job(job)
    assert created.to_json() == (
        b'{"id":"b31b7446-20f7-4add-adea-157bac7fe73b",'
        b'"create_date":"2024-01-27T12:34:50.594423357Z","sleep":99,"data_size":1024}'
    )


def test_job_done_matches_the_processor_topic_example() -> None:
    done = JobDone(id=JOB_ID, create_date=CREATE_DATE, finish_date=FINISH_DATE)
    assert orjson.loads(done.to_json()) == SPEC_JOB_DONE
    assert list(orjson.loads(done.to_json())) == ["id", "status", "create_date", "finish_date"]
    assert JobDone.from_json(orjson.dumps(SPEC_JOB_DONE)) == done


def test_postgres_message_matches_the_json_with_schema_example() -> None:
    done = JobDone(id=JOB_ID, create_date=CREATE_DATE, finish_date=FINISH_DATE)
    message = PostgresMessage.from_job_done(done)
    assert message.to_json() == orjson.dumps(SPEC_POSTGRES_MESSAGE)


def test_clickhouse_rows_match_the_csv_example() -> None:
    done = JobDone(id=JOB_ID, create_date=CREATE_DATE, finish_date=FINISH_DATE)
    rows = [row.to_csv() for row in ClickhouseMessage.rows_for(done)]
    assert rows == [
        b"b31b7446-20f7-4add-adea-157bac7fe73b,create,2024-01-27T12:34:50.594423357Z",
        b"b31b7446-20f7-4add-adea-157bac7fe73b,finish,2024-01-27T12:34:50.704464721Z",
    ]


def test_converter_writes_one_postgres_record_and_two_csv_rows_keyed_by_id() -> None:
    done = JobDone(id=JOB_ID, create_date=CREATE_DATE, finish_date=FINISH_DATE)
    records = convert(done, "postgres-topic", "clickhouse-topic")
    assert [(r.topic, r.key) for r in records] == [
        ("postgres-topic", JOB_ID.encode()),
        ("clickhouse-topic", JOB_ID.encode()),
        ("clickhouse-topic", JOB_ID.encode()),
    ]
    assert orjson.loads(records[0].value) == SPEC_POSTGRES_MESSAGE
    assert records[1].value.startswith(f"{JOB_ID},create,".encode())
    assert records[2].value.startswith(f"{JOB_ID},finish,".encode())


def test_informer_answers_match_the_examples() -> None:
    found = JobInfo(id=JOB_ID, status="finish", create_date=CREATE_DATE, finish_date=FINISH_DATE)
    assert found.to_json() == (
        b'{"id":"b31b7446-20f7-4add-adea-157bac7fe73b","status":"finish",'
        b'"create_date":"2024-01-27T12:34:50.594423357Z",'
        b'"finish_date":"2024-01-27T12:34:50.704464721Z"}'
    )
    missing = JobInfo(id="00000000-0000-0000-0000-000000000000", status="unknown")
    assert missing.to_json() == b'{"id":"00000000-0000-0000-0000-000000000000","status":"unknown"}'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CREATE_DATE, CREATE_DATE),
        ("2024-01-27T12:34:50Z", "2024-01-27T12:34:50Z"),
        ("2024-01-27T12:34:50.5Z", "2024-01-27T12:34:50.5Z"),
        ("2024-01-27T12:34:50.500000000Z", "2024-01-27T12:34:50.5Z"),
        ("2024-01-27T12:34:50.000000001Z", "2024-01-27T12:34:50.000000001Z"),
        ("2024-01-27T15:34:50.594423357+03:00", CREATE_DATE),
        ("2024-01-27t12:34:50.594423357z", CREATE_DATE),
    ],
)
def test_timestamps_are_rfc3339_nano_in_utc(text: str, expected: str) -> None:
    assert format_rfc3339_nano(parse_rfc3339_nano(text)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2024-01-27",
        "2024-01-27 12:34:50Z",
        "2024-01-27T12:34:50",
        "2024-01-27T12:34:50.1234567890Z",
        "2024-13-27T12:34:50Z",
        "2024-01-27T25:34:50Z",
        "yesterday",
    ],
)
def test_malformed_timestamps_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|month|hour"):
        parse_rfc3339_nano(text)


def test_epoch_seconds_round_down_like_the_postgres_example() -> None:
    done = JobDone(id=JOB_ID, create_date="2024-01-27T12:34:50.999999999Z", finish_date=FINISH_DATE)
    assert PostgresMessage.from_job_done(done).payload.create_date == 1706358890


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"{}",
        orjson.dumps({**SPEC_JOB_DONE, "id": "not-a-uuid"}),
        orjson.dumps({**SPEC_JOB_DONE, "status": "create"}),
        orjson.dumps({**SPEC_JOB_DONE, "finish_date": "tomorrow"}),
        orjson.dumps({key: value for key, value in SPEC_JOB_DONE.items() if key != "id"}),
    ],
)
def test_malformed_job_done_is_rejected(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        JobDone.from_json(raw)


@pytest.mark.parametrize(("model", "spec"), [(Job, SPEC_JOB), (JobDone, SPEC_JOB_DONE)])
def test_a_record_from_a_version_ahead_is_read_without_the_fields_it_added(
    model: type[WireModel], spec: dict[str, object]
) -> None:
    newer = orjson.dumps({**spec, "priority": 3, "labels": {"team": "a"}})
    assert model.from_json(newer) == model.from_json(orjson.dumps(spec))
    # Written again, it is the seed's record exactly.
    assert orjson.loads(model.from_json(newer).to_json()) == spec


@pytest.mark.parametrize(("model", "spec"), [(Job, SPEC_JOB), (JobDone, SPEC_JOB_DONE)])
def test_every_field_a_reader_requires_is_a_seed_field(
    model: type[WireModel], spec: dict[str, object]
) -> None:
    # A field added later has a default: a record written before it still reads.
    required = {name for name, field in model.model_fields.items() if field.is_required()}
    assert required <= spec.keys()


@pytest.mark.parametrize(
    "create_date",
    [
        1706358890594423357,  # a number: the wire's dates are strings
        True,
        "0001-01-01T00:00:00+01:00",  # before the epoch
        "9999-12-31T23:59:59-01:00",  # past year 9999
        "2024-01-27T12:34:50+99:99",
        "2024-01-27T12:34:50+\u0660\u0663:00",  # Arabic-Indic digits
    ],
)
def test_dates_outside_the_contract_are_rejected_on_the_wire(create_date: object) -> None:
    with pytest.raises(ValidationError, match="create_date"):
        JobDone.from_json(orjson.dumps({**SPEC_JOB_DONE, "create_date": create_date}))


def test_a_job_longer_than_a_minute_is_rejected_on_the_wire() -> None:
    job = {"id": JOB_ID, "create_date": CREATE_DATE, "sleep": 60_001, "data": ""}
    with pytest.raises(ValidationError, match="sleep"):
        Job.from_json(orjson.dumps(job))
