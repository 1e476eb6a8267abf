"""``python -m jobflow dlq``: look at a topic's dead letters, and replay them exactly once.

A stage (processor, converter) writes a record it cannot handle to ``<input topic>.dlq``, key and
value unchanged, with headers saying why and where it was read: ``dlq.reason``, ``dlq.stage``,
``dlq.source.topic``, ``dlq.source.partition``, ``dlq.source.offset``. Once what made it fail is
fixed, it can go back to where it came from:

- ``list <dlq topic> [--partition P] [--from-offset A] [--to-offset B]``: a line per dead letter:
  where it is, when it was written, where it came from, the stage, the reason (cut short),
  whether it was replayed, its key;
- ``show <dlq topic> --partition P --offset O``: one dead letter's headers and value;
- ``replay <dlq topic> (--all | [--from-offset A] [--to-offset B]) [--partition P] [--dry-run]``:
  writes each selected dead letter's key and value into its ``dlq.source.topic``, with a header
  ``dlq.replayed.from: <dlq topic>/<partition>/<offset>``.

Offsets are a partition's, and a range includes both ends. A selection ends where the topic's
committed records end when the command starts: dead letters written meanwhile wait for the next
run.

A replay is the stages' consume-transform-produce loop: a transactional producer writes a batch
of dead letters and commits, in the same transaction, the offsets of the consumer group
``<DLQ_GROUP_PREFIX><dlq topic>`` (its transactional.id as well), which are the replay's
progress. A replay stopped anywhere, kill -9 included, has committed each batch together with
its progress or neither, and the next run's producer fences the stopped one's open transaction
before it reads the progress: run again, it neither writes a dead letter twice nor passes one
over. A range above dead letters not replayed yet keeps the committed offset below them, and
the offsets replayed above it travel in the offset metadata, as the stages' do
(core/offsets.py): a later ``--all`` replays exactly the others. The group never has members;
only its committed offsets are used.

Before anything is written the whole selection is read once: one dead letter without
``dlq.source.topic``, or whose source topic does not exist, refuses the whole replay, and each
such dead letter is named.

Exits 0 when done, 1 when refused or stopped (what was replayed stays replayed: run it again to
go on), 2 when Kafka did not answer within ``DLQ_TIMEOUT_S`` (and for wrong arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobflow.core.kafka import (
    AsyncProducer,
    OutRecord,
    ProducerFailedError,
    ProducerQueueFullError,
    kafka_error,
    position,
)
from jobflow.core.kafka_log import ClientLog
from jobflow.core.offsets import CommitPlan, Completions, Partition
from jobflow.core.settings import KafkaSettings
from jobflow.core.timestamps import format_rfc3339_nano
from jobflow.core.transactions import transactional_config
from jobflow.topics import KafkaUnreachableError

SOURCE_TOPIC = "dlq.source.topic"
REPLAYED_FROM = "dlq.replayed.from"
# Where a reason is cut short in a list: `show` has it whole.
REASON_WIDTH = 60
_ROW = "{:<9} {:<8} {:<24} {:<32} {:<10} {:<" + str(REASON_WIDTH) + "} {:<8} {}"
LIST_HEADER = _ROW.format(
    "partition", "offset", "timestamp", "source", "stage", "reason", "replayed", "key"
)
# Records asked of the consumer at a time, and how long a read waits for them.
CONSUME_BATCH = 500
CONSUME_WAIT_S = 0.5
# Dead letters a refused replay names; the rest are counted.
MAX_REFUSALS_SHOWN = 20

Report = Callable[[str], None]
# Failures of a request that say Kafka did not answer it, rather than refused it.
_UNANSWERED = frozenset(
    {
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError._WAIT_COORD,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
    }
)


class DlqSettings(BaseSettings):
    """Settings of the dlq command (``DLQ_`` prefix); Kafka is reached with ``KAFKA_*``."""

    model_config = SettingsConfigDict(env_prefix="DLQ_", extra="ignore")

    group_prefix: str = Field(
        default="jobflow-dlq-replay-",
        min_length=1,
        description=(
            "A replay's consumer group and transactional.id are this followed by the "
            "dead-letter topic's name; the group's committed offsets say what was replayed."
        ),
    )
    transaction_records: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description=(
            "Most dead letters a replay writes in one transaction, with the progress that says so."
        ),
    )
    timeout_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How long Kafka may take to answer, and a partition being read to give its next record."
        ),
    )


class DlqError(Exception):
    """What the command refuses, or could not finish; the message says why."""


def printable(raw: bytes) -> str:
    """Bytes as one line of text: UTF-8, anything else and control characters escaped."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def counted(count: int) -> str:
    return f"{count} dead letter{'' if count == 1 else 's'}"


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else f"{text[: width - 1]}…"


