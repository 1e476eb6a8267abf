"""Shutdown: a stage's batch is committed only after its outputs are acknowledged, and on
SIGTERM; a service's kept-alive connections outlive its clients' idle time, and are drained.

The processors under test run on topics of their own, so that the stack's data is untouched.
"""

from __future__ import annotations

import http.client
import signal
import time
import uuid
from urllib.parse import urlsplit

import pytest

from jobflow.core.models import Job
from jobflow.core.settings import KafkaSettings
from jobflow.core.timestamps import now_ns
from tests.ports import free_port
from tests.stack.processes import service_process
from tests.stack.topics import committed_offsets, create_topics, produce, read_until, stage_topics


@pytest.fixture
def isolated(kafka: KafkaSettings) -> dict[str, str]:
    """Topics and a consumer group of its own for one processor."""
    source, target = stage_topics(kafka, "shutdown")
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_RECEIVER_TOPIC": source,
        "KAFKA_PROCESSOR_TOPIC": target,
        "KAFKA_DELIVERY_TIMEOUT_MS": "2000",
        "PROCESSOR_GROUP_ID": f"{source}-group",
    }


def jobs(count: int, sleep_ms: int) -> list[Job]:
    return [
        Job(id=str(uuid.uuid4()), create_date=now_ns(), sleep=sleep_ms, data="")
        for _ in range(count)
    ]


def sigterm_with_jobs_in_flight(environment: dict[str, str]) -> str:
    """Start a processor, SIGTERM it once jobs are in flight; its output. It shut down
    gracefully (checked here)."""
    with service_process("processor", environment) as processor:
        deadline = time.monotonic() + 60
        while processor.metric('jobflow_records_in_flight{stage="processor"}') == 0:
            assert time.monotonic() < deadline, "no job started"
            time.sleep(0.1)
        processor.process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once shut down, so the status is "terminated by SIGTERM";
        # what shows the shutdown was graceful is its log line.
        assert processor.process.wait(timeout=30) == -signal.SIGTERM
        output = processor.process.stdout.read().decode() if processor.process.stdout else ""
    assert "Application shutdown complete." in output
    return output


def test_sigterm_mid_batch_finishes_the_batch_commits_and_exits(
    kafka: KafkaSettings, isolated: dict[str, str]
) -> None:
    source, target, group = (
        isolated["KAFKA_RECEIVER_TOPIC"],
        isolated["KAFKA_PROCESSOR_TOPIC"],
        isolated["PROCESSOR_GROUP_ID"],
    )
    work = jobs(20, sleep_ms=3000)
    produce(kafka, source, [(job.id.encode(), job.to_json()) for job in work])
    sigterm_with_jobs_in_flight(isolated)
    committed = committed_offsets(kafka, group, source)
    assert committed > 0, "the batch in flight at SIGTERM was not committed"
    done = read_until(kafka, target, lambda found: len(found) >= committed, lambda _: True, 30)
    # Exactly the committed jobs are done: none committed without its output, none lost.
    assert sorted(m.key() or b"" for m in done) == sorted(j.id.encode() for j in work[:committed])


def test_sigterm_leaves_jobs_longer_than_the_drain_time_uncommitted_without_cancelling(
    kafka: KafkaSettings, isolated: dict[str, str]
) -> None:
    source, target, group = (
        isolated["KAFKA_RECEIVER_TOPIC"],
        isolated["KAFKA_PROCESSOR_TOPIC"],
        isolated["PROCESSOR_GROUP_ID"],
    )
    work = jobs(5, sleep_ms=20_000)
    produce(kafka, source, [(job.id.encode(), job.to_json()) for job in work])
    output = sigterm_with_jobs_in_flight({**isolated, "PROCESSOR_SHUTDOWN_TIMEOUT_S": "4"})
    # The stage gave up on the 20 s jobs after half the shutdown time and returned by itself:
    # it was not cancelled, so no transaction can have been cut short.
    assert "did not commit its records in time" not in output
    assert committed_offsets(kafka, group, source) == 0
    assert read_until(kafka, target, lambda found: bool(found), lambda _: True, 5) == []


