"""A job the receiver answers 503 for is in no read_committed reader's view.

With an idempotent producer it could be: when the broker's acknowledgement did not come in
time the receiver answered 503, and yet the broker had written the job, and, after a broker's
kill -9, librdkafka sent records again that were already written (duplicates). The receiver
now writes in transactions, and a job it does not confirm is aborted.

A real receiver process and broker. The receiver reaches the broker through a relay that passes
the Produce request on and keeps the broker's answers back: the broker writes the job while
the receiver times out.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from jobflow.core.settings import KafkaSettings
from tests.stack.processes import service_process
from tests.stack.relay import PRODUCE, Relay
from tests.stack.topics import create_topics, partition_end_offsets, records_since


@pytest.mark.timeout(180)
async def test_a_job_answered_503_is_not_committed_though_the_broker_wrote_it(
    kafka: KafkaSettings,
) -> None:
    topic = f"test-receiver-txn-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, topic)
    start = dict.fromkeys(partition_end_offsets(kafka, topic), 0)
    host, port = kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)
    relay = Relay(host, int(port), hold_answers_after=PRODUCE)
    environment = {
        "KAFKA_BOOTSTRAP_SERVERS": f"{host}:{await relay.start()}",
        "KAFKA_RECEIVER_TOPIC": topic,
        "KAFKA_DELIVERY_TIMEOUT_MS": "1500",
        "RECEIVER_PRODUCERS": "1",
    }
    try:
        with service_process("receiver", environment, wait_live=False) as receiver:
            # In a thread: the relay runs on this event loop.
            await asyncio.to_thread(receiver.until_ok, "/readyz", 60)
            async with httpx.AsyncClient(base_url=receiver.url, timeout=60) as client:
                answer = await client.post("/api/v1/create/job", json={"sleep": 0})
            assert answer.status_code == 503, answer.text
            assert "Kafka did not acknowledge the job" in answer.json()["detail"]
            assert relay.held_requests == 1
    finally:
        await relay.close()
    written = await asyncio.to_thread(records_since, kafka, start, topic, "read_uncommitted")
    assert len(written) == 1, "the broker did not write the job: the test proves nothing"
    # Regression: with the idempotent receiver, every reader saw the job answered 503.
    assert await asyncio.to_thread(records_since, kafka, start, topic) == []
