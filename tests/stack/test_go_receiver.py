"""The seed's receiver in Go (bench/go_receiver), the ingest benchmark's peer, against ours: the
comparison means something only if it does the same work, so every request here goes to both
and must be answered alike, and the record it writes must be the receiver's (test_receiver.py).
"""

from __future__ import annotations

import re
import time
import uuid
import zlib
from collections.abc import Iterator

import httpx
import orjson
import pytest
from bench.ingest import go_receiver
from local.config import StackSettings

from jobflow.core.models import Job
from jobflow.core.settings import KafkaSettings
from tests.ports import free_port
from tests.stack.processes import ServiceProcess, service_process
from tests.stack.topics import create_topics, delete_topics, end_offsets, read_until, with_key

RFC3339_NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
PARTITIONS = 3
CREATE = "/api/v1/create/job"


@pytest.fixture(scope="module")
def topic(kafka: KafkaSettings) -> Iterator[str]:
    name = f"tests-go-receiver-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, name, partitions=PARTITIONS)
    yield name
    delete_topics(kafka, name)


@pytest.fixture(scope="module")
def peer(local_stack: StackSettings, topic: str) -> Iterator[ServiceProcess]:
    environment = {
        "KAFKA_BOOTSTRAP_SERVERS": local_stack.kafka_bootstrap,
        "KAFKA_RECEIVER_TOPIC": topic,
    }
    with service_process("receiver", environment, executable=go_receiver()) as process:
        yield process


@pytest.fixture
def ours(ports: dict[str, int]) -> str:
    return f"http://127.0.0.1:{ports['receiver']}"


def post(url: str, body: bytes | None = None, content_type: str | None = None) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return httpx.post(f"{url}{CREATE}", content=body, headers=headers, timeout=10)


def test_a_job_without_a_body_is_answered_as_the_receiver_answers_it(
    peer: ServiceProcess, ours: str
) -> None:
    theirs, mine = post(peer.url), post(ours)
    assert theirs.status_code == mine.status_code == 200
    assert theirs.headers["content-type"] == mine.headers["content-type"] == "application/json"
    body = theirs.json()
    assert list(body) == list(mine.json()) == ["id", "create_date", "sleep", "data_size"]
    assert str(uuid.UUID(body["id"])) == body["id"]
    assert uuid.UUID(body["id"]).version == 4
    assert RFC3339_NANO.match(body["create_date"])
    assert 90 <= body["sleep"] <= 110
    assert body["data_size"] == 1024


def test_the_job_is_in_its_topic_keyed_by_id_as_the_receiver_writes_it(
    peer: ServiceProcess, kafka: KafkaSettings, topic: str
) -> None:
    answer = post(peer.url, b'{"sleep": 7, "data_size": 33}', "application/json")
    assert answer.status_code == 200
    created = answer.json()
    (message,) = read_until(kafka, topic, lambda found: len(found) == 1, with_key(created["id"]))
    raw = message.value()
    assert isinstance(raw, bytes)
    assert list(orjson.loads(raw)) == ["id", "create_date", "sleep", "data"]
    job = Job.from_json(raw)  # our model: the id's form, the date's format, the bounds
    assert orjson.loads(job.to_json())["create_date"] == created["create_date"]
    assert orjson.loads(raw)["create_date"] == created["create_date"]
    assert (job.id, job.sleep, created["data_size"]) == (created["id"], 7, 33)
    assert re.fullmatch(r"[0-9a-f]{33}", job.data)
    # librdkafka's default partitioner, which our receiver uses: CRC-32 of the key.
    assert message.partition() == zlib.crc32(job.id.encode()) % PARTITIONS


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"sleep": 296.0, "data_size": 0}', "application/json", 200),
        (b"null", "application/json", 200),
        (b'{"sleep": -1}', "application/json", 422),
        (b'{"sleep": 60001}', "application/json", 422),
        (b'{"sleep": "100"}', "application/json", 422),
        (b'{"sleep": 1.5}', "application/json", 422),
        (b'{"data_size": 65537}', "application/json", 422),
        (b'{"sleep": 1, "colour": "red"}', "application/json", 422),
        (b'{"sleep": ', "application/json", 422),
        (b"[1, 2]", "application/json", 422),
        (b'{"sleep": 5}', "text/plain", 415),
        (b'{"sleep": 5, "pad": "' + b"x" * 5000 + b'"}', "application/json", 413),
    ],
)
def test_bodies_are_judged_as_the_receiver_judges_them(
    peer: ServiceProcess,
    ours: str,
    kafka: KafkaSettings,
    topic: str,
    body: bytes,
    content_type: str,
    status: int,
) -> None:
    before = end_offsets(kafka, topic)
    theirs, mine = post(peer.url, body, content_type), post(ours, body, content_type)
    assert theirs.status_code == mine.status_code == status
    if status == 200:
        assert list(theirs.json()) == list(mine.json())
        assert end_offsets(kafka, topic) == before + 1
        return
    detail, expected = theirs.json()["detail"], mine.json()["detail"]
    if status == 422:
        # FastAPI's shape; the peer names the first problem only, without the input.
        (first,) = detail
        assert {key: first[key] for key in ("type", "loc", "msg")} == {
            "type": expected[0]["type"],
            "loc": expected[0]["loc"],
            "msg": expected[0]["msg"],
        }
    else:
        assert detail == expected
    assert end_offsets(kafka, topic) == before


def test_no_broker_gives_503_within_the_delivery_timeout() -> None:
    environment = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens there
        "KAFKA_DELIVERY_TIMEOUT_MS": "1500",
    }
    with service_process("receiver", environment, executable=go_receiver()) as process:
        started = time.monotonic()
        response = post(process.url)
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert "Kafka did not acknowledge the job" in response.json()["detail"]
    assert elapsed < 10
