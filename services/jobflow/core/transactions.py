"""Kafka transactions: how a stage and the receiver write records atomically.

``run_transaction`` is the one way records are written in a transaction: produce them, run
what else belongs to it (a stage commits its input offsets), wait for the acknowledgements,
commit once; abort, or give the producer up, when that fails. ``GroupCommitWriter`` puts the
records of many callers (the receiver's requests) into shared transactions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message

from jobflow.core.kafka import (
    AssignmentLostError,
    AsyncProducer,
    DeliveryError,
    OutRecord,
    ProducerFailedError,
    ProducerQueueFullError,
    kafka_error,
)
from jobflow.core.metrics import TRANSACTION_SECONDS, TRANSACTIONS
from jobflow.core.settings import KafkaSettings

log = logging.getLogger(__name__)

# How much longer than the delivery timeout a transaction may stay open.
TRANSACTION_SLACK_MS = 10_000
# The first retry of a transactional request (see transactional_config).
TRANSACTION_RETRY_BACKOFF_MS = 5
# The longest pause between two attempts to set up a transactional producer.
MAX_INIT_PAUSE_S = 5.0

# What a failed transaction raises: abortable ones are worth another try (worth_retrying).
TransactionError = (KafkaException, ProducerQueueFullError, AssignmentLostError, DeliveryError)


class OutcomeUnknownError(ProducerFailedError):
    """A commit (or offsets commit) that did not finish in time: it may still land."""


def transactional_config(transactional_id: str, kafka: KafkaSettings) -> dict[str, object]:
    """A transactional producer's settings on top of the shared producer's."""
    return {
        "transactional.id": transactional_id,
        # A transaction begins once its records are ready, so it lasts as long as producing
        # and committing: within the delivery timeout. A writer that dies mid-transaction
        # holds back read_committed readers of its output partitions until the broker aborts
        # it after this long (at once, if it restarts with the same transactional.id).
        "transaction.timeout.ms": kafka.delivery_timeout_ms + TRANSACTION_SLACK_MS,
        # A transaction begun right after the previous commit finds the coordinator still
        # writing that commit's markers: its first request gets CONCURRENT_TRANSACTIONS and is
        # retried after this backoff. librdkafka's default (100 ms) made every transaction
        # last 90 ms here (KAFKA-5477 lowered Java's to 20 ms for this; confluent-kafka-python
        # #967). Retries of a broker that stays away still back off exponentially, up to
        # retry.backoff.max.ms (1 s).
        "retry.backoff.ms": TRANSACTION_RETRY_BACKOFF_MS,
    }


def transaction_timeout_s(kafka: KafkaSettings) -> float:
    """How long a transactional call may take: committing waits for every record's delivery,
    which librdkafka gives up on after its delivery timeout; past that and some slack the
    coordinator is not answering."""
    return kafka.delivery_timeout_ms / 1000 + 5.0


def worth_retrying(error: BaseException) -> bool:
    """Whether a transaction failed in a way a fresh try may overcome."""
    if isinstance(error, KafkaException):
        cause = kafka_error(error)
        return cause.txn_requires_abort() or cause.retriable()
    if isinstance(error, DeliveryError):
        return not error.permanent
    return isinstance(error, ProducerQueueFullError)


def give_up_if_retriable(error: KafkaException, what: str, writer: str) -> None:
    """A commit (or an offsets commit) that timed out is not called again, nor aborted: it is
    reported as retriable and librdkafka goes on with it in the background, sending its
    request again after a request timeout, so one may reach the coordinator later. Our
    librdkafka speaks the transaction protocol from before KIP-890 part 2 (EndTxn v1), in
    which a producer keeps one epoch across its transactions: a late EndTxn(commit), or
    TxnOffsetCommit, that arrives once the next transaction has begun commits that one part
    way (librdkafka issue #5423). So the producer is given up: the next one with its
    transactional.id bumps the epoch in init_transactions, which fences whatever this one
    still has in flight and settles the open transaction."""
    if kafka_error(error).retriable():
        TRANSACTIONS.labels(writer, "failed").inc()
        raise OutcomeUnknownError(
            f"{what} did not finish in time and may still land: {error}"
        ) from error


async def run_transaction(
    producer: AsyncProducer,
    records: Sequence[OutRecord],
    *,
    writer: str,
    timeout_s: float,
    before_commit: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Produce ``records`` and commit them in one transaction, with whatever ``before_commit``
    adds to it.

    Raises one of TransactionError after aborting (worth_retrying says whether to try again),
    ProducerFailedError when the producer must be given up (fatal error, a commit that timed
    out, an abort that failed, a record that can never be delivered).
    """
    began = time.perf_counter()
    producer.begin_transaction()
    acks: list[asyncio.Future[Message]] = []
    try:
        # One by one: when the queue fills part way, the abort still reads the reports of the
        # records already queued (one may say a record can never be delivered).
        for record in records:
            acks.append(producer.produce(record))
        if before_commit is not None:
            await before_commit()
        await _delivered(acks, timeout_s)
        await _commit(producer, writer, timeout_s)
    except TransactionError as exc:
        await _abort(producer, writer, timeout_s, exc, acks)
        raise
    except asyncio.CancelledError:
        # Stopped in the middle: left open, the transaction would hold back every
        # read_committed reader of its partitions until the broker times it out. Aborted now,
        # shielded from the cancellation; best effort, as the writer is going away.
        await asyncio.shield(_abort_on_cancel(producer, writer, timeout_s))
        raise
    TRANSACTION_SECONDS.labels(writer).observe(time.perf_counter() - began)
    TRANSACTIONS.labels(writer, "committed").inc()


async def _delivered(acks: list[asyncio.Future[Message]], timeout_s: float) -> None:
    """Wait for every record's acknowledgement before committing.

    commit_transaction flushes first, and its flush waits for delivery reports that our
    polling thread takes from librdkafka, noticing them only every 10 ms: committed right
    after producing, a transaction took 11 ms against an idle broker, 4.5 ms this way.
    """
    if not acks:
        return
    try:
        await asyncio.wait_for(asyncio.gather(*acks), timeout_s)
    except TimeoutError:
        raise ProducerFailedError(f"no delivery report within {timeout_s:.0f} s") from None


async def _commit(producer: AsyncProducer, writer: str, timeout_s: float) -> None:
    """commit_transaction, once (give_up_if_retriable says why)."""
    try:
        await producer.commit_transaction(timeout_s)
    except KafkaException as exc:
        give_up_if_retriable(exc, "commit", writer)
        raise


async def _abort(
    producer: AsyncProducer,
    writer: str,
    timeout_s: float,
    cause: Exception,
    acks: list[asyncio.Future[Message]],
) -> None:
    """Abort after ``cause``; raise ProducerFailedError when no retry can help."""
    # Reports that arrived say whether a record can never be delivered; reading them also
    # keeps asyncio from warning about exceptions nobody retrieved. After a fatal error some
    # may never arrive, so none is waited for long.
    settled, _ = await asyncio.wait(acks, timeout=1.0) if acks else (set(), set())
    delivered = [ack.exception() for ack in settled if not ack.cancelled()]
    permanent = next((e for e in delivered if isinstance(e, DeliveryError) and e.permanent), None)
    if isinstance(cause, KafkaException) and kafka_error(cause).fatal():
        TRANSACTIONS.labels(writer, "failed").inc()
        raise ProducerFailedError(f"transactional producer failed: {cause}") from cause
    try:
        await producer.abort_transaction(timeout_s)
    except KafkaException as exc:
        raise ProducerFailedError(f"abort failed: {exc}") from exc
    TRANSACTIONS.labels(writer, "aborted").inc()
    if permanent is not None:
        raise ProducerFailedError(str(permanent)) from permanent


async def _abort_on_cancel(producer: AsyncProducer, writer: str, timeout_s: float) -> None:
    try:
        await producer.abort_transaction(timeout_s)
    except (KafkaException, ProducerFailedError) as exc:
        log.warning("could not abort the cancelled transaction", extra={"error": str(exc)})
        return
    TRANSACTIONS.labels(writer, "aborted").inc()


class WriterOverloadedError(Exception):
    """Too many records wait for a transaction already."""


class WriteFailedError(Exception):
    """The record was not written: its transaction was aborted, or none could begin in time."""


class WriteUnconfirmedError(WriteFailedError):
    """The record's commit was not confirmed in time: it may still be written (once)."""


@dataclass
class _Waiting:
    record: OutRecord
    written: asyncio.Future[None]
    taken: bool = False


@dataclass
class _Lane:
    """One transactional producer, taking turns with the others; None while being set up."""

    number: int
    producer: AsyncProducer | None = None
    last_error: str | None = None


class GroupCommitWriter:
    """Writes records for many callers in shared transactions (group commit).

    Each of ``lanes`` transactional producers takes, whenever it is free, every record that
    arrived meanwhile, and writes them in one transaction: while one commits, the next gathers
    what arrives. ``write`` returns once its record's transaction has committed, and raises
    WriteFailedError once it was aborted (nothing of it is visible to read_committed readers)
    or when no transaction could take it within ``timeout_s``; WriteUnconfirmedError when its
    commit was not confirmed in time (it may still land, once).

    A producer that must be given up (fenced, a commit that timed out) is replaced by a new one
    with the same transactional.id, whose init_transactions fences whatever the old one still
    has in flight.
    """

    def __init__(
        self,
        new_producer: Callable[[int], AsyncProducer],
        *,
        writer: str,
        timeout_s: float,
        max_waiting: int,
        lanes: int,
    ) -> None:
        self._new_producer = new_producer
        self._writer = writer
        self._timeout_s = timeout_s
        self._max_waiting = max_waiting
        self._lanes = [_Lane(number) for number in range(lanes)]
        self._waiting: deque[_Waiting] = deque()
        self._arrived = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> list[asyncio.Task[None]]:
        """Start every lane; the tasks end only when stopped, or on a bug."""
        self._tasks = [
            asyncio.create_task(self._run_lane(lane), name=f"{self._writer}-lane-{lane.number}")
            for lane in self._lanes
        ]
        return self._tasks

    async def stop(self, timeout_s: float) -> None:
        """Write what waits, then close every producer."""
        self._stopping = True
        self._arrived.set()
        for lane, task in zip(self._lanes, self._tasks, strict=True):
            if lane.producer is None:
                # Still setting up (Kafka away): it has nothing to write, and its call may
                # block for a transaction's time.
                task.cancel()
        _, running = await asyncio.wait(self._tasks, timeout=timeout_s) if self._tasks else ((), ())
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)
        for waiting in self._waiting:
            if not waiting.written.done():
                waiting.written.set_exception(WriteFailedError("the writer stopped"))
        for lane in self._lanes:
            if lane.producer is not None:
                await asyncio.to_thread(lane.producer.close, 1.0)
                lane.producer = None

    async def write(self, record: OutRecord) -> None:
        """Write ``record`` in the next transaction; return once it committed."""
        if len(self._waiting) >= self._max_waiting:
            raise WriterOverloadedError(f"{len(self._waiting)} records wait already")
        waiting = _Waiting(record, asyncio.get_running_loop().create_future())
        # Settled after its caller went away, its outcome is read here, not reported unread.
        waiting.written.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._waiting.append(waiting)
        self._arrived.set()
        try:
            await asyncio.wait_for(asyncio.shield(waiting.written), self._timeout_s)
        except TimeoutError:
            if not waiting.taken:
                # Not in a transaction: it is left out of every later one.
                waiting.written.cancel()
                reason = self.not_ready() or "no transaction took it in time"
                raise WriteFailedError(reason) from None
            await waiting.written  # its transaction is under way and decides
        except asyncio.CancelledError:
            if not waiting.taken:
                waiting.written.cancel()
            raise

    def not_ready(self) -> str | None:
        """None while some producer can write; else why none can."""
        if any(lane.producer is not None for lane in self._lanes):
            return None
        errors = sorted({lane.last_error for lane in self._lanes if lane.last_error})
        return "no transactional producer ready" + (f": {'; '.join(errors)}" if errors else "")

    def failure(self) -> str | None:
        """Why the writer cannot go on (a lane stopped while not asked to), or None."""
        for task in self._tasks:
            if task.done() and not self._stopping:
                error = None if task.cancelled() else task.exception()
                return f"{task.get_name()} stopped: {error!r}"
        return None

    def list_topics(self, timeout_s: float) -> set[str]:
        """Topic names from the cluster's metadata, through any producer set up."""
        for lane in self._lanes:
            if lane.producer is not None:
                return lane.producer.list_topics(timeout_s)
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, self.not_ready()))

    async def _run_lane(self, lane: _Lane) -> None:
        while True:
            producer = lane.producer
            if producer is None:
                if self._stopping:
                    return
                await self._set_up(lane)
                continue
            batch = await self._take()
            if batch is None:
                return
            try:
                await run_transaction(
                    producer,
                    [waiting.record for waiting in batch],
                    writer=self._writer,
                    timeout_s=self._timeout_s,
                )
            except ProducerFailedError as exc:
                log.warning(
                    "transactional producer given up; a new one replaces it",
                    extra={"lane": lane.number, "error": str(exc)},
                )
                self._give_up(lane, str(exc))
                unknown = isinstance(exc, OutcomeUnknownError)
                _settle(batch, (WriteUnconfirmedError if unknown else WriteFailedError)(str(exc)))
            except TransactionError as exc:
                if not worth_retrying(exc):
                    self._give_up(lane, str(exc))
                _settle(batch, WriteFailedError(str(exc)))
            else:
                _settle(batch, None)

    async def _set_up(self, lane: _Lane) -> None:
        """A new producer for ``lane``, its transactions initialised; when that fails, the
        lane is left without one, after a pause."""
        producer = self._new_producer(lane.number)
        producer.start()
        try:
            await producer.init_transactions(self._timeout_s)
        except (KafkaException, ProducerFailedError) as exc:
            lane.last_error = str(exc)
            log.warning(
                "transactional producer could not be set up",
                extra={"lane": lane.number, "error": str(exc)},
            )
            if not isinstance(exc, ProducerFailedError):
                # A stuck call (ProducerFailedError) could block the close too: left alone.
                await asyncio.to_thread(producer.close, 0)
            self._fail_waiting_if_none_ready()
            await asyncio.sleep(min(MAX_INIT_PAUSE_S, self._timeout_s / 2))
            return
        lane.producer, lane.last_error = producer, None

    def _give_up(self, lane: _Lane, reason: str) -> None:
        # Its calls may be stuck on threads of their own: closing it could block too. A new
        # producer with the same transactional.id fences it.
        lane.producer, lane.last_error = None, reason
        self._fail_waiting_if_none_ready()

    def _fail_waiting_if_none_ready(self) -> None:
        """Records waiting while no producer can take them are refused now, not kept until
        their callers give up."""
        reason = self.not_ready()
        if reason is None:
            return
        while self._waiting:
            waiting = self._waiting.popleft()
            if not waiting.written.done():
                waiting.written.set_exception(WriteFailedError(reason))

    async def _take(self) -> list[_Waiting] | None:
        """Every record waiting (at least one), or None once stopping with none left."""
        while True:
            batch = []
            while self._waiting:
                waiting = self._waiting.popleft()
                if not waiting.written.done():
                    waiting.taken = True
                    batch.append(waiting)
            if batch:
                return batch
            if self._stopping:
                return None
            self._arrived.clear()
            await self._arrived.wait()


def _settle(batch: list[_Waiting], error: Exception | None) -> None:
    for waiting in batch:
        if waiting.written.done():
            continue
        if error is None:
            waiting.written.set_result(None)
        else:
            waiting.written.set_exception(error)
