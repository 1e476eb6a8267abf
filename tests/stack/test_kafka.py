"""The local Kafka broker as the pipeline needs it: transactions work on a single node; a
client that reaches it again says so."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

import pytest
from confluent_kafka import Producer

from jobflow.core import kafka as kafka_module
from jobflow.core.kafka import AsyncProducer
from jobflow.core.settings import KafkaSettings
from tests.ports import free_port
from tests.stack.topics import create_topics, read_until, value_of


def test_transactions_commit_and_abort_on_the_single_node(kafka: KafkaSettings) -> None:
    topic = f"test-transactions-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, topic)
    producer = Producer(
        {"bootstrap.servers": kafka.bootstrap_servers, "transactional.id": f"test-{topic}"}
    )
    # Blocks forever when the transaction log's replication factor exceeds the broker count.
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"aborted")
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed")
    producer.commit_transaction(30)
    seen = read_until(kafka, topic, lambda found: len(found) >= 1, lambda _: True, timeout_s=15)
    assert [value_of(message) for message in seen] == [b"committed"]


async def test_a_client_that_reaches_kafka_again_says_so_at_once(
    kafka: KafkaSettings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kafka away, then back (a forwarder to the local broker starts on the port the client
    bootstraps from): the error is written once, the recovery within a statistics interval."""
    monkeypatch.setattr(kafka_module, "STATISTICS_INTERVAL_MS", 500)
    caplog.set_level(logging.INFO)
    port = free_port()
    producer = AsyncProducer(KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}"))
    producer.start()
    await asyncio.sleep(1.5)
    broker_host, broker_port = kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        broker_reader, broker_writer = await asyncio.open_connection(broker_host, int(broker_port))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, broker_writer), pipe(broker_reader, writer))

    server = await asyncio.start_server(forward, "127.0.0.1", port)
    try:
        deadline = time.monotonic() + 15
        while not any("again" in record.getMessage() for record in caplog.records):
            assert time.monotonic() < deadline, "no recovery logged within 15 s"
            await asyncio.sleep(0.2)
    finally:
        server.close()
        await asyncio.to_thread(producer.close, 1.0)
    written = [record.getMessage() for record in caplog.records]
    refused = [line for line in written if f"127.0.0.1:{port} failed: Connection refused" in line]
    # Once at once, and once more with the count of its repeats when Kafka was back.
    assert "repeated" not in refused[0]
    assert all(re.search(r" \(repeated \d+ times? in the last \d s\)$", x) for x in refused[1:])
    assert len(refused) <= 2, written
    (recovered,) = [line for line in written if line.startswith("kafka client reaches ")]
    # Whichever is up at the time: the bootstrap address, or the broker it named.
    assert f"127.0.0.1:{port}/bootstrap" in recovered or f":{broker_port}/" in recovered