def test_offsets_are_committed_only_once_the_outputs_are_acknowledged(
    kafka: KafkaSettings, isolated: dict[str, str]
) -> None:
    source, group = isolated["KAFKA_RECEIVER_TOPIC"], isolated["PROCESSOR_GROUP_ID"]
    # An output topic that does not exist yet: every delivery fails until it does.
    target = f"{isolated['KAFKA_PROCESSOR_TOPIC']}-later"
    work = jobs(5, sleep_ms=1)
    produce(kafka, source, [(job.id.encode(), job.to_json()) for job in work])
    with service_process("processor", {**isolated, "KAFKA_PROCESSOR_TOPIC": target}) as processor:
        time.sleep(8)  # several failed deliveries (2 s timeout each) and retries
        assert processor.process.poll() is None, "the processor gave up instead of retrying"
        assert committed_offsets(kafka, group, source) == 0
        create_topics(kafka, target)
        deadline = time.monotonic() + 60
        while committed_offsets(kafka, group, source) < len(work):
            assert time.monotonic() < deadline, "the batch never went through"
            time.sleep(0.5)
    done = read_until(kafka, target, lambda found: len(found) >= len(work), lambda _: True, 30)
    assert {m.key() for m in done} == {job.id.encode() for job in work}


def test_an_error_no_retry_fixes_stops_the_process_without_committing(
    kafka: KafkaSettings, isolated: dict[str, str]
) -> None:
    source, group = isolated["KAFKA_RECEIVER_TOPIC"], isolated["PROCESSOR_GROUP_ID"]
    target = f"{isolated['KAFKA_PROCESSOR_TOPIC']}-tiny"
    # Too small for a JobDone record batch (~250 bytes), big enough for the broker's own
    # transaction markers (~80 bytes). Regression: at 64 bytes the broker could not write the
    # abort marker there; its marker sender failed for every transaction sharing the request,
    # and those (other services' included) were left hanging.
    create_topics(kafka, target, config={"max.message.bytes": "120"})
    work = jobs(3, sleep_ms=1)
    produce(kafka, source, [(job.id.encode(), job.to_json()) for job in work])
    environment = {**isolated, "KAFKA_PROCESSOR_TOPIC": target}
    # It may stop before its probe ever answers, so its liveness is not waited for.
    with service_process("processor", environment, wait_live=False) as processor:
        # It stops itself, so that its supervisor starts a fresh one; nothing is committed.
        processor.process.wait(timeout=60)
        output = processor.process.stdout.read().decode() if processor.process.stdout else ""
    assert '"stage stopped"' in output
    assert "MSG_SIZE_TOO_LARGE" in output or "too large" in output
    assert committed_offsets(kafka, group, source) == 0


def test_sigterm_answers_requests_on_open_connections_with_connection_close() -> None:
    """A client that sends its next request on a kept-alive connection just as the service is
    told to stop gets its answer (and is told to reconnect), not a closed connection: a
    rolling upgrade under load lost a request that way."""
    environment = {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    with service_process("receiver", environment) as receiver:
        address = urlsplit(receiver.url)
        connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
        connection.request("GET", "/healthz")
        first = connection.getresponse()
        first.read()
        assert first.getheader("connection") != "close"
        receiver.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # uvicorn alone has closed the idle connection by now
        connection.request("GET", "/healthz")
        second = connection.getresponse()
        assert second.status == 200
        assert second.getheader("connection") == "close"
        connection.close()
        assert receiver.process.wait(timeout=30) == -signal.SIGTERM


def test_an_idle_connection_outlives_a_clients_keep_alive() -> None:
    """The server keeps an idle connection open longer than clients keep theirs (httpx: 5 s),
    so that it is never the server that closes one just as the client sends on it: with
    uvicorn's 5 s, a load test's pooled connections failed now and then with a read error."""
    environment = {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    with service_process("receiver", environment) as receiver:
        address = urlsplit(receiver.url)
        connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        time.sleep(6)
        connection.request("GET", "/healthz")
        assert connection.getresponse().status == 200
        connection.close()
