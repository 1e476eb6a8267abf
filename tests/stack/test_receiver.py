"""receiver on the local stack: the answer, the record in receiver-topic, bad input, no broker."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from jobflow.core.models import Job
from jobflow.core.settings import KafkaSettings
from tests.ports import free_port
from tests.stack.processes import service_process
from tests.stack.topics import end_offsets, read_until, value_of, with_key

# run by make security-check too (tests/targets.mk)
pytestmark = pytest.mark.security

RFC3339_NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


async def test_post_without_body_answers_the_specs_shape(receiver: httpx.AsyncClient) -> None:
    response = await receiver.post("/api/v1/create/job")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["id", "create_date", "sleep", "data_size"]
    assert str(uuid.UUID(body["id"])) == body["id"]
    assert RFC3339_NANO.match(body["create_date"])
    assert 90 <= body["sleep"] <= 110
    assert body["data_size"] == 1024


async def test_the_job_is_in_receiver_topic_keyed_by_id(
    receiver: httpx.AsyncClient, kafka: KafkaSettings
) -> None:
    created = (await receiver.post("/api/v1/create/job", json={"sleep": 7, "data_size": 33})).json()
    (message,) = read_until(
        kafka, kafka.receiver_topic, lambda found: len(found) == 1, with_key(created["id"])
    )
    job = Job.from_json(value_of(message))
    assert list(orjson.loads(value_of(message))) == ["id", "create_date", "sleep", "data"]
    assert orjson.loads(job.to_json())["create_date"] == created["create_date"]
    assert (job.id, job.sleep) == (created["id"], 7)
    assert re.fullmatch(r"[0-9a-f]{33}", job.data)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'{"sleep": -1}', "application/json", "greater than or equal to 0"),
        (b'{"sleep": 60001}', "application/json", "less than or equal to 60000"),
        (b'{"sleep": "100"}', "application/json", "valid integer"),
        (b'{"sleep": 1.5}', "application/json", "valid integer"),
        (b'{"sleep": true}', "application/json", "valid integer"),
        (b'{"data_size": 65537}', "application/json", "less than or equal to 65536"),
        (b'{"sleep": 1, "colour": "red"}', "application/json", "Extra inputs are not permitted"),
        (b'{"sleep": ', "application/json", "JSON decode error"),
        (b"[1, 2]", "application/json", "valid dictionary"),
    ],
)
async def test_bad_bodies_get_422_and_produce_nothing(
    receiver: httpx.AsyncClient, kafka: KafkaSettings, body: bytes, content_type: str, message: str
) -> None:
    before = end_offsets(kafka, kafka.receiver_topic)
    response = await receiver.post(
        "/api/v1/create/job", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 422
    assert message in response.text
    assert end_offsets(kafka, kafka.receiver_topic) == before


def test_broker_unreachable_gives_503_within_the_delivery_timeout() -> None:
    environment = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens there
        "KAFKA_DELIVERY_TIMEOUT_MS": "1500",
    }
    with service_process("receiver", environment) as receiver:
        readiness = receiver.get("/readyz")
        assert readiness is not None
        assert readiness.status_code == 503
        started = time.monotonic()
        response = httpx.post(f"{receiver.url}/api/v1/create/job", timeout=30)
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert "Kafka did not acknowledge the job" in response.json()["detail"]
    # Bounded by the delivery timeout (1.5 s) plus the receiver's slack (1 s): the margin is
    # generous, the point is that it does not hang.
    assert elapsed < 10


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b'{"sleep": 5}', {"Content-Type": "text/plain"}, 415, "the body must be JSON"),
        (b"sleep=5", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "must be JSON"),
        (b"<job><sleep>5</sleep></job>", {"Content-Type": "application/xml"}, 415, "must be JSON"),
        (b'{"sleep": 5, "pad": "' + b"x" * 1_000_000 + b'"}', {}, 413, "longer than 4096 bytes"),
    ],
    ids=["text", "form", "xml", "a megabyte"],
)
async def test_foreign_and_oversized_bodies_are_refused_unread_and_produce_nothing(
    receiver: httpx.AsyncClient,
    kafka: KafkaSettings,
    body: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    before = end_offsets(kafka, kafka.receiver_topic)
    response = await receiver.post(
        "/api/v1/create/job", content=body, headers={"Content-Type": "application/json", **headers}
    )
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert len(response.content) < 200, "the body is not echoed back"
    assert end_offsets(kafka, kafka.receiver_topic) == before


async def test_a_streamed_body_is_cut_off_at_the_limit(
    receiver: httpx.AsyncClient, kafka: KafkaSettings
) -> None:
    async def endless() -> AsyncIterator[bytes]:
        yield b'{"sleep": 5, "pad": "'
        for _ in range(1000):
            yield b"x" * 1024

    before = end_offsets(kafka, kafka.receiver_topic)
    response = await receiver.post(
        "/api/v1/create/job", content=endless(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert end_offsets(kafka, kafka.receiver_topic) == before
