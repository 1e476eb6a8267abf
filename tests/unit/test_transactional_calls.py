"""How a stage's transactional producer calls are bounded: a call librdkafka never returns
from, and a commit that timed out, both end in ProducerFailedError (the process then stops and
is started afresh) instead of a stage that hangs or a commit that lands in a later transaction.
tests/stack/test_commit_timeout.py does the latter with a real producer and broker."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from jobflow.core import kafka as kafka_module
from jobflow.core.kafka import (
    AssignmentLostError,
    AsyncProducer,
    BatchConsumer,
    DeliveryError,
    OutRecord,
    ProducerFailedError,
    ProducerQueueFullError,
)
from jobflow.core.metrics import RECORDS_IN_FLIGHT
from jobflow.core.models import Job
from jobflow.core.settings import KafkaSettings
from jobflow.core.stage import StageRunner
from jobflow.core.timestamps import now_ns
from jobflow.core.transactions import (
    TRANSACTION_RETRY_BACKOFF_MS,
    _commit,
    transactional_config,
)
from jobflow.processor.service import ProcessorSettings

# Nothing listens there: the producer is never asked to reach a broker.
NOWHERE = KafkaSettings(bootstrap_servers="127.0.0.1:1")


async def test_a_call_that_never_returns_fails_the_producer_soon_after_its_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka_module, "WEDGED_CALL_SLACK_S", 0.2)
    producer = AsyncProducer(NOWHERE)
    started = time.monotonic()
    with pytest.raises(ProducerFailedError, match="stuck_call did not return within 0 s"):
        await producer._transactional("stuck_call", 0.1, time.sleep, 30)
    assert time.monotonic() - started < 5


async def test_an_error_of_the_call_itself_reaches_the_caller_unchanged() -> None:
    producer = AsyncProducer(NOWHERE)
    fenced = KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))

    def fail() -> None:
        raise fenced

    with pytest.raises(KafkaException) as raised:
        await producer._transactional("failing_call", 1.0, fail)
    assert raised.value is fenced


class CommitFails:
    """A producer whose commit keeps failing the way a coordinator that is away makes it."""

    def __init__(self, succeed_on_attempt: int | None) -> None:
        self.attempts = 0
        self.succeed_on_attempt = succeed_on_attempt

    async def commit_transaction(self, timeout_s: float) -> None:
        self.attempts += 1
        if self.attempts != self.succeed_on_attempt:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True))


def runner(producer: CommitFails) -> StageRunner[Any]:
    stage = cast(Any, type("S", (), {"name": "processor"})())
    return StageRunner(stage, cast(Any, None), cast(Any, producer), NOWHERE, 1, 0.1)


async def test_a_commit_that_timed_out_is_not_called_again_and_fails_the_producer() -> None:
    # Regression: a retriable commit was called again on the same producer, up to 5 times. Its
    # EndTxn may still be in flight, and with one epoch for all of a producer's transactions
    # (no KIP-890 part 2 in librdkafka) a late one commits the next transaction part way.
    producer = CommitFails(succeed_on_attempt=2)
    with pytest.raises(ProducerFailedError, match="commit did not finish in time"):
        await _commit(cast(Any, producer), "processor", 1.0)
    assert producer.attempts == 1


def test_the_stage_producer_retries_a_busy_transaction_coordinator_soon() -> None:
    # Each transaction begins while the coordinator still writes the previous one's markers, so
    # its first request is always retried once: after librdkafka's default backoff (100 ms)
    # that cost 90 ms per transaction, the bulk of a job's latency past its sleep.
    settings = ProcessorSettings(instance_id="unit")
    config = transactional_config(settings.transactional_id(), NOWHERE)
    assert config["transactional.id"] == "processor-unit"
    assert config["retry.backoff.ms"] == TRANSACTION_RETRY_BACKOFF_MS <= 20
    assert config["transaction.timeout.ms"] == NOWHERE.delivery_timeout_ms + 10_000


class QueueFillsAfter:
    """A transactional producer whose queue is full after ``accepted`` records; the first of
    them is reported undeliverable for good."""

    def __init__(self, accepted: int) -> None:
        self.accepted = accepted
        self.aborted = False

    def begin_transaction(self) -> None:
        pass

    def produce(self, record: OutRecord) -> asyncio.Future[Message]:
        if self.accepted == 0:
            raise ProducerQueueFullError
        self.accepted -= 1
        report: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        report.set_exception(
            DeliveryError(record.topic, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"))
        )
        return report

    async def abort_transaction(self, timeout_s: float) -> None:
        self.aborted = True


async def test_a_queue_full_part_way_still_reads_the_queued_records_reports() -> None:
    # Regression: the reports were gathered only once every record was queued, so a full queue
    # part way hid a permanent delivery error and the batch was retried for ever.
    producer = QueueFillsAfter(accepted=2)
    records = [OutRecord("out", key=b"k", value=b"v") for _ in range(5)]
    with pytest.raises(ProducerFailedError, match="too large"):
        await runner(cast(Any, producer))._transact([], records)
    assert producer.aborted


class OffsetsNeverSent:
    """A transactional producer that never finishes sending the offsets, as when the stage is
    stopped in the middle of a transaction."""

    def __init__(self) -> None:
        self.sending = asyncio.Event()
        self.aborted = False

    def begin_transaction(self) -> None:
        pass

    def produce(self, record: OutRecord) -> asyncio.Future[Message]:
        report: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        report.set_result(cast(Message, None))
        return report

    async def send_offsets_to_transaction(self, *_: object) -> None:
        self.sending.set()
        await asyncio.Event().wait()

    async def abort_transaction(self, timeout_s: float) -> None:
        await asyncio.sleep(0.05)  # an abort takes a round trip: it must not be cut short
        self.aborted = True


class GroupMetadata:
    def group_metadata(self) -> object:
        return object()


async def test_a_transaction_cancelled_part_way_is_aborted_before_the_cancel_goes_on() -> None:
    # Regression: a cancelled transaction was left open, holding back read_committed readers
    # of its partitions until the broker's transaction timeout.
    producer = OffsetsNeverSent()
    stage = cast(Any, type("S", (), {"name": "processor"})())
    stage_runner = StageRunner(
        stage, cast(Any, GroupMetadata()), cast(Any, producer), NOWHERE, 1, 0.1
    )
    transaction = asyncio.ensure_future(
        stage_runner._transact([], [OutRecord("out", key=b"k", value=b"v")])
    )
    await producer.sending.wait()
    transaction.cancel()
    await asyncio.sleep(0.01)
    # Cancelled again while it aborts (a shutdown that gives up waiting): the abort still ends.
    transaction.cancel()
    with pytest.raises(asyncio.CancelledError):
        await transaction
    await asyncio.sleep(0.1)
    assert producer.aborted


class CommitNeedsAbort:
    """A transactional producer whose commits fail in a way that takes an abort and a retry."""

    def __init__(self) -> None:
        self.aborts = 0

    def begin_transaction(self) -> None:
        pass

    def produce(self, record: OutRecord) -> asyncio.Future[Message]:
        report: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        report.set_result(cast(Message, None))
        return report

    async def send_offsets_to_transaction(self, *_: object) -> None:
        pass

    async def commit_transaction(self, timeout_s: float) -> None:
        raise KafkaException(KafkaError(KafkaError._STATE, "abort it", txn_requires_abort=True))

    async def abort_transaction(self, timeout_s: float) -> None:
        self.aborts += 1


class OnePartition(GroupMetadata):
    async def committed(self, partitions: object, timeout_s: float) -> list[TopicPartition]:
        return [TopicPartition("in", 0, 0)]

    def committing(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def forget_revoked(self) -> None:
        pass

    async def rewind_to_committed(self, timeout_s: float) -> list[TopicPartition]:
        return [TopicPartition("in", 0, 0)]


class Echo:
    name = "unit-abort"
    input_model = Job

    async def handle(self, record: Job) -> list[OutRecord]:
        return [OutRecord("out", key=record.id.encode(), value=b"done")]


async def test_records_of_an_aborted_transaction_leave_the_in_flight_count() -> None:
    # Regression: records were taken off the finished list when their transaction began, so an
    # abort dropped everything but them from the count, which then grew with every abort.
    producer = CommitNeedsAbort()
    stage_runner = StageRunner(
        cast(Any, Echo()), cast(Any, OnePartition()), cast(Any, producer), NOWHERE, 10, 0.1
    )
    job = Job(id=str(uuid.uuid4()), create_date=now_ns(), sleep=0, data="")
    await stage_runner._start(
        [Message(topic="in", partition=0, offset=n, value=job.to_json()) for n in range(3)]
    )
    await asyncio.sleep(0.01)
    await stage_runner._commit_finished(asyncio.Event())
    assert producer.aborts == 1
    assert RECORDS_IN_FLIGHT.labels("unit-abort")._value.get() == 0


class OffsetsTimeOut(CommitNeedsAbort):
    """A transactional producer whose offsets request the coordinator does not answer in time."""

    async def send_offsets_to_transaction(self, *_: object) -> None:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True))


async def test_offsets_that_timed_out_are_not_retried_on_the_same_producer() -> None:
    # Regression: the transaction was aborted and its records retried on the same producer,
    # while its TxnOffsetCommit could still land in the next transaction of the same epoch and
    # commit offsets whose outputs had been aborted.
    producer = OffsetsTimeOut()
    stage_runner = StageRunner(
        cast(Any, Echo()), cast(Any, OnePartition()), cast(Any, producer), NOWHERE, 10, 0.1
    )
    with pytest.raises(ProducerFailedError, match="offsets did not finish in time"):
        await stage_runner._transact([TopicPartition("in", 0, 1)], [])
    assert producer.aborts == 0


class Revoked(OnePartition):
    """A consumer whose partitions were revoked after its records were consumed."""

    @contextlib.contextmanager
    def committing(self) -> Iterator[None]:
        raise AssignmentLostError("revoked")
        yield


class CountsOffsets(CommitNeedsAbort):
    def __init__(self) -> None:
        super().__init__()
        self.offsets_sent = 0

    async def send_offsets_to_transaction(self, *_: object) -> None:
        self.offsets_sent += 1


async def test_records_consumed_before_a_revoke_are_not_committed_after_it() -> None:
    # Regression: the offsets were committed with the group metadata of the moment, which
    # librdkafka updates to the next generation before the next poll: the offsets of a
    # partition just revoked were accepted, and its new owner did those records again (one
    # job twice in a fault-injection run with three processors).
    producer = CountsOffsets()
    stage_runner = StageRunner(
        cast(Any, Echo()), cast(Any, Revoked()), cast(Any, producer), NOWHERE, 10, 0.1
    )
    job = Job(id=str(uuid.uuid4()), create_date=now_ns(), sleep=0, data="")
    await stage_runner._start([Message(topic="in", partition=0, offset=0, value=job.to_json())])
    await asyncio.sleep(0.01)
    await stage_runner._commit_finished(asyncio.Event())
    # Refused before it began: nothing to abort.
    assert producer.offsets_sent == 0
    assert producer.aborts == 0
    assert stage_runner._open_records() == 0, "the revoked records were not dropped"


async def test_a_consumer_gives_the_metadata_of_its_assignment_and_none_after_a_revoke() -> None:
    consumer = BatchConsumer(NOWHERE, "unit-group", ["in"])
    try:
        with pytest.raises(AssignmentLostError):
            consumer.group_metadata()
        consumer._on_assign(consumer._consumer, [])
        assigned = consumer.group_metadata()
        # The same object until the assignment changes, not the consumer's of the moment.
        assert consumer.group_metadata() is assigned
        consumer._note_revoked(consumer._consumer, [])
        with pytest.raises(AssignmentLostError):
            consumer.group_metadata()
    finally:
        await consumer.close()


async def test_a_revoke_waits_for_the_transaction_under_way_and_refuses_new_ones() -> None:
    # Regression: Kafka 4.3 accepted offsets committed with a stale generation, so a
    # transaction that ended after this consumer rejoined committed records of partitions
    # already handed on (jobs done twice in a rolling upgrade on the cluster).
    consumer = BatchConsumer(NOWHERE, "unit-group", ["in"])
    revoked = threading.Event()
    try:
        with consumer.committing():

            def revoke() -> None:
                consumer._note_revoked(consumer._consumer, [])
                revoked.set()

            revoking = threading.Thread(target=revoke)
            revoking.start()
            await asyncio.sleep(0.2)
            assert not revoked.is_set(), "the revoke did not wait for the transaction"
        await asyncio.to_thread(revoking.join, 5)
        assert revoked.is_set()
        with pytest.raises(AssignmentLostError), consumer.committing():
            pass
        consumer.forget_revoked()
        with consumer.committing():
            pass
    finally:
        await consumer.close()


class AcknowledgesLater:
    """A transactional producer whose records are acknowledged 50 ms after they are produced;
    it notes, at commit, how many were acknowledged by then."""

    def __init__(self) -> None:
        self.reports: list[asyncio.Future[Message]] = []
        self.acknowledged_at_commit: int | None = None

    def begin_transaction(self) -> None:
        pass

    def produce(self, record: OutRecord) -> asyncio.Future[Message]:
        loop = asyncio.get_running_loop()
        report: asyncio.Future[Message] = loop.create_future()
        loop.call_later(0.05, report.set_result, cast(Message, None))
        self.reports.append(report)
        return report

    async def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], group_metadata: object, timeout_s: float
    ) -> None:
        pass

    async def commit_transaction(self, timeout_s: float) -> None:
        self.acknowledged_at_commit = sum(report.done() for report in self.reports)


async def test_a_transaction_commits_once_its_records_are_acknowledged() -> None:
    # Regression: committed right after producing, librdkafka's flush inside the commit waited
    # for reports our polling thread took from it, in steps of up to 10 ms: a transaction took
    # 11 ms alone against an idle broker, 4.5 ms once the acknowledgements are awaited first.
    producer = AcknowledgesLater()
    stage = runner(cast(Any, producer))
    stage._consumer = cast(Any, type("C", (), {"group_metadata": lambda self: object()})())
    records = [OutRecord("out", key=b"k", value=b"v") for _ in range(3)]
    await stage._transact([TopicPartition("in", 0, 1)], records)
    assert producer.acknowledged_at_commit == 3
