"""GroupCommitWriter: the receiver's records in shared transactions, on producers that fail
the ways librdkafka's do (a real broker: tests/stack/test_receiver_transactions.py)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from jobflow.core.kafka import AsyncProducer, OutRecord, ProducerFailedError
from jobflow.core.transactions import (
    GroupCommitWriter,
    WriteFailedError,
    WriterOverloadedError,
    WriteUnconfirmedError,
)

FENCED = KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
COMMIT_TIMED_OUT = KafkaException(
    KafkaError(KafkaError._TIMED_OUT, "timed out, retry call to resume", retriable=True)
)
ABORTABLE = KafkaException(
    KafkaError(KafkaError._TIMED_OUT, "not delivered", txn_requires_abort=True)
)


class ScriptedProducer:
    """A transactional producer: each commit waits for ``commits`` to be released and then
    raises the next error of ``failures`` (None: commits)."""

    def __init__(self, failures: list[KafkaException | None], init_error: Exception | None) -> None:
        self.failures = failures
        self.init_error = init_error
        self.transactions: list[list[bytes]] = []
        self.committed: list[list[bytes]] = []
        self.commits = asyncio.Semaphore(0)
        self.closed = False

    def start(self) -> None:
        pass

    def allow(self, commits: int) -> None:
        for _ in range(commits):
            self.commits.release()

    async def init_transactions(self, timeout_s: float) -> None:
        if isinstance(self.init_error, TimeoutError):
            await asyncio.sleep(timeout_s)  # a broker that does not answer
        if self.init_error is not None:
            raise self.init_error

    def begin_transaction(self) -> None:
        self.transactions.append([])

    def produce(self, record: OutRecord) -> asyncio.Future[Message]:
        self.transactions[-1].append(record.value)
        acked: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        acked.set_result(cast(Message, None))
        return acked

    async def commit_transaction(self, timeout_s: float) -> None:
        await self.commits.acquire()
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        self.committed.append(self.transactions[-1])

    async def abort_transaction(self, timeout_s: float) -> None:
        pass

    def close(self, timeout_s: float) -> int:
        self.closed = True
        return 0


class Producers:
    """Makes the writer's producers, each with the next script of ``scripts``."""

    def __init__(self, *scripts: tuple[list[KafkaException | None], Exception | None]) -> None:
        self.scripts = list(scripts)
        self.made: list[tuple[int, ScriptedProducer]] = []

    def __call__(self, lane: int) -> AsyncProducer:
        failures, init_error = self.scripts.pop(0) if self.scripts else ([], None)
        producer = ScriptedProducer(list(failures), init_error)
        self.made.append((lane, producer))
        return cast(AsyncProducer, producer)


def record(value: bytes) -> OutRecord:
    return OutRecord("jobs", key=value, value=value)


def writer(producers: Producers, **overrides: Any) -> GroupCommitWriter:
    options: dict[str, Any] = {"timeout_s": 5.0, "max_waiting": 100, "lanes": 1} | overrides
    return GroupCommitWriter(producers, writer="test", **options)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


@asynccontextmanager
async def running(producers: Producers, **overrides: Any) -> AsyncIterator[GroupCommitWriter]:
    """A started writer whose lanes have made their producers; stopped afterwards."""
    subject = writer(producers, **overrides)
    subject.start()
    await settle()
    try:
        yield subject
    finally:
        await subject.stop(1.0)


async def test_records_arriving_during_a_commit_go_together_in_the_next_transaction() -> None:
    producers = Producers()
    async with running(producers) as subject:
        first = asyncio.create_task(subject.write(record(b"1")))
        await settle()
        rest = [asyncio.create_task(subject.write(record(value))) for value in (b"2", b"3", b"4")]
        await settle()
        producer = producers.made[0][1]
        producer.allow(2)
        await asyncio.gather(first, *rest)
        assert producer.committed == [[b"1"], [b"2", b"3", b"4"]]


async def test_a_write_returns_only_once_its_transaction_committed() -> None:
    producers = Producers()
    async with running(producers) as subject:
        write = asyncio.create_task(subject.write(record(b"1")))
        await settle()
        assert not write.done()
        producers.made[0][1].allow(1)
        await write


