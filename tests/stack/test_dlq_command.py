"""``python -m jobflow dlq`` on the real local Kafka: dead letters made by a real processor, on
topics of their own (deleted afterwards, with the replay's consumer group), listed, shown and
replayed into the processor's input exactly once, also when a replay is killed mid-way.

The processor is stopped before a replay, as it would be until its fix is deployed: running, it
would turn the replayed records into dead letters again, which a later replay would replay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from local.config import REPO

from jobflow.core.settings import KafkaSettings
from jobflow.core.timestamps import NANOS_PER_SECOND, now_ns, parse_rfc3339_nano
from jobflow.dlq import LIST_HEADER, REPLAYED_FROM, DlqSettings
from tests.polling import eventually
from tests.ports import free_port
from tests.stack.processes import service_process
from tests.stack.topics import (
    committed_offsets,
    create_topics,
    delete_topics,
    messages_since,
    partition_end_offsets,
    produce,
    read_until,
)

Headers = list[tuple[str, str | bytes | None]]
NOT_A_JOB = b'{"id": "not-a-uuid"}'
NOT_JSON = b"not json at all"
INVALID_ID = "id: String should have at least 36 characters (4 error(s))"


@dataclass(frozen=True)
class Topics:
    """A processor's input (three partitions), its dead-letter topic (two) and its output."""

    source: str
    dlq: str
    output: str

    @property
    def group(self) -> str:
        return f"{DlqSettings().group_prefix}{self.dlq}"


@dataclass(frozen=True)
class Letter:
    """Where a dead letter is, as a read_committed reader of the dead-letter topic finds it."""

    key: bytes
    partition: int
    offset: int


def new_topics(kafka: KafkaSettings) -> Iterator[Topics]:
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(
        f"tests-dlq-in-{suffix}", f"tests-dlq-in-{suffix}.dlq", f"tests-dlq-out-{suffix}"
    )
    create_topics(kafka, topics.source, partitions=3)
    create_topics(kafka, topics.dlq, partitions=2)
    create_topics(kafka, topics.output)
    yield topics
    delete_topics(kafka, topics.source, topics.dlq, topics.output)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    for future in admin.delete_consumer_groups(
        [topics.group, f"tests-dlq-{topics.source}"]
    ).values():
        # A group that never committed (a test that refused to replay) is not there.
        future.exception(30)


def dead_letter(kafka: KafkaSettings, topics: Topics, count: int) -> dict[bytes, Letter]:
    """``count`` records no processor can decode, through a real one into the dead-letter
    topic; where each landed, by key."""
    records: list[tuple[bytes | None, bytes]] = [
        (f"poison-{n}".encode(), NOT_A_JOB if n % 2 else NOT_JSON) for n in range(count)
    ]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_RECEIVER_TOPIC": topics.source,
        "KAFKA_PROCESSOR_TOPIC": topics.output,
        "PROCESSOR_GROUP_ID": f"tests-dlq-{topics.source}",
        # It logs each dead letter, into a pipe nobody reads while it runs.
        "PROCESSOR_LOG_LEVEL": "ERROR",
    }
    with service_process("processor", env):
        produce(kafka, topics.source, records)
        # Its dead letters are committed with its input offsets, in one transaction.
        eventually(
            lambda: committed_offsets(kafka, env["PROCESSOR_GROUP_ID"], topics.source) == count,
            120,
            "the processor did not handle every record",
        )
    found = read_until(kafka, topics.dlq, lambda found: len(found) == count, lambda _: True)
    assert len(found) == count
    return {
        message.key() or b"": Letter(message.key() or b"", partition, offset)
        for message in found
        if (partition := message.partition()) is not None
        and (offset := message.offset()) is not None
    }


@pytest.fixture
def topics(kafka: KafkaSettings) -> Iterator[Topics]:
    yield from new_topics(kafka)


@pytest.fixture(scope="module")
def untouched(kafka: KafkaSettings) -> Iterator[tuple[Topics, dict[bytes, Letter]]]:
    """Dead letters that the module's tests only read: none of them replays."""
    for topics in new_topics(kafka):
        yield topics, dead_letter(kafka, topics, 6)


def dlq(
    kafka: KafkaSettings, *arguments: str | int, **settings: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "jobflow", "dlq", *map(str, arguments)],
        env=dlq_environment(kafka, **settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def dlq_environment(kafka: KafkaSettings, **settings: object) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        **{f"DLQ_{name.upper()}": str(value) for name, value in settings.items()},
    }


