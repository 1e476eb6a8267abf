"""Kafka clients for asyncio services, on top of confluent-kafka (librdkafka).

librdkafka calls back from ``poll()``; a daemon thread polls the producer and hands each
delivery report to the event loop, so a coroutine can await the broker's acknowledgement of
each record. The consumer is not safe to use from two threads at once, so every call to it
runs on one thread of its own, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from jobflow.core.kafka_log import ClientLog
from jobflow.core.metrics import CONSUMER_LAG, KAFKA_DELIVERY_ERRORS, KAFKA_PRODUCE_SECONDS
from jobflow.core.settings import KafkaSettings

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
T = TypeVar("T")

# How often librdkafka's statistics arrive: a consumer's lag is brought up to date, and the
# log notices brokers up again and writes the counts of folded repeats (kafka_log.py).
STATISTICS_INTERVAL_MS = 5000
# How long a revoke waits for the transaction under way to end.
REVOKE_WAIT_S = 60.0
# How long past its own timeout a transactional call may block before the producer is given up.
WEDGED_CALL_SLACK_S = 10.0


# Delivery errors that no retry will fix; anything else (timeouts, a broker away, a leader
# moving, too few in-sync replicas) may pass.
_PERMANENT_DELIVERY_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError._INVALID_ARG,
    }
)


class DeliveryError(Exception):
    """The broker did not acknowledge a record."""

    def __init__(self, topic: str, error: KafkaError) -> None:
        super().__init__(f"delivery to {topic} failed: {error.str()}")
        self.topic = topic
        self.permanent = error.fatal() or error.code() in _PERMANENT_DELIVERY_ERRORS


class ProducerFailedError(Exception):
    """The producer cannot go on: an error no retry will fix, or its polling thread died."""


class ProducerQueueFullError(Exception):
    """librdkafka's local queue is full: the broker is slower than the intake."""


class AssignmentLostError(Exception):
    """The consumer's partitions were revoked since its records were consumed: their offsets
    must not be committed, whatever the group's generation now is."""