@dataclass(frozen=True)
class DeadLetter:
    """A record of a dead-letter topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes
    headers: Mapping[str, bytes]

    @classmethod
    def from_message(cls, message: Message) -> DeadLetter:
        where = position(message)
        kind, timestamp_ms = message.timestamp()
        raw = message.headers() or []
        headers = {
            name: value.encode() if isinstance(value, str) else value or b""
            for name, value in (raw.items() if isinstance(raw, dict) else raw)
        }
        return cls(
            topic=where.topic,
            partition=where.partition,
            offset=where.offset,
            timestamp_ms=timestamp_ms if timestamp_ms >= 0 and kind else None,
            key=message.key(),
            value=message.value() or b"",
            headers=headers,
        )

    @property
    def where(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    def header(self, name: str) -> str:
        """A header's value as text; empty when it has none."""
        return printable(self.headers.get(name, b""))

    def source_topic(self) -> str | None:
        raw = self.headers.get(SOURCE_TOPIC)
        try:
            return raw.decode() if raw else None
        except UnicodeDecodeError:
            return None

    def refusal(self, topics: Collection[str]) -> str | None:
        """Why it cannot be replayed, with ``topics`` the topics there are; None when it can."""
        source = self.source_topic()
        if source is None:
            return f"no {SOURCE_TOPIC} header: where it came from is not known"
        if source == self.topic:
            return f"its {SOURCE_TOPIC} is the dead-letter topic itself"
        if source not in topics:
            return f"its source topic {source} does not exist"
        return None

    def replayed(self) -> OutRecord:
        """What a replay writes: key and value as they came, to the topic they came from."""
        source = self.source_topic()
        if source is None:
            raise DlqError(f"{self.where}: no {SOURCE_TOPIC} header")
        # Partitioned by key, as the record was first: the same partition while the topic keeps
        # its partition count.
        return OutRecord(
            topic=source,
            key=self.key,
            value=self.value,
            headers=((REPLAYED_FROM, self.where.encode()),),
        )

    def timestamp(self) -> str:
        if self.timestamp_ms is None:
            return "(none)"
        return format_rfc3339_nano(self.timestamp_ms * 1_000_000)

    def listing(self, replayed: bool) -> str:
        """Its line in a list (LIST_HEADER's columns)."""
        source = "/".join(
            self.header(name) or "?"
            for name in (SOURCE_TOPIC, "dlq.source.partition", "dlq.source.offset")
        )
        return _ROW.format(
            self.partition,
            self.offset,
            self.timestamp(),
            source,
            self.header("dlq.stage"),
            cut(self.header("dlq.reason"), REASON_WIDTH),
            "yes" if replayed else "no",
            "(none)" if self.key is None else printable(self.key),
        )

    def details(self, replayed: bool) -> list[str]:
        """What ``show`` prints: where it is, its key, its headers whole, then its value."""
        value = self.value.decode("utf-8", "backslashreplace")
        return [
            f"{self.topic} partition {self.partition} offset {self.offset}",
            f"timestamp: {self.timestamp()}",
            f"key: {'(none)' if self.key is None else printable(self.key)}",
            f"replayed: {'yes' if replayed else 'no'}",
            *(f"header {name}: {printable(raw)}" for name, raw in self.headers.items()),
            f"value ({len(self.value)} bytes):",
            value,
        ]


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command is about: one partition or all, a range of offsets or all."""

    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    """Included."""

    def offsets(self, kept: range) -> range:
        """The selected offsets of a partition whose committed records are at ``kept``."""
        start = kept.start if self.from_offset is None else max(kept.start, self.from_offset)
        stop = kept.stop if self.to_offset is None else min(kept.stop, self.to_offset + 1)
        return range(start, stop)


class ReplayProgress:
    """What the replay group has replayed of each partition: everything below its committed
    offset, and the offsets above it that the commit's metadata names (core/offsets.py)."""

    def __init__(self, topic: str, committed: Iterable[TopicPartition]) -> None:
        committed = list(committed)
        self._topic = topic
        self._cursors = {tp.partition: max(tp.offset, 0) for tp in committed}
        self._completions = Completions()
        self._completions.load(committed)

    def reads(self, partition: int, selection: Selection, kept: range) -> range:
        """The offsets of ``partition`` (its committed records at ``kept``) a replay of
        ``selection`` reads: from the committed offset, or from the selection's start where
        that is above it."""
        # Dead letters deleted by retention are not there to replay.
        cursor = max(self._cursors[partition], kept.start)
        selected = selection.offsets(kept)
        if selected.start <= cursor:
            return range(cursor, selected.stop)
        # The dead letters between the committed offset and the selection are not replayed now,
        # so the committed offset must stay below them: taken as consumed and never finished,
        # the committed offset holds it there, and what is replayed above goes into the
        # metadata.
        self._completions.admit(self._partition(partition), cursor)
        return selected

    def admit(self, letter: DeadLetter) -> bool:
        """Whether ``letter`` (read in offset order within its partition) is still to replay."""
        return self._completions.admit(self._partition(letter.partition), letter.offset)

    def commit_for(self, letters: Iterable[DeadLetter]) -> CommitPlan:
        """The offsets, with their metadata, that say ``letters`` (admitted) are replayed."""
        finished: dict[Partition, list[int]] = defaultdict(list)
        for letter in letters:
            finished[self._partition(letter.partition)].append(letter.offset)
        plan = self._completions.plan(finished)
        if plan.held_back:
            raise DlqError(
                "the offsets replayed above the committed offset no longer fit in the offset "
                "metadata the broker takes: replay the dead letters below the range first"
            )
        return plan

    def committed(self, plan: CommitPlan) -> None:
        self._completions.mark_committed(plan)

    def _partition(self, partition: int) -> Partition:
        return (self._topic, partition)


