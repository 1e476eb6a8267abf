"""The pipeline's stages on a broker that authenticates (SCRAM-SHA-512 over TLS) and authorizes.

Each stage logs in as its own user, with the ACLs of charts/jobflow/files/kafka-users.yaml and
nothing more, its password read from a file as the chart mounts it: jobs still go from the
receiver to postgres-topic and clickhouse-topic. And a user cannot reach what its ACLs leave
out, nor log in with a wrong password. The broker is real (tests/stack/secured_kafka.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from local.config import CONTRACTS, StackSettings

from jobflow.core.settings import KafkaSettings
from jobflow.topics import load_topics
from tests.stack.processes import service_process
from tests.stack.secured_kafka import SecuredKafka, secured_kafka
from tests.stack.topics import read_until

# run by make security-check too (tests/targets.mk)
pytestmark = pytest.mark.security

JOBS = 5


@pytest.fixture(scope="module")
def kafka(
    local_stack: StackSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecuredKafka]:
    with secured_kafka(
        local_stack.path("java", "lib"),
        tmp_path_factory.mktemp("secured-kafka"),
        load_topics(CONTRACTS / "topics.yaml"),
    ) as running:
        yield running


def client(kafka: SecuredKafka, user: str, password: str | None = None) -> dict[str, object]:
    """librdkafka settings of ``user``, as a service reads them from its environment."""
    environment = kafka.client_environment(user, password)
    settings = KafkaSettings(
        bootstrap_servers=environment["KAFKA_BOOTSTRAP_SERVERS"],
        security_protocol="SASL_SSL",
        sasl_username=user,
        sasl_password_file=Path(environment["KAFKA_SASL_PASSWORD_FILE"]),
        ssl_ca_location=Path(environment["KAFKA_SSL_CA_LOCATION"]),
    )
    return settings.client_config()


def keys_of(messages: list[Message]) -> set[str]:
    return {(message.key() or b"").decode() for message in messages}


def test_each_stage_runs_as_its_own_user_with_its_own_acls(kafka: SecuredKafka) -> None:
    admin_view = KafkaSettings(bootstrap_servers=kafka.admin_bootstrap)
    with ExitStack() as running:
        for stage in ("processor", "converter"):
            running.enter_context(service_process(stage, kafka.client_environment(stage)))
        receiver = running.enter_context(
            service_process("receiver", kafka.client_environment("receiver"))
        )
        ids = []
        for _ in range(JOBS):
            answer = httpx.post(
                f"{receiver.url}/api/v1/create/job", json={"sleep": 10, "data_size": 8}, timeout=10
            )
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["id"])

        for topic in ("postgres-topic", "clickhouse-topic"):
            found = read_until(
                admin_view,
                topic,
                done=lambda kept: keys_of(kept) >= set(ids),
                keep=lambda message: message.key() is not None,
            )
            assert keys_of(found) >= set(ids), topic
    postgres = read_until(
        admin_view, "postgres-topic", done=lambda kept: len(kept) >= JOBS, keep=lambda m: True
    )
    payloads = [json.loads(message.value() or b"{}")["payload"] for message in postgres]
    assert {p["id"] for p in payloads} >= set(ids)


def test_a_user_cannot_read_a_topic_its_acls_leave_out(kafka: SecuredKafka) -> None:
    # The converter, in the group its ACLs allow, on the processor's input: only the topic's
    # ACL can refuse it.
    consumer = Consumer({**client(kafka, "converter"), "group.id": "converter"})
    try:
        consumer.subscribe(["receiver-topic"])
        errors = [
            error
            for _ in range(20)
            if (message := consumer.poll(0.5)) is not None
            and (error := message.error()) is not None
        ]
    finally:
        consumer.close()
    assert errors
    assert {error.code() for error in errors} == {KafkaError.TOPIC_AUTHORIZATION_FAILED}


def test_a_user_cannot_write_a_topic_its_acls_leave_out(kafka: SecuredKafka) -> None:
    delivered: list[KafkaError | None] = []
    producer = Producer(client(kafka, "processor"))
    producer.produce(
        "postgres-topic",
        value=b"{}",
        on_delivery=lambda error, _message: delivered.append(error),
    )
    producer.flush(30)
    assert delivered
    (error,) = delivered
    assert error is not None
    assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_a_wrong_password_is_refused(kafka: SecuredKafka) -> None:
    errors: list[KafkaError] = []
    producer = Producer(
        {
            **client(kafka, "receiver", password=f"wrong-{uuid.uuid4()}"),
            "error_cb": errors.append,
            "log_level": 0,
        }
    )
    with pytest.raises(KafkaException):
        producer.list_topics(timeout=5)
    producer.poll(1)  # serves the error callback
    assert any(error.code() == KafkaError._AUTHENTICATION for error in errors), errors