def succeeded(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def replayed(kafka: KafkaSettings, topics: Topics) -> list[Message]:
    """The records a replay wrote into the source topic, as a read_committed reader sees it."""
    start = {TopicPartition(topics.source, p): 0 for p in range(3)}
    return [
        message
        for message in messages_since(kafka, start, topics.source)
        if REPLAYED_FROM in dict(message.headers() or [])
    ]


def assert_replayed_once(
    kafka: KafkaSettings, topics: Topics, letters: dict[bytes, Letter]
) -> None:
    """Each of ``letters`` is in the source topic once, as it came, saying where from."""
    found = replayed(kafka, topics)
    counts = Counter(message.key() for message in found)
    assert [key for key, seen in counts.items() if seen > 1] == [], "replayed twice"
    assert set(counts) == set(letters), "replayed other dead letters, or not all"
    for message in found:
        letter = letters[message.key() or b""]
        assert message.value() == (NOT_A_JOB if int(letter.key[7:]) % 2 else NOT_JSON)
        assert dict(message.headers() or [])[REPLAYED_FROM] == (
            f"{topics.dlq}/{letter.partition}/{letter.offset}".encode()
        )


def test_list_shows_each_dead_letter_with_its_origin_and_reason(
    kafka: KafkaSettings, untouched: tuple[Topics, dict[bytes, Letter]]
) -> None:
    topics, letters = untouched
    header, *lines, summary = succeeded(dlq(kafka, "list", topics.dlq))
    assert header == LIST_HEADER
    assert summary == "6 dead letters, 0 of them replayed"
    assert len(lines) == len(letters)
    for line in lines:
        partition, offset, timestamp, source, stage, *rest = line.split()
        key = rest[-1].encode()
        assert (int(partition), int(offset)) == (letters[key].partition, letters[key].offset)
        assert 0 <= now_ns() - parse_rfc3339_nano(timestamp) < 600 * NANOS_PER_SECOND
        source_topic, source_partition, _source_offset = source.split("/")
        assert (source_topic, stage, rest[-2]) == (topics.source, "processor", "no")
        assert int(source_partition) in range(3)
        reason = INVALID_ID if int(key[7:]) % 2 else "record: Invalid JSON"
        assert reason in line, line

    only = succeeded(dlq(kafka, "list", topics.dlq, "--partition", 1))
    assert len(only) - 2 == sum(letter.partition == 1 for letter in letters.values())


def test_show_prints_one_dead_letter_whole(
    kafka: KafkaSettings, untouched: tuple[Topics, dict[bytes, Letter]]
) -> None:
    topics, letters = untouched
    letter = letters[b"poison-1"]
    lines = succeeded(
        dlq(kafka, "show", topics.dlq, "--partition", letter.partition, "--offset", letter.offset)
    )
    assert lines[0] == f"{topics.dlq} partition {letter.partition} offset {letter.offset}"
    assert "key: poison-1" in lines
    assert "replayed: no" in lines
    assert f"header dlq.reason: {INVALID_ID}" in lines
    assert f"header dlq.source.topic: {topics.source}" in lines
    assert "header dlq.stage: processor" in lines
    assert lines[-2:] == [f"value ({len(NOT_A_JOB)} bytes):", NOT_A_JOB.decode()]


def test_a_dry_run_says_what_it_would_replay_and_writes_nothing(
    kafka: KafkaSettings, untouched: tuple[Topics, dict[bytes, Letter]]
) -> None:
    topics, letters = untouched
    before = partition_end_offsets(kafka, topics.source)
    lines = succeeded(dlq(kafka, "replay", topics.dlq, "--all", "--dry-run"))
    assert lines[-1] == (
        f"dry run: 6 dead letters of {topics.dlq} would be replayed: 6 into {topics.source}; "
        "nothing was written"
    )
    assert {line.split()[-1].encode() for line in lines[1:-1]} == set(letters)
    assert partition_end_offsets(kafka, topics.source) == before
    assert committed_offsets(kafka, topics.group, topics.dlq) == 0


def test_replay_writes_each_back_once_and_a_second_replay_nothing(
    kafka: KafkaSettings, topics: Topics
) -> None:
    letters = dead_letter(kafka, topics, 20)
    # Fewer per transaction than there are, so that the progress spans transactions.
    lines = succeeded(dlq(kafka, "replay", topics.dlq, "--all", transaction_records=7))
    assert lines[0] == f"replaying 20 dead letters of {topics.dlq}: 20 into {topics.source}"
    assert lines[-1] == "done: 20 dead letters replayed"
    assert_replayed_once(kafka, topics, letters)
    *_, summary = succeeded(dlq(kafka, "list", topics.dlq))
    assert summary == "20 dead letters, 20 of them replayed"

    before = partition_end_offsets(kafka, topics.source)
    again = succeeded(dlq(kafka, "replay", topics.dlq, "--all"))
    assert again == [f"nothing to replay: group {topics.group} has replayed the selection"]
    assert partition_end_offsets(kafka, topics.source) == before


def test_a_range_then_all_replays_each_once(kafka: KafkaSettings, topics: Topics) -> None:
    letters = dead_letter(kafka, topics, 30)
    in_zero = sorted(
        (letter for letter in letters.values() if letter.partition == 0),
        key=lambda letter: letter.offset,
    )
    assert len(in_zero) >= 4, "too few dead letters in partition 0 to leave some out"
    # Dead letters below and above the range are left for later: the progress must not pass
    # over those below.
    chosen = in_zero[1:-1]
    succeeded(
        dlq(
            kafka,
            *("replay", topics.dlq, "--partition", 0),
            *("--from-offset", chosen[0].offset, "--to-offset", chosen[-1].offset),
        )
    )
    assert_replayed_once(kafka, topics, {letter.key: letter for letter in chosen})
    listed = succeeded(dlq(kafka, "list", topics.dlq))[1:-1]
    assert {line.split()[-1].encode() for line in listed if line.split()[-2] == "yes"} == {
        letter.key for letter in chosen
    }

    lines = succeeded(dlq(kafka, "replay", topics.dlq, "--all"))
    assert lines[-1] == f"done: {len(letters) - len(chosen)} dead letters replayed"
    assert_replayed_once(kafka, topics, letters)


@pytest.mark.timeout(300)
def test_a_replay_killed_mid_way_and_run_again_replays_each_once(
    kafka: KafkaSettings, topics: Topics
) -> None:
    letters = dead_letter(kafka, topics, 2000)
    first = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "jobflow", "dlq", "replay", topics.dlq, "--all"],
        env=dlq_environment(kafka, transaction_records=10),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert first.stdout is not None
        done = 0
        for line in first.stdout:
            if line.startswith("replayed "):
                done = int(line.split()[1])
                if done >= 100:
                    break
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(timeout=30)
    assert 100 <= done < len(letters), "not killed mid-way"

    lines = succeeded(dlq(kafka, "replay", topics.dlq, "--all"))
    # At least what the killed run said it committed is not replayed again (it may have
    # committed more before the kill than it said).
    left = int(lines[0].split()[1])
    assert 0 < left <= len(letters) - done, lines[0]
    assert lines[-1] == f"done: {left} dead letters replayed"
    assert_replayed_once(kafka, topics, letters)


