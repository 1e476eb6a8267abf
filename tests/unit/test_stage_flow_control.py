"""A stage whose in-flight bound is full waits for records to be committed for up to a poll
timeout. Only when that is not enough does it pause its partitions, and then it goes on
polling, so that long jobs never hold a rebalance up. A pause throws away what the consumer
fetched ahead, which short jobs need: pausing at once cut a processor's throughput to less than
half."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from confluent_kafka import Message

from jobflow.core.kafka import OutRecord, position
from jobflow.core.settings import KafkaSettings
from jobflow.core.stage import StageRunner, _Record

POLL_TIMEOUT_S = 0.2


class RecordingConsumer:
    """Records what the stage asks of its consumer; nothing ever arrives."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def pause(self) -> None:
        self.calls.append("pause")

    async def resume(self) -> None:
        self.calls.append("resume")

    async def consume(self, max_records: int, timeout_s: float) -> list[Message]:
        self.calls.append(f"consume({max_records}, {timeout_s})")
        return []

    def take_revoked(self) -> bool:
        return False


def full_runner(
    consumer: RecordingConsumer, job_s: float
) -> tuple[StageRunner[Any], asyncio.Future[list[OutRecord]]]:
    """A runner with room for one record, handling one whose job takes ``job_s``."""
    stage = cast(Any, type("S", (), {"name": "processor"})())
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    runner = StageRunner(stage, cast(Any, consumer), cast(Any, None), kafka, 1, POLL_TIMEOUT_S)
    message = Message(topic="receiver-topic", partition=0, offset=0, value=b"{}")
    outputs: list[OutRecord] = []
    job = asyncio.ensure_future(asyncio.sleep(job_s, result=outputs))
    runner._handling[job] = _Record(message, position(message), time.perf_counter())
    job.add_done_callback(runner._on_finished)
    return runner, job


async def test_a_full_stage_whose_records_are_committed_soon_neither_pauses_nor_polls() -> None:
    consumer = RecordingConsumer()
    runner, job = full_runner(consumer, job_s=60)
    try:
        # The committer frees room (a commit, or a drop) within the poll timeout.
        asyncio.get_running_loop().call_later(0.01, runner._room.set)
        await runner._consume_more()
        assert consumer.calls == []
    finally:
        job.cancel()


async def test_a_full_stage_with_a_long_job_pauses_and_polls_without_waiting_for_it() -> None:
    consumer = RecordingConsumer()
    runner, job = full_runner(consumer, job_s=60)
    try:
        await runner._consume_more()
        assert not job.done(), "waited for the job instead of polling"
        assert consumer.calls == ["pause", "consume(1, 0)"]
        # Still full on the next turn: paused again (covering any partitions assigned since),
        # polled again.
        await runner._consume_more()
        assert consumer.calls == ["pause", "consume(1, 0)"] * 2
    finally:
        job.cancel()


async def test_room_again_resumes_before_polling() -> None:
    consumer = RecordingConsumer()
    runner, _ = full_runner(consumer, job_s=60)
    await runner._consume_more()
    runner._drop_in_flight()
    await runner._consume_more()
    assert consumer.calls[2:] == ["resume", f"consume(1, {POLL_TIMEOUT_S})"]


class Idle:
    """A producer with nothing to do, and a consumer that subscribes and never brings a record."""

    async def init_transactions(self, timeout_s: float) -> None:
        pass

    async def subscribe(self) -> None:
        pass


async def test_stopping_waits_for_the_records_in_flight_without_spinning() -> None:
    # Regression: the drain loop waited on an event that stayed set, and went round as fast
    # as it could for the whole drain time.
    consumer = RecordingConsumer()
    runner, job = full_runner(consumer, job_s=60)
    runner._consumer = cast(Any, type("C", (Idle, RecordingConsumer), {})())
    runner._producer = cast(Any, Idle())
    runner._drain_timeout_s = 0.5
    runner._room.set()
    stop = asyncio.Event()
    stop.set()
    cpu_before = time.process_time()
    await runner.run(stop)
    assert time.process_time() - cpu_before < 0.2
    await asyncio.sleep(0)
    assert job.cancelled(), "the record left unfinished was not dropped"
