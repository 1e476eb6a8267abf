"""A transaction commit that times out is not tried again on the same producer.

librdkafka goes on with a timed-out commit in the background, and its EndTxn request may reach
the coordinator late. librdkafka has no KIP-890 part 2 (librdkafka issue #5423): a producer
keeps one epoch across its transactions, so a late EndTxn(commit) can commit the producer's next
transaction part way. The stage must stop instead, so that the next producer's
init_transactions bumps the epoch and settles the transaction.

A real stage, producer, consumer and broker. The producer reaches the broker through a relay
that passes the commit's EndTxn request on and keeps the broker's answer back: the commit lands
on the broker while the producer times out, the case the upstream issue is about.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from jobflow.core.kafka import AsyncProducer, BatchConsumer, ProducerFailedError
from jobflow.core.models import Job
from jobflow.core.settings import KafkaSettings
from jobflow.core.stage import StageRunner
from jobflow.core.timestamps import now_ns
from jobflow.core.transactions import transactional_config
from jobflow.processor.service import ProcessJobs, ProcessorSettings
from tests.stack.relay import END_TXN, Relay
from tests.stack.topics import (
    committed_offsets,
    partition_end_offsets,
    produce,
    records_since,
    stage_topics,
)


class CountingProducer(AsyncProducer):
    commits = 0

    async def commit_transaction(self, timeout_s: float) -> None:
        self.commits += 1
        await super().commit_transaction(timeout_s)


@pytest.mark.timeout(180)
async def test_a_commit_that_times_out_stops_the_stage_and_the_next_producer_settles_it(
    kafka: KafkaSettings,
) -> None:
    source, target = stage_topics(kafka, "commit-timeout")
    job = Job(id=str(uuid.uuid4()), create_date=now_ns(), sleep=0, data="")
    produce(kafka, source, [(job.id.encode(), job.to_json())])
    settings = ProcessorSettings(group_id=f"{source}-group", instance_id="only")
    host, port = kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)
    relay = Relay(host, int(port), hold_answers_after=END_TXN)
    # The shortest delivery timeout: the commit's own timeout is 5.1 s.
    relayed = KafkaSettings(
        bootstrap_servers=f"{host}:{await relay.start()}", delivery_timeout_ms=100
    )
    producer = CountingProducer(relayed, transactional_config(settings.transactional_id(), relayed))
    consumer = BatchConsumer(kafka, settings.group_id, [source])
    producer.start()
    runner = StageRunner(ProcessJobs(target), consumer, producer, relayed, 10, 0.2)
    try:
        with pytest.raises(ProducerFailedError) as failed:
            await asyncio.wait_for(runner.run(asyncio.Event()), 90)
        assert relay.held_requests >= 1, "the commit did not go through the relay"
        # Regression: the commit was called again on the same producer, up to 5 times, while
        # librdkafka sent its EndTxn request again after each request timeout.
        assert (producer.commits, relay.held_requests) == (1, 1)
        assert "commit did not finish in time" in str(failed.value)
    finally:
        await consumer.close()
        await asyncio.to_thread(producer.close, 1.0)
        await relay.close()

    # What the next process does: its producer, with the same transactional.id, bumps the epoch
    # (fencing the old one) once the coordinator has completed the commit that landed.
    successor = AsyncProducer(kafka, transactional_config(settings.transactional_id(), kafka))
    successor.start()
    try:
        await successor.init_transactions(30)
    finally:
        await asyncio.to_thread(successor.close, 1.0)
    # That commit holds the job's output and its input offset, each once.
    outputs = records_since(kafka, dict.fromkeys(partition_end_offsets(kafka, target), 0), target)
    assert [key for key, _ in outputs] == [job.id.encode()]
    assert committed_offsets(kafka, settings.group_id, source) == 1
