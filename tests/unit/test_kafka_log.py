"""A client's reports with Kafka unreachable: the first error at once with its text, repeats
folded into a count per window, a different error and a recovery at once (kafka_log.py).

The first tests run real librdkafka clients against a loopback port nobody listens on; the
others drive ClientLog with a clock of their own."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import orjson
import pytest
from confluent_kafka import KafkaError

from jobflow.core import kafka as kafka_module
from jobflow.core import kafka_log
from jobflow.core.kafka import AsyncProducer, BatchConsumer
from jobflow.core.kafka_log import ClientLog
from jobflow.core.settings import KafkaSettings
from tests.ports import free_port

CLIENT_LOGGERS = {"librdkafka", "jobflow.core.kafka"}


def client_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name in CLIENT_LOGGERS]


async def run_unreachable(seconds: float, consumer: bool) -> tuple[int, float]:
    """A real producer (or consumer) at a port nobody listens on, for ``seconds``; its port and
    when it started."""
    port = free_port()
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
    started = time.time()
    if consumer:
        batch_consumer = BatchConsumer(settings, "test-kafka-log", ["test-kafka-log"])
        await batch_consumer.subscribe()
        while time.time() - started < seconds:
            await batch_consumer.consume(10, 0.2)
        await batch_consumer.close()
    else:
        producer = AsyncProducer(settings)
        producer.start()
        await asyncio.sleep(seconds)
        await asyncio.to_thread(producer.close, 1.0)
    return port, started


@pytest.mark.parametrize("consumer", [False, True], ids=["producer", "consumer"])
async def test_an_unreachable_kafka_is_reported_at_once_and_then_not_every_50_ms(
    caplog: pytest.LogCaptureFixture, consumer: bool
) -> None:
    # Regression: a service pod with Kafka away wrote a FAIL line and a "kafka client error"
    # line for each connect, every ~50 ms (over 60 lines in 3 s from a consumer).
    caplog.set_level(logging.INFO)
    port, started = await run_unreachable(3.0, consumer)
    records = client_records(caplog)
    first = records[0]
    assert first.created - started < 1.0
    assert f"Connect to ipv4#127.0.0.1:{port} failed: Connection refused" in first.getMessage()
    # The FAIL line, and librdkafka's "1/1 brokers are down" event: each once.
    assert len(records) <= 3, [record.getMessage() for record in records]


async def test_repeats_are_counted_once_a_window(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_log, "FOLD_WINDOW_S", 1.0)
    monkeypatch.setattr(kafka_module, "STATISTICS_INTERVAL_MS", 200)
    caplog.set_level(logging.INFO)
    port, _ = await run_unreachable(3.5, consumer=True)
    messages = [record.getMessage() for record in client_records(caplog)]
    refused = [message for message in messages if f"127.0.0.1:{port} failed" in message]
    assert "repeated" not in refused[0]
    counts = [
        message
        for message in refused
        if re.search(r"\(repeated \d+ times? in the last [12] s\)$", message)
    ]
    assert counts, messages
    # A line at once, then at most one a window (and one for the brokers-down event).
    assert len(messages) <= 8, messages


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


REFUSED = (
    "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused "
    "(after 0ms in state CONNECT)"
)
RESOLVE = (
    "kafka:9092/bootstrap: Failed to resolve 'kafka:9092': Name or service not known "
    "(after 2ms in state CONNECT)"
)


def fail_line(client_log: ClientLog, text: str) -> None:
    """A FAIL line the way confluent-kafka hands it over."""
    thread = text.split(": ", 1)[0]
    client_log.log(
        logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", f"[thrd:{thread}]: {text}"
    )


def statistics(**brokers: str) -> str:
    return orjson.dumps(
        {"brokers": {name: {"state": state} for name, state in brokers.items()}}
    ).decode()


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in client_records(caplog)]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client_log(clock: Clock, caplog: pytest.LogCaptureFixture) -> ClientLog:
    caplog.set_level(logging.INFO)
    return ClientLog(window_s=30, clock=clock)


def test_the_first_is_written_repeats_are_counted_and_written_with_the_next_after_the_window(
    client_log: ClientLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(5):
        fail_line(client_log, REFUSED)
        clock.now += 5
    assert messages(caplog) == [
        f"FAIL [rdkafka#producer-1] [thrd:127.0.0.1:9/bootstrap]: {REFUSED}"
    ]
    clock.now += 10  # 35 s after the first
    fail_line(client_log, REFUSED.replace("after 0ms", "after 1ms"))
    assert messages(caplog)[1].endswith(f"{REFUSED} (repeated 5 times in the last 35 s)")


def test_a_different_error_is_written_at_once(
    client_log: ClientLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    fail_line(client_log, REFUSED)
    fail_line(client_log, REFUSED)
    clock.now += 1
    fail_line(client_log, RESOLVE)
    written = messages(caplog)
    assert len(written) == 2
    assert written[0].endswith(REFUSED)
    assert written[1].endswith(RESOLVE)


def test_an_error_event_librdkafka_logged_already_is_not_written_again(
    client_log: ClientLog, caplog: pytest.LogCaptureFixture
) -> None:
    fail_line(client_log, REFUSED)
    client_log.error(KafkaError(KafkaError._TRANSPORT, REFUSED))
    client_log.error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert messages(caplog)[1:] == ["kafka client error: 1/1 brokers are down"]


def test_a_fatal_error_is_always_written(
    client_log: ClientLog, caplog: pytest.LogCaptureFixture
) -> None:
    fenced = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)
    client_log.error(fenced)
    client_log.error(fenced)
    assert [(r.levelno, r.getMessage()) for r in client_records(caplog)] == [
        (logging.CRITICAL, "kafka client failed: fenced by a newer instance")
    ] * 2


def test_the_statistics_write_a_windows_count_without_waiting_for_a_repeat(
    client_log: ClientLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    fail_line(client_log, REFUSED)
    fail_line(client_log, REFUSED)
    clock.now += 29
    client_log.statistics(statistics(**{"127.0.0.1:9/bootstrap": "DOWN"}))
    assert len(messages(caplog)) == 1
    clock.now += 2
    client_log.statistics(statistics(**{"127.0.0.1:9/bootstrap": "DOWN"}))
    assert messages(caplog)[1].endswith(f"{REFUSED} (repeated 1 time in the last 31 s)")
    # A window without a repeat ends the fold: the next occurrence is news.
    clock.now += 31
    client_log.statistics(statistics(**{"127.0.0.1:9/bootstrap": "DOWN"}))
    fail_line(client_log, REFUSED)
    assert len(messages(caplog)) == 3
    assert messages(caplog)[2].endswith(REFUSED)


def test_a_broker_up_again_is_written_at_once_and_so_is_its_next_failure(
    client_log: ClientLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    down = "kafka-0:9092/0: Connect to ipv4#10.0.0.5:9092 failed: Connection refused"
    client_log.statistics(statistics(**{"kafka-0:9092/0": "DOWN", "kafka-1:9092/1": "UP"}))
    fail_line(client_log, down)
    fail_line(client_log, down)
    clock.now += 3
    client_log.statistics(statistics(**{"kafka-0:9092/0": "UP", "kafka-1:9092/1": "UP"}))
    fail_line(client_log, down)
    line = f"FAIL [rdkafka#producer-1] [thrd:kafka-0:9092/0]: {down}"
    assert messages(caplog)[1:] == [
        f"{line} (repeated 1 time in the last 3 s)",
        "kafka client reaches kafka-0:9092/0, kafka-1:9092/1 again",
        line,
    ]


def test_reaching_kafka_again_ends_the_folds_of_brokers_it_no_longer_knows(
    client_log: ClientLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # librdkafka drops the bootstrap broker once it has learned the cluster's own.
    client_log.statistics(statistics(**{"127.0.0.1:9/bootstrap": "DOWN"}))
    fail_line(client_log, REFUSED)
    client_log.error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    clock.now += 1
    client_log.statistics(statistics(**{"127.0.0.1:9/1": "UP"}))
    fail_line(client_log, REFUSED)
    client_log.error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert messages(caplog)[2:] == [
        "kafka client reaches 127.0.0.1:9/1 again",
        f"FAIL [rdkafka#producer-1] [thrd:127.0.0.1:9/bootstrap]: {REFUSED}",
        "kafka client error: 1/1 brokers are down",
    ]