async def test_an_aborted_transaction_fails_its_writes_and_the_next_one_goes_on() -> None:
    producers = Producers(([ABORTABLE], None))
    async with running(producers) as subject:
        producer = producers.made[0][1]
        producer.allow(2)
        with pytest.raises(WriteFailedError, match="not delivered"):
            await subject.write(record(b"1"))
        await subject.write(record(b"2"))
        assert producer.committed == [[b"2"]]
        assert len(producers.made) == 1, "an abortable error does not replace the producer"


async def test_a_fenced_producer_is_replaced_with_one_of_the_same_lane() -> None:
    producers = Producers(([FENCED], None))
    async with running(producers, lanes=2) as subject:
        for _, producer in producers.made:
            producer.allow(5)
        results = await asyncio.gather(
            *(subject.write(record(bytes([n]))) for n in range(2)), return_exceptions=True
        )
        assert any(isinstance(result, WriteFailedError) for result in results)
        await subject.write(record(b"after"))
        await settle()
        assert sorted(lane for lane, _ in producers.made) == [0, 0, 1]
        replacement = producers.made[2][1]
        replacement.allow(5)
        await subject.write(record(b"again"))
        assert subject.not_ready() is None


UNREACHABLE = KafkaException(KafkaError(KafkaError._TRANSPORT, "broker unreachable"))
# What the producer's deadline raises when init_transactions does not return: the call still
# holds a thread of its own, and a close could block on it too, and with it the lane that would
# set up the next producer.
STUCK = ProducerFailedError("init_transactions did not return within 0.5 s")


@pytest.mark.parametrize(
    ("set_up_error", "closed"), [(UNREACHABLE, True), (STUCK, False)], ids=["failed", "stuck"]
)
async def test_with_no_producer_set_up_a_write_is_refused_with_the_reason(
    set_up_error: Exception, closed: bool
) -> None:
    producers = Producers(*[([], set_up_error)] * 100)
    async with running(producers, timeout_s=0.5) as subject:
        with pytest.raises(WriteFailedError, match=re.escape(str(set_up_error))):
            await subject.write(record(b"1"))
        assert str(set_up_error) in (subject.not_ready() or "")
        assert producers.made
        assert [producer.closed for _, producer in producers.made] == [closed] * len(producers.made)


async def test_past_max_waiting_a_write_is_refused_at_once() -> None:
    producers = Producers()
    async with running(producers, max_waiting=2) as subject:
        # The first is taken into a transaction that waits; two more wait behind it.
        writes = [asyncio.create_task(subject.write(record(b"taken")))]
        await settle()
        writes += [asyncio.create_task(subject.write(record(bytes([n])))) for n in range(2)]
        await settle()
        with pytest.raises(WriterOverloadedError):
            await subject.write(record(b"one too many"))
        producers.made[0][1].allow(2)
        await asyncio.gather(*writes)


async def test_stopping_writes_what_waits_first() -> None:
    producers = Producers()
    subject = writer(producers)
    subject.start()
    await settle()
    writes = [asyncio.create_task(subject.write(record(bytes([n])))) for n in range(3)]
    await settle()
    producer = producers.made[0][1]
    producer.allow(2)
    await subject.stop(5.0)
    await asyncio.gather(*writes)
    assert [value for transaction in producer.committed for value in transaction] == [
        b"\x00",
        b"\x01",
        b"\x02",
    ]
    assert producer.closed


async def test_a_commit_that_timed_out_is_reported_as_unconfirmed_not_as_failed() -> None:
    # It may still land: the caller must not be told the record was not written.
    producers = Producers(([COMMIT_TIMED_OUT], None))
    async with running(producers) as subject:
        producers.made[0][1].allow(1)
        with pytest.raises(WriteUnconfirmedError, match="may still land"):
            await subject.write(record(b"1"))
        await settle()
        assert [lane for lane, _ in producers.made] == [0, 0], "the producer is replaced"


async def test_stopping_while_kafka_is_away_does_not_wait_for_a_set_up() -> None:
    # Regression: a receiver stopped with Kafka away waited out its producers' set-up calls,
    # up to its whole shutdown timeout.
    producers = Producers(*[([], TimeoutError())] * 10)
    subject = writer(producers, timeout_s=30.0)
    subject.start()
    await settle()
    started = time.monotonic()
    await subject.stop(20.0)
    assert time.monotonic() - started < 1