def test_dead_letters_without_a_known_source_refuse_the_whole_replay(
    kafka: KafkaSettings, topics: Topics
) -> None:
    gone = f"{topics.source}-gone"
    good: Headers = [("dlq.source.topic", topics.source.encode()), ("dlq.reason", b"fixed since")]
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "enable.idempotence": True})
    written: list[tuple[bytes, Headers]] = [
        (b"good", good),
        (b"no-source", [("dlq.reason", b"written by hand")]),
        (b"source-gone", [("dlq.source.topic", gone.encode())]),
        (b"good-too", good),
    ]
    for key, headers in written:
        producer.produce(topics.dlq, key=key, value=b"{}", headers=headers, partition=0)
    assert producer.flush(10) == 0

    for dry_run in ([], ["--dry-run"]):
        refused = dlq(kafka, "replay", topics.dlq, "--all", *dry_run)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert refused.stderr.splitlines() == [
            "failed: refused: 2 of 4 dead letters to replay cannot be replayed, so none was:",
            "  partition 0 offset 1: no dlq.source.topic header: where it came from is not known",
            f"  partition 0 offset 2: its source topic {gone} does not exist",
        ]
    assert partition_end_offsets(kafka, topics.source) == {
        TopicPartition(topics.source, p): 0 for p in range(3)
    }
    assert committed_offsets(kafka, topics.group, topics.dlq) == 0

    # A range that leaves them out replays the others.
    lines = succeeded(dlq(kafka, "replay", topics.dlq, "--from-offset", 3))
    assert lines[-1] == "done: 1 dead letter replayed"
    assert [message.key() for message in replayed(kafka, topics)] == [b"good-too"]


def test_a_missing_topic_partition_or_offset_is_said_clearly(
    kafka: KafkaSettings, untouched: tuple[Topics, dict[bytes, Letter]]
) -> None:
    topics, _ = untouched
    missing = f"{topics.dlq}-missing"
    for arguments in (["list", missing], ["replay", missing, "--all"]):
        done = dlq(kafka, *arguments)
        assert (done.returncode, done.stderr) == (1, f"failed: topic {missing} does not exist\n")
    done = dlq(kafka, "list", topics.dlq, "--partition", 2)
    assert (done.returncode, done.stderr) == (
        1,
        f"failed: topic {topics.dlq} has no partition 2: it has 2\n",
    )
    done = dlq(kafka, "show", topics.dlq, "--partition", 0, "--offset", 1000)
    assert done.returncode == 1
    assert done.stderr.startswith("failed: no dead letter at offset 1000 of partition 0: its ")


def test_kafka_not_answering_fails_within_the_timeout() -> None:
    nobody = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    done = dlq(nobody, "list", "receiver-topic.dlq", timeout_s=2)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("Kafka did not answer within 2s: ")