@dataclass(frozen=True)
class OutRecord:
    """A record to produce."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=tuple)


class AsyncProducer:
    """An idempotent, acks=all producer whose ``produce`` resolves on the broker's ack."""

    def __init__(self, settings: KafkaSettings, extra_config: dict[str, Any] | None = None) -> None:
        client_log = ClientLog()
        config: dict[str, Any] = {
            **settings.client_config(),
            "logger": client_log,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "delivery.timeout.ms": settings.delivery_timeout_ms,
            # Without an error callback poll() raises a fatal error (e.g. fenced), killing the
            # polling thread while records still wait for their delivery reports; with it, the
            # error is logged here, pending records fail, and the next transactional call
            # raises it where the stage can act on it.
            "error_cb": client_log.error,
            # Only for the log: they say when a broker is up again (kafka_log.py).
            "statistics.interval.ms": STATISTICS_INTERVAL_MS,
            "stats_cb": client_log.statistics,
            **(extra_config or {}),
        }
        self._producer = Producer(config)
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll_forever, name="kafka-producer-poll")
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._poller.daemon = True
        self._poller.start()

    def _poll_forever(self) -> None:
        try:
            while not self._stopping.is_set():
                self._producer.poll(0.1)
        except Exception:
            log.exception("producer polling stopped")
            raise

    def alive(self) -> bool:
        """False once the polling thread died: no acknowledgement would ever arrive again."""
        return self._poller.is_alive() or self._stopping.is_set()

    def produce(self, record: OutRecord) -> asyncio.Future[Message]:
        """Queue ``record``; the future resolves when the broker acknowledged it.

        Raises ProducerQueueFullError at once when librdkafka's local queue is full.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("AsyncProducer.start() was not called")
        acked: asyncio.Future[Message] = loop.create_future()
        started = time.perf_counter()

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            # Runs on the polling thread; after the loop closed there is nobody to tell.
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle, acked, record.topic, started, error, message)

        try:
            self._producer.produce(
                record.topic,
                value=record.value,
                key=record.key,
                headers=list(record.headers),
                on_delivery=on_delivery,
            )
        except BufferError as exc:
            raise ProducerQueueFullError(str(exc)) from exc
        except KafkaException as exc:
            raise ProducerFailedError(str(exc)) from exc
        return acked

    # Transactions (the producer was made with a transactional.id). librdkafka's transactional
    # calls block until the coordinator answers; they run on a worker thread while the polling
    # thread goes on serving delivery reports. A failure raises KafkaException whose KafkaError
    # says how to go on: retriable() (timed out, goes on in the background; calling again
    # resumes it, but a commit is given up on instead: StageRunner._commit says why),
    # txn_requires_abort() (abort, start over from the last committed input), or fatal() (this
    # producer is done, e.g. fenced by a newer instance with the same transactional.id).

    async def init_transactions(self, timeout_s: float) -> None:
        await self._transactional(
            "init_transactions", timeout_s, self._producer.init_transactions, timeout_s
        )

    def begin_transaction(self) -> None:
        self._producer.begin_transaction()

    async def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], group_metadata: object, timeout_s: float
    ) -> None:
        await self._transactional(
            "send_offsets_to_transaction",
            timeout_s,
            self._producer.send_offsets_to_transaction,
            offsets,
            group_metadata,
            timeout_s,
        )

    async def commit_transaction(self, timeout_s: float) -> None:
        await self._transactional(
            "commit_transaction", timeout_s, self._producer.commit_transaction, timeout_s
        )

    async def abort_transaction(self, timeout_s: float) -> None:
        await self._transactional(
            "abort_transaction", timeout_s, self._producer.abort_transaction, timeout_s
        )

    async def _transactional(
        self, name: str, timeout_s: float, call: Callable[..., None], *args: Any
    ) -> None:
        """Run a blocking transactional call on a daemon thread of its own; give up on it when
        it outlives its own timeout by WEDGED_CALL_SLACK_S.

        librdkafka can block in such a call past its timeout, for good: after the group
        coordinator restarted, send_offsets_to_transaction never returned here (known upstream:
        confluentinc/librdkafka#5456 and #5511). The producer is then unusable, so this raises
        ProducerFailedError; the abandoned thread, a daemon, cannot keep the process from
        exiting, and a fresh process's producer fences this one's transaction.
        """
        loop = asyncio.get_running_loop()
        returned: asyncio.Future[None] = loop.create_future()

        def run() -> None:
            try:
                call(*args)
            except BaseException as exc:
                _settle_from_thread(loop, returned, exc)
            else:
                _settle_from_thread(loop, returned, None)

        threading.Thread(target=run, name=f"kafka-{name}", daemon=True).start()
        limit_s = timeout_s + WEDGED_CALL_SLACK_S
        try:
            await asyncio.wait_for(returned, limit_s)
        except TimeoutError:
            raise ProducerFailedError(
                f"{name} did not return within {limit_s:.0f} s: the producer is stuck"
            ) from None

    def list_topics(self, timeout_s: float) -> set[str]:
        """Topic names from the cluster's metadata; raises KafkaException when unreachable."""
        return set(self._producer.list_topics(timeout=timeout_s).topics)

    def close(self, timeout_s: float) -> int:  # blocking: call it through asyncio.to_thread
        """Flush queued records, stop polling; returns how many records were left undelivered."""
        remaining = int(self._producer.flush(timeout_s))
        self._stopping.set()
        if self._poller.is_alive():
            self._poller.join(timeout=1.0)
        return remaining


def export_consumer_lag(group: str, statistics: dict[str, Any]) -> None:
    """Set jobflow_consumer_lag_records from one librdkafka statistics document."""
    for topic, topic_statistics in statistics.get("topics", {}).items():
        for partition, partition_statistics in topic_statistics.get("partitions", {}).items():
            # Measured from the offset of the last record handed to us (the stored offset), not
            # from the committed one: offsets committed through a transaction never reach the
            # consumer's own statistics, whose consumer_lag would only grow.
            lag = partition_statistics.get("consumer_lag_stored", -1)
            # Partition -1 is librdkafka's internal one; a lag of -1 means not known yet.
            if int(partition) >= 0 and lag >= 0:
                CONSUMER_LAG.labels(group, topic, partition).set(lag)


class PartitionStarts:
    """Which assigned partitions have not started fetching, and since when, from librdkafka's
    statistics documents.

    An assigned partition starts fetching once its committed offset is read. A read_committed
    consumer reads only stable offsets (KIP-447): while a transaction that commits offsets of
    the partition is open, the broker answers UNSTABLE_OFFSET_COMMIT and librdkafka asks again,
    without end and without telling the application. A transaction the broker never completes
    leaves the partition there for good, the process otherwise healthy (docs/operations.md:
    a transaction left open by a broker restart). Counted only while the consumer is a settled
    member of its group: during a rebalance, or with the brokers away, not fetching is
    expected.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._waiting_since: dict[str, float] = {}

    def update(self, statistics: dict[str, Any]) -> None:
        group = statistics.get("cgrp", {})
        if (group.get("state"), group.get("join_state")) != ("up", "steady"):
            self._waiting_since = {}
            return
        now = self._clock()
        waiting = {}
        for topic, topic_statistics in statistics.get("topics", {}).items():
            for partition, partition_statistics in topic_statistics.get("partitions", {}).items():
                # "none": its fetcher never started. Not the states of a started one waiting
                # for its leader (offset-query, validate-epoch-wait), which a restart would
                # not help.
                if partition_statistics.get("desired") and (
                    partition_statistics.get("fetch_state") == "none"
                ):
                    name = f"{topic}[{partition}]"
                    waiting[name] = self._waiting_since.get(name, now)
        self._waiting_since = waiting

    def not_started(self, limit_s: float) -> list[str]:
        """The assigned partitions that have waited longer than ``limit_s`` to start."""
        now = self._clock()
        return sorted(name for name, since in self._waiting_since.items() if now - since > limit_s)


def _settle_from_thread(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], error: BaseException | None
) -> None:
    def settle() -> None:
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    # A call that returns after its caller gave up and the loop closed has nobody to tell.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle)


def _settle(
    acked: asyncio.Future[Message],
    topic: str,
    started: float,
    error: KafkaError | None,
    message: Message,
) -> None:
    if acked.done():
        return
    if error is not None:
        KAFKA_DELIVERY_ERRORS.labels(topic).inc()
        acked.set_exception(DeliveryError(topic, error))
    else:
        KAFKA_PRODUCE_SECONDS.labels(topic).observe(time.perf_counter() - started)
        acked.set_result(message)


class BatchConsumer:
    """A read_committed consumer read in batches; its offsets are committed in the producer's
    transactions (no auto-commit)."""

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        topics: list[str],
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self._log = ClientLog()
        config: dict[str, Any] = {
            **settings.client_config(),
            "logger": self._log,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            # librdkafka's statistics carry each partition's lag, exported as a gauge, and
            # which brokers are up, for the log.
            "statistics.interval.ms": STATISTICS_INTERVAL_MS,
            "stats_cb": lambda statistics: self._on_statistics(group_id, statistics),
            **(extra_config or {}),
        }
        self._consumer = Consumer(config)
        self._starts = PartitionStarts()
        self._topics = topics
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-consumer")
        self._revoked = False
        self._paused = False
        # The group metadata (generation, member) of the current assignment, which the
        # offsets of its records are committed with; None from a revoke until the next
        # assignment. Read on the consumer's thread when the assignment changes, so that a
        # commit does not queue for that thread behind a poll.
        self._group_metadata: object | None = None
        self._commits = threading.Condition()
        self._committing = 0
        self._revoked_since_drop = False

    def _on_statistics(self, group_id: str, statistics_json: str) -> None:
        statistics = orjson.loads(statistics_json)
        export_consumer_lag(group_id, statistics)
        self._starts.update(statistics)
        self._log.statistics(statistics_json)

    def partitions_not_started(self, limit_s: float) -> list[str]:
        """The assigned partitions that have not started fetching within ``limit_s`` (see
        PartitionStarts), as of the last statistics document."""
        return self._starts.not_started(limit_s)

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: function(*args, **kwargs))

    async def subscribe(self) -> None:
        await self._call(
            self._consumer.subscribe,
            self._topics,
            on_assign=self._on_assign,
            on_revoke=self._note_revoked,
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Runs inside a consume call, on the consumer's thread, before the wrapper assigns the
        # partitions (not assign() here, which a cooperative protocol refuses). librdkafka
        # keeps a partition paused across a rebalance, whatever the pause was for: one paused
        # before it was given up would come back paused for good. While the consumer is
        # paused, the next pause() covers the new partitions.
        if not self._paused:
            consumer.resume(partitions)
        self._group_metadata = consumer.consumer_group_metadata()

    def _note_revoked(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        # Runs inside a consume call, on the consumer's thread, before that call returns, and
        # before this consumer rejoins: the group cannot hand the partitions on until it does.
        # So a transaction under way ends first, and none begins until what was consumed is
        # dropped. The broker's generation check is not relied on: Kafka 4.3 is reported to
        # accept a stale generation's offsets, and the new owner, having read the older
        # ones, did those records again.
        self._revoked = True
        self._group_metadata = None
        with self._commits:
            self._revoked_since_drop = True
            self._commits.wait_for(lambda: self._committing == 0, REVOKE_WAIT_S)

    @contextmanager
    def committing(self) -> Iterator[None]:
        """Around a transaction that commits offsets of this consumer's records: refused
        (AssignmentLostError) once partitions were revoked and until what was consumed before
        is dropped (forget_revoked); a revoke waits for it to end."""
        with self._commits:
            if self._revoked_since_drop:
                raise AssignmentLostError("partitions revoked since the records were consumed")
            self._committing += 1
        try:
            yield
        finally:
            with self._commits:
                self._committing -= 1
                self._commits.notify_all()

    def forget_revoked(self) -> None:
        """What was consumed before the last revoke is dropped: transactions may begin again."""
        with self._commits:
            self._revoked_since_drop = False

    def take_revoked(self) -> bool:
        """Whether partitions were taken away (a rebalance) since the last call."""
        revoked, self._revoked = self._revoked, False
        return revoked

    async def pause(self) -> None:
        """Stop fetching records of the assigned partitions until resume; called again, it
        covers partitions assigned since. Polls go on serving the group: an eager rebalance
        waits for every member's callbacks, which run only inside a poll."""

        def pause() -> None:
            self._paused = True
            self._consumer.pause(self._consumer.assignment())

        await self._call(pause)

    async def resume(self) -> None:
        """Fetch again from where the last records consumed left off."""

        # librdkafka applies a pause on its own thread, and a resume that comes first is lost;
        # between the two there is always at least a poll and a transaction.
        def resume() -> None:
            self._paused = False
            self._consumer.resume(self._consumer.assignment())

        if self._paused:
            await self._call(resume)

    async def consume(self, max_records: int, timeout_s: float) -> list[Message]:
        """Up to ``max_records`` records; partition errors are logged and left out."""
        messages: list[Message] = await self._call(self._consumer.consume, max_records, timeout_s)
        records = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                self._log.error(error, "consume error")
        return records

    def group_metadata(self) -> object:
        """The group metadata of the assignment the records were consumed under, which a
        transaction commits their offsets with.

        Not the consumer's metadata of the moment: librdkafka's background thread takes up
        the next generation as soon as the group answers, before the next poll serves the
        new assignment. Committed with that generation, the offsets of a partition just
        revoked (and maybe another member's in it) would be accepted: its new owner, having
        read the offsets before, would do those records again. With the assignment's own
        generation, the broker refuses them once the rebalance is through, or holds the new
        owner's read until they are committed. Raises AssignmentLostError after a revoke.
        """
        if self._group_metadata is None:
            raise AssignmentLostError("partitions revoked since the records were consumed")
        return self._group_metadata

    async def committed(
        self, partitions: Iterable[tuple[str, int]], timeout_s: float
    ) -> list[TopicPartition]:
        """The committed offsets of ``partitions``, with their metadata (a negative offset:
        nothing committed yet)."""
        wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
        return await self._call(self._committed, wanted, timeout_s)

    def _committed(
        self, partitions: list[TopicPartition], timeout_s: float
    ) -> list[TopicPartition]:
        committed: list[TopicPartition] = self._consumer.committed(partitions, timeout=timeout_s)
        for partition in committed:
            if partition.error is not None:
                # Its offset (-1001) would read as "nothing committed" and replay the
                # partition from its start: better to stop and be restarted.
                raise KafkaException(partition.error)
        return committed

    async def rewind_to_committed(self, timeout_s: float) -> list[TopicPartition]:
        """Seek every assigned partition back to its committed offset (or its start, when
        nothing was committed yet): what an aborted transaction consumed is consumed again.
        Returns the committed offsets, with their metadata."""

        def rewind() -> list[TopicPartition]:
            assignment = self._consumer.assignment()
            if not assignment:
                return []
            committed = self._committed(assignment, timeout_s)
            for partition in committed:
                offset = partition.offset if partition.offset >= 0 else OFFSET_BEGINNING
                try:
                    self._consumer.seek(
                        TopicPartition(partition.topic, partition.partition, offset)
                    )
                except KafkaException as exc:
                    # Assigned within the same poll as a revoke, its fetch not started yet:
                    # it starts from the committed offset anyway.
                    if kafka_error(exc).code() != KafkaError._STATE:
                        raise
            return committed

        return await self._call(rewind)

    async def close(self) -> None:
        """Leave the group, after any call still running on the consumer's thread."""
        await self._call(self._consumer.close)
        self._thread.shutdown(wait=False)


def kafka_error(exc: KafkaException) -> KafkaError:
    """The KafkaError a KafkaException carries (a generic one when it carries none)."""
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        return error
    return KafkaError(KafkaError._FAIL, str(exc))


@dataclass(frozen=True)
class Position:
    """Where a consumed record was read."""

    topic: str
    partition: int
    offset: int


def position(message: Message) -> Position:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("message was not consumed from a partition")
    return Position(topic, partition, offset)


__all__ = [
    "AssignmentLostError",
    "AsyncProducer",
    "BatchConsumer",
    "DeliveryError",
    "OutRecord",
    "PartitionStarts",
    "Position",
    "ProducerFailedError",
    "ProducerQueueFullError",
    "kafka_error",
    "position",
]