@contextmanager
def kafka_request(what: str) -> Iterator[None]:
    """Turns a request's failure into KafkaUnreachableError when Kafka did not answer, or
    DlqError when it refused (a missing ACL, say), each saying ``what`` failed."""
    try:
        yield
    except KafkaException as exc:
        error = kafka_error(exc)
        if error.code() in _UNANSWERED:
            raise KafkaUnreachableError(f"{what}: {error.str()}") from exc
        raise DlqError(f"{what}: {error.str()}") from exc


class DeadLetterTopic:
    """A dead-letter topic, read with read_committed by the replay group's consumer. It is
    assigned partitions, never joins the group: only the group's committed offsets are used."""

    def __init__(self, kafka: KafkaSettings, settings: DlqSettings, name: str) -> None:
        self.name = name
        self.group = f"{settings.group_prefix}{name}"
        self._timeout_s = settings.timeout_s
        self._log = ClientLog()
        self._consumer = Consumer(
            {
                **kafka.client_config(),
                "logger": self._log,
                "error_cb": self._log.error,
                "group.id": self.group,
                "enable.auto.commit": False,
                # An offset deleted by retention reads from the oldest one kept.
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )

    def topics(self) -> dict[str, int]:
        """The cluster's topics (those these credentials may see), with their partition counts."""
        with kafka_request("listing the topics"):
            metadata = self._consumer.list_topics(timeout=self._timeout_s)
        return {name: len(topic.partitions) for name, topic in metadata.topics.items()}

    def extent(self, partition: int) -> tuple[int, int]:
        """The oldest offset kept, and where the committed records end: read_committed makes
        that the last stable offset, so the records of a transaction still open are left out."""
        with kafka_request(f"the offsets of partition {partition} of {self.name}"):
            low, end = self._consumer.get_watermark_offsets(
                TopicPartition(self.name, partition), timeout=self._timeout_s, cached=False
            )
        return low, end

    def partitions(self, only: int | None) -> list[int]:
        """``only``, or every partition of the topic; DlqError when there is no such one."""
        count = self.topics().get(self.name)
        if count is None:
            raise DlqError(f"topic {self.name} does not exist")
        if only is None:
            return list(range(count))
        if only >= count:
            raise DlqError(f"topic {self.name} has no partition {only}: it has {count}")
        return [only]

    def kept(self, only: int | None) -> dict[int, range]:
        """The offsets of the committed records of ``only``, or of every partition, now."""
        return {partition: range(*self.extent(partition)) for partition in self.partitions(only)}

    def progress(self, partitions: Iterable[int]) -> list[TopicPartition]:
        """The replay group's committed offsets of ``partitions``, with their metadata."""
        wanted = [TopicPartition(self.name, p) for p in partitions]
        with kafka_request(f"the committed offsets of group {self.group}"):
            committed = self._consumer.committed(wanted, timeout=self._timeout_s)
        for tp in committed:
            if tp.error is not None:
                # Taken as "nothing replayed", it would replay everything again.
                raise DlqError(
                    f"group {self.group}'s offset of partition {tp.partition}: {tp.error}"
                )
        return committed

    def read(self, offsets: Mapping[int, range]) -> Generator[DeadLetter, None, None]:
        """The committed records at ``offsets`` of each partition, in offset order within one."""
        left = {partition: wanted for partition, wanted in offsets.items() if wanted}
        if not left:
            return
        self._consumer.assign([TopicPartition(self.name, p, r.start) for p, r in left.items()])
        try:
            deadline = time.monotonic() + self._timeout_s
            while left:
                messages = self._consumer.consume(CONSUME_BATCH, CONSUME_WAIT_S)
                for message in messages:
                    error = message.error()
                    if error is not None:
                        self._log.error(error, "consume error")
                        continue
                    letter = DeadLetter.from_message(message)
                    if letter.offset in left.get(letter.partition, range(0)):
                        yield letter
                # Done once its position passes the last offset wanted: transaction markers and
                # aborted records take offsets at which no record is read.
                for tp in self._consumer.position([TopicPartition(self.name, p) for p in left]):
                    if tp.offset >= left[tp.partition].stop:
                        del left[tp.partition]
                if messages:
                    deadline = time.monotonic() + self._timeout_s
                elif left and time.monotonic() > deadline:
                    raise DlqError(
                        f"partitions {sorted(left)} of {self.name} gave no record for "
                        f"{self._timeout_s:.0f}s before their end"
                    )
        finally:
            self._consumer.unassign()

    def one(self, partition: int, offset: int) -> DeadLetter:
        """The dead letter at ``offset`` of ``partition``."""
        kept = self.kept(partition)[partition]
        if offset not in kept:
            where = f"offsets {kept.start} to {kept.stop - 1}" if kept else "none"
            raise DlqError(
                f"no dead letter at offset {offset} of partition {partition}: its committed "
                f"records are at {where}"
            )
        letters = self.read({partition: range(offset, offset + 1)})
        letter = next(letters, None)
        letters.close()
        if letter is None:
            raise DlqError(
                f"no dead letter at offset {offset} of partition {partition}: the offset of a "
                "transaction marker, or of a record whose transaction was aborted"
            )
        return letter

    def group_metadata(self) -> object:
        return self._consumer.consumer_group_metadata()

    def close(self) -> None:
        self._consumer.close()


def list_dead_letters(topic: DeadLetterTopic, selection: Selection, report: Report) -> None:
    kept = topic.kept(selection.partition)
    progress = ReplayProgress(topic.name, topic.progress(kept))
    report(LIST_HEADER)
    counts: Counter[bool] = Counter()
    for letter in topic.read({p: selection.offsets(offsets) for p, offsets in kept.items()}):
        replayed = not progress.admit(letter)
        counts[replayed] += 1
        report(letter.listing(replayed))
    report(f"{counted(counts.total())}, {counts[True]} of them replayed")


def show_dead_letter(topic: DeadLetterTopic, partition: int, offset: int, report: Report) -> None:
    letter = topic.one(partition, offset)
    progress = ReplayProgress(topic.name, topic.progress([partition]))
    for line in letter.details(replayed=not progress.admit(letter)):
        report(line)


def pending(
    topic: DeadLetterTopic,
    progress: ReplayProgress,
    selection: Selection,
    kept: Mapping[int, range],
) -> Iterator[DeadLetter]:
    """The selected dead letters that ``progress`` does not say are replayed."""
    reads = {p: progress.reads(p, selection, offsets) for p, offsets in kept.items()}
    return (letter for letter in topic.read(reads) if progress.admit(letter))


def check(
    letters: Iterable[DeadLetter], topics: Collection[str], listed: Report | None
) -> Counter[str]:
    """How many of ``letters`` go to each source topic; raises DlqError naming every one that
    cannot be replayed. ``listed`` gets the line of each that can."""
    sources: Counter[str] = Counter()
    refusals = []
    for letter in letters:
        refusal = letter.refusal(topics)
        if refusal is not None:
            refusals.append(f"partition {letter.partition} offset {letter.offset}: {refusal}")
            continue
        sources[letter.replayed().topic] += 1
        if listed is not None:
            listed(letter.listing(replayed=False))
    if refusals:
        unnamed = len(refusals) - MAX_REFUSALS_SHOWN
        raise DlqError(
            "\n".join(
                [
                    f"refused: {len(refusals)} of {counted(sources.total() + len(refusals))} to "
                    "replay cannot be replayed, so none was:",
                    *(f"  {refusal}" for refusal in refusals[:MAX_REFUSALS_SHOWN]),
                    *([f"  and {unnamed} more"] if unnamed > 0 else []),
                ]
            )
        )
    return sources


def describe_sources(sources: Counter[str]) -> str:
    return ", ".join(f"{count} into {source}" for source, count in sorted(sources.items()))


async def replay(
    topic: DeadLetterTopic,
    selection: Selection,
    kafka: KafkaSettings,
    settings: DlqSettings,
    report: Report,
) -> None:
    kept = topic.kept(selection.partition)
    # A replay killed mid-transaction holds back the source topic's read_committed readers
    # until its next run fences it, or for the transaction timeout.
    producer = AsyncProducer(kafka, transactional_config(topic.group, kafka))
    producer.start()
    try:
        # Fences a replay of the same topic still running, or killed in a transaction, and
        # settles that transaction, before the progress is read.
        with kafka_request(f"starting transactional.id {topic.group}"):
            await producer.init_transactions(settings.timeout_s)
        committed = topic.progress(kept)
        selection_pending = pending(topic, ReplayProgress(topic.name, committed), selection, kept)
        sources = check(selection_pending, topic.topics(), listed=None)
        if not sources:
            report(f"nothing to replay: group {topic.group} has replayed the selection")
            return
        total = sources.total()
        report(f"replaying {counted(total)} of {topic.name}: {describe_sources(sources)}")
        progress = ReplayProgress(topic.name, committed)
        done = 0
        for batch in batched(
            pending(topic, progress, selection, kept), settings.transaction_records
        ):
            done += await replay_batch(producer, topic, progress, batch, settings.timeout_s)
            report(f"replayed {done} of {total}")
        report(f"done: {counted(done)} replayed")
    finally:
        await asyncio.to_thread(producer.close, 2.0)


def dry_run(topic: DeadLetterTopic, selection: Selection, report: Report) -> None:
    """What a replay of ``selection`` would write now; writes nothing."""
    kept = topic.kept(selection.partition)
    progress = ReplayProgress(topic.name, topic.progress(kept))
    report(LIST_HEADER)
    sources = check(pending(topic, progress, selection, kept), topic.topics(), listed=report)
    report(
        f"dry run: {counted(sources.total())} of {topic.name} would be replayed"
        f"{': ' + describe_sources(sources) if sources else ''}; nothing was written"
    )


def batched(letters: Iterable[DeadLetter], size: int) -> Iterator[list[DeadLetter]]:
    batch: list[DeadLetter] = []
    for letter in letters:
        batch.append(letter)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def replay_batch(
    producer: AsyncProducer,
    topic: DeadLetterTopic,
    progress: ReplayProgress,
    batch: list[DeadLetter],
    timeout_s: float,
) -> int:
    """Write ``batch`` and commit the progress that says so, in one transaction; how many."""
    plan = progress.commit_for(batch)
    producer.begin_transaction()
    acks: list[asyncio.Future[Message]] = []
    try:
        for letter in batch:
            acks.append(producer.produce(letter.replayed()))
        await producer.send_offsets_to_transaction(plan.offsets, topic.group_metadata(), timeout_s)
        await producer.commit_transaction(timeout_s)
    except (KafkaException, ProducerQueueFullError) as exc:
        cause = _delivery_failure(acks) or str(exc)
        # Only what asks for an abort is aborted. Not a commit that timed out: it may still
        # land, and on this producer it could then commit a later transaction part way
        # (StageRunner._commit says why). The next run's producer settles it either way.
        if isinstance(exc, ProducerQueueFullError) or kafka_error(exc).txn_requires_abort():
            try:
                await producer.abort_transaction(timeout_s)
            except (KafkaException, ProducerFailedError) as abort:
                cause += f"; the abort failed too ({abort}): the next run settles it"
        raise DlqError(
            f"the replay stopped, {counted(len(batch))} from {batch[0].where} not replayed: "
            f"{cause}. What was replayed before stays so: run the same command again to go on"
        ) from exc
    progress.committed(plan)
    return len(batch)


def _delivery_failure(acks: list[asyncio.Future[Message]]) -> str | None:
    """The first delivery error among ``acks``; the others are cancelled, so that none is left
    unread."""
    failure = None
    for ack in acks:
        if not ack.done():
            ack.cancel()
        elif not ack.cancelled() and (error := ack.exception()) is not None:
            failure = failure or str(error)
    return failure


@dataclass(frozen=True)
class Listing:
    """``list``."""

    topic: str
    selection: Selection


@dataclass(frozen=True)
class Show:
    """``show``."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Replay:
    """``replay``."""

    topic: str
    selection: Selection
    dry_run: bool


def _offset(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is below 0")
    return value


def parse_request(arguments: list[str]) -> Listing | Show | Replay:
    """The command line after ``python -m jobflow dlq``; exits 2 with the usage when wrong."""
    parser = argparse.ArgumentParser(
        prog="python -m jobflow dlq",
        description=(
            "Look at a topic's dead letters, and replay them into the topics they came from, "
            "exactly once."
        ),
    )
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="a line per dead letter")
    show = actions.add_parser("show", help="one dead letter's headers and value")
    replaying = actions.add_parser(
        "replay", help="write dead letters back into their source topics, exactly once"
    )
    for action in (listing, show, replaying):
        action.add_argument("topic", help="the dead-letter topic, e.g. receiver-topic.dlq")
    show.add_argument("--partition", type=_offset, required=True)
    show.add_argument("--offset", type=_offset, required=True)
    for action in (listing, replaying):
        action.add_argument("--partition", type=_offset, help="this partition only")
        action.add_argument("--from-offset", type=_offset, metavar="A", help="from offset A")
        action.add_argument("--to-offset", type=_offset, metavar="B", help="to offset B, included")
    replaying.add_argument("--all", action="store_true", help="every dead letter not replayed")
    replaying.add_argument(
        "--dry-run", action="store_true", help="say what would be replayed, write nothing"
    )
    options = parser.parse_args(arguments)
    if options.action == "show":
        return Show(options.topic, options.partition, options.offset)
    selection = Selection(options.partition, options.from_offset, options.to_offset)
    first, last = selection.from_offset, selection.to_offset
    if first is not None and last is not None and first > last:
        parser.error(f"--from-offset {first} is above --to-offset {last}")
    if options.action == "list":
        return Listing(options.topic, selection)
    ranged = selection.from_offset is not None or selection.to_offset is not None
    if options.all == ranged:
        parser.error("replay takes --all, or --from-offset and --to-offset (either or both)")
    return Replay(options.topic, selection, options.dry_run)


def report_line(line: str) -> None:
    print(line, flush=True)


def report_error(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(arguments: list[str]) -> int:
    request = parse_request(arguments)
    settings, kafka = DlqSettings(), KafkaSettings()
    topic = DeadLetterTopic(kafka, settings, request.topic)
    try:
        if isinstance(request, Listing):
            list_dead_letters(topic, request.selection, report_line)
        elif isinstance(request, Show):
            show_dead_letter(topic, request.partition, request.offset, report_line)
        elif request.dry_run:
            dry_run(topic, request.selection, report_line)
        else:
            asyncio.run(replay(topic, request.selection, kafka, settings, report_line))
    except KafkaUnreachableError as exc:
        report_error(f"Kafka did not answer within {settings.timeout_s:.0f}s: {exc}")
        return 2
    except (DlqError, ProducerFailedError) as exc:
        report_error(f"failed: {exc}")
        return 1
    finally:
        topic.close()
    return 0
