"""schemathesis against the receiver's and the informer's OpenAPI, as FastAPI serves them:
whatever it sends, fitting the schema or not, no answer is a server error, and every answer
(status, media type, body) is one the schema documents.

The receiver under test writes to a topic of its own: the jobs schemathesis creates (work
times up to a minute) never reach the stack's processor. It runs twice: with its default body
limit, and with a limit so small that most misfits are refused by length (413).
schemathesis's own pytest loader does not work with pytest 9 (it sets a node attribute pytest
removed), so each operation's strategies are driven by hypothesis here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from confluent_kafka.admin import AdminClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok

from jobflow.core.settings import KafkaSettings
from tests.stack.processes import service_process
from tests.stack.topics import create_topics

# run by make security-check too (tests/targets.mk)
pytestmark = pytest.mark.security

EXAMPLES_PER_OPERATION_AND_MODE = 150
INPUTS = ("path_parameters", "query", "headers", "cookies", "body")
# A body over RECEIVER_MAX_BODY_BYTES is refused with 413 before it is read, as the OpenAPI
# document says; schemathesis's list of the statuses that reject a misfit leaves 413 out.
REJECTIONS = SchemathesisConfig().projects.default.checks.negative_data_rejection
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {"expected-statuses": [*REJECTIONS.expected_statuses, "413"]}
        }
    }
)
# Bodies that fit the schema are far shorter (two bounded integers, nothing else allowed):
# with this limit, most bodies that misfit it are answered 413.
SMALL_BODY_LIMIT = 64


@pytest.fixture(scope="module", params=[None, SMALL_BODY_LIMIT], ids=["default", "small-limit"])
def receiver_url(kafka: KafkaSettings, request: pytest.FixtureRequest) -> Iterator[str]:
    topic = f"test-fuzz-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, topic, f"{topic}.dlq")
    environment = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_RECEIVER_TOPIC": topic,
        "RECEIVER_LOG_LEVEL": "WARNING",
    }
    if request.param is not None:
        environment["RECEIVER_MAX_BODY_BYTES"] = str(request.param)
    try:
        with service_process("receiver", environment) as receiver:
            # Live is not ready: its transactional producers are set up once it serves.
            # Fuzzed before, its /readyz answered 503 (a CI run failed on it).
            receiver.until_ok("/readyz", timeout_s=60)
            yield receiver.url
    finally:
        AdminClient({"bootstrap.servers": kafka.bootstrap_servers}).delete_topics(
            [topic, f"{topic}.dlq"]
        )


def fuzz(base_url: str) -> list[str]:
    """Every operation of the service's OpenAPI, with cases that fit the schema and cases that
    do not; the operations fuzzed."""
    api = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=CONFIG)
    fuzzed = []
    for loaded in api.get_all_operations():
        assert isinstance(loaded, Ok), f"the OpenAPI document does not load: {loaded}"
        operation = loaded.ok()
        takes_input = any(len(getattr(operation, part)) for part in INPUTS)
        # An operation without any input (the probes) has no input that misfits the schema.
        modes = [GenerationMode.POSITIVE, *([GenerationMode.NEGATIVE] if takes_input else [])]
        for mode in modes:

            @settings(
                max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                database=None,
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def answers_as_documented(case: schemathesis.Case[Any]) -> None:
                case.call_and_validate()

            answers_as_documented()
        fuzzed.append(f"{operation.method.upper()} {operation.path}")
    return fuzzed


def test_the_receiver_answers_everything_as_its_schema_says(receiver_url: str) -> None:
    assert "POST /api/v1/create/job" in fuzz(receiver_url)


def test_the_informer_answers_everything_as_its_schema_says(ports: dict[str, int]) -> None:
    assert "GET /info/{job_id}" in fuzz(f"http://127.0.0.1:{ports['informer']}")
