"""Whatever bytes arrive on a stage's input topic, the stage does not crash: a record it cannot
decode becomes exactly one dead letter, on `<topic>.dlq`, carrying the original key and value
and headers that say why; anything else is a valid record of the input model."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast
from unittest import mock

import pytest
from confluent_kafka import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from jobflow.converter.service import ConvertJobs
from jobflow.core.kafka import OutRecord
from jobflow.core.settings import KafkaSettings
from jobflow.core.stage import Stage, StageRunner
from jobflow.processor.service import ProcessJobs

# run by make security-check too (tests/targets.mk)
pytestmark = pytest.mark.security

KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1")
STAGES: dict[str, tuple[Stage[Any], str]] = {
    "processor": (ProcessJobs(KAFKA.processor_topic), KAFKA.receiver_topic),
    "converter": (ConvertJobs(KAFKA.postgres_topic, KAFKA.clickhouse_topic), KAFKA.processor_topic),
}
VALID: dict[str, dict[str, object]] = {
    "processor": {
        "id": "b31b7446-20f7-4add-adea-157bac7fe73b",
        "create_date": "2024-01-27T12:34:50.594423357Z",
        "sleep": 0,
        "data": "ab",
    },
    "converter": {
        "id": "b31b7446-20f7-4add-adea-157bac7fe73b",
        "status": "finish",
        "create_date": "2024-01-27T12:34:50.594423357Z",
        "finish_date": "2024-01-27T12:34:50.704464721Z",
    },
}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def as_json(document: object) -> bytes:
    # The standard library's encoder writes integers of any size, as a producer might.
    return json.dumps(document).encode()


async def no_wait(_seconds: float) -> None:
    """The processor's work time: a valid record drawn here may ask for up to a minute, which
    has nothing to do with decoding."""


def handle(stage: str, value: bytes) -> list[OutRecord]:
    handler, topic = STAGES[stage]
    runner = StageRunner(handler, cast(Any, None), cast(Any, None), KAFKA, 1, 0.1)
    message = Message(topic=topic, partition=2, offset=41, key=b"the-key", value=value)
    with mock.patch.object(asyncio, "sleep", no_wait):
        return asyncio.run(runner._handle(message))


def assert_dead_lettered_or_valid(stage: str, value: bytes) -> None:
    outputs = handle(stage, value)
    handler, topic = STAGES[stage]
    try:
        handler.input_model.from_json(value)
    except ValidationError:
        (dead,) = outputs
        assert dead.topic == f"{topic}.dlq"
        assert (dead.key, dead.value) == (b"the-key", value)
        headers = dict(dead.headers)
        assert headers["dlq.stage"] == stage.encode()
        assert headers["dlq.source.topic"] == topic.encode()
        assert (headers["dlq.source.partition"], headers["dlq.source.offset"]) == (b"2", b"41")
        assert headers["dlq.reason"]
    else:
        assert all(not record.topic.endswith(".dlq") for record in outputs)


@pytest.mark.parametrize("stage", sorted(STAGES))
@FUZZ
@given(value=st.binary(max_size=2048))
def test_arbitrary_bytes_are_dead_lettered(stage: str, value: bytes) -> None:
    assert_dead_lettered_or_valid(stage, value)


@pytest.mark.parametrize("stage", sorted(STAGES))
@FUZZ
@given(document=JSON)
def test_arbitrary_json_is_dead_lettered_unless_it_is_a_valid_record(
    stage: str, document: object
) -> None:
    assert_dead_lettered_or_valid(stage, as_json(document))


@pytest.mark.parametrize("stage", sorted(STAGES))
@FUZZ
@given(data=st.data())
def test_a_valid_record_with_one_field_broken_is_dead_lettered(
    stage: str, data: st.DataObject
) -> None:
    record = dict(VALID[stage])
    field = data.draw(st.sampled_from(sorted(record)))
    if data.draw(st.booleans()):
        del record[field]
    else:
        record[field] = data.draw(JSON.filter(lambda value: value != record[field]))
    assert_dead_lettered_or_valid(stage, as_json(record))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_valid_record_is_not_dead_lettered(stage: str) -> None:
    (output,) = handle(stage, as_json(VALID[stage]))[:1]
    assert not output.topic.endswith(".dlq")
