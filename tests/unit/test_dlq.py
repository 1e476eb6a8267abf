"""``python -m jobflow dlq``'s parts that need no Kafka: the command line, what a dead letter is
replayed as and refused for, its list line, and the replay's progress across runs."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition

from jobflow.dlq import (
    LIST_HEADER,
    MAX_REFUSALS_SHOWN,
    REASON_WIDTH,
    DeadLetter,
    DlqError,
    Listing,
    Replay,
    ReplayProgress,
    Selection,
    Show,
    check,
    parse_request,
)

DLQ = "receiver-topic.dlq"


def letter(
    offset: int,
    partition: int = 0,
    key: bytes | None = b"poison-1",
    headers: dict[str, bytes] | None = None,
) -> DeadLetter:
    return DeadLetter(
        topic=DLQ,
        partition=partition,
        offset=offset,
        timestamp_ms=1_706_358_890_594,
        key=key,
        value=b'{"id": "not-a-uuid"}',
        headers={"dlq.source.topic": b"receiver-topic", **(headers or {})},
    )


def test_the_command_line_says_what_is_asked() -> None:
    assert parse_request(["list", DLQ]) == Listing(DLQ, Selection())
    assert parse_request(["show", DLQ, "--partition", "1", "--offset", "7"]) == Show(DLQ, 1, 7)
    assert parse_request(["replay", DLQ, "--all", "--dry-run"]) == Replay(DLQ, Selection(), True)
    assert parse_request(
        ["replay", DLQ, "--partition", "0", "--from-offset", "3", "--to-offset", "5"]
    ) == Replay(DLQ, Selection(0, 3, 5), dry_run=False)


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (["replay", DLQ], "replay takes --all, or --from-offset"),
        (["replay", DLQ, "--all", "--to-offset", "4"], "replay takes --all, or --from-offset"),
        (["list", DLQ, "--from-offset", "5", "--to-offset", "4"], "--from-offset 5 is above"),
        (["show", DLQ, "--offset", "4"], "the following arguments are required: --partition"),
        (["list", DLQ, "--partition", "-1"], "-1 is below 0"),
        (["list"], "the following arguments are required: topic"),
    ],
)
def test_a_wrong_command_line_is_refused_with_the_reason(
    arguments: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        parse_request(arguments)
    assert refused.value.code == 2
    assert said in capsys.readouterr().err


def test_selected_offsets_include_both_ends_and_stay_within_the_committed_records() -> None:
    assert Selection(from_offset=3, to_offset=5).offsets(range(100)) == range(3, 6)
    assert Selection(from_offset=3, to_offset=500).offsets(range(100)) == range(3, 100)
    assert Selection(to_offset=50).offsets(range(10, 100)) == range(10, 51)
    assert Selection().offsets(range(10, 100)) == range(10, 100)


def test_a_dead_letter_goes_back_as_it_came_saying_from_where() -> None:
    record = letter(17, partition=1).replayed()
    assert (record.topic, record.key, record.value) == (
        "receiver-topic",
        b"poison-1",
        b'{"id": "not-a-uuid"}',
    )
    assert record.headers == (("dlq.replayed.from", b"receiver-topic.dlq/1/17"),)


def test_a_dead_letter_whose_source_is_unknown_or_gone_is_refused() -> None:
    topics = {"receiver-topic", DLQ}
    assert letter(0).refusal(topics) is None
    unknown = DeadLetter(DLQ, 0, 1, None, None, b"", {"dlq.reason": b"?"})
    assert unknown.refusal(topics) == "no dlq.source.topic header: where it came from is not known"
    not_text = letter(2, headers={"dlq.source.topic": b"\xff"})
    assert not_text.refusal(topics) == unknown.refusal(topics)
    assert letter(3, headers={"dlq.source.topic": b"gone"}).refusal(topics) == (
        "its source topic gone does not exist"
    )
    assert letter(4, headers={"dlq.source.topic": DLQ.encode()}).refusal(topics) == (
        "its dlq.source.topic is the dead-letter topic itself"
    )
    with pytest.raises(DlqError, match=r"no dlq\.source\.topic"):
        unknown.replayed()


def test_one_refused_dead_letter_refuses_them_all_and_each_is_named() -> None:
    topics = {"receiver-topic"}
    assert check([letter(0), letter(1, key=b"other")], topics, None) == {"receiver-topic": 2}
    gone = [letter(n, headers={"dlq.source.topic": b"gone"}) for n in range(1, 30)]
    with pytest.raises(DlqError) as refused:
        check([letter(0), *gone], topics, None)
    lines = str(refused.value).splitlines()
    assert lines[0] == "refused: 29 of 30 dead letters to replay cannot be replayed, so none was:"
    assert lines[1] == "  partition 0 offset 1: its source topic gone does not exist"
    assert len(lines) == 1 + MAX_REFUSALS_SHOWN + 1
    assert lines[-1] == f"  and {29 - MAX_REFUSALS_SHOWN} more"


def test_a_list_line_has_every_column_on_one_line_and_cuts_the_reason_short() -> None:
    line = letter(
        17,
        key=b"poison\n\xff",
        headers={
            "dlq.reason": b"x" * (REASON_WIDTH + 10),
            "dlq.stage": b"processor",
            "dlq.source.partition": b"2",
            "dlq.source.offset": b"4411",
        },
    ).listing(replayed=True)
    assert "\n" not in line
    assert line.split() == [
        "0",
        "17",
        "2024-01-27T12:34:50.594Z",
        "receiver-topic/2/4411",
        "processor",
        "x" * (REASON_WIDTH - 1) + "…",
        "yes",
        "poison\\n\\xff",
    ]
    assert line.index("yes") == LIST_HEADER.index("replayed")
    unknown = DeadLetter(DLQ, 0, 3, None, None, b"", {})
    assert unknown.listing(replayed=False).split() == ["0", "3", "(none)", "?/?/?", "no", "(none)"]


# A dead-letter partition whose committed records are at offsets 0 to 11; offsets 3, 7 and 11
# hold transaction markers, at which no record is read.
OFFSETS = [0, 1, 2, 4, 5, 6, 8, 9, 10]
KEPT = range(12)


class Partition:
    """The replay group's committed offset of that partition, as runs of replay leave it."""

    def __init__(self, kept: range = KEPT) -> None:
        self.kept = kept
        self.committed = TopicPartition(DLQ, 0, -1001)

    def replay(
        self, selection: Selection, per_transaction: int = 100, transactions: int = 100
    ) -> list[int]:
        """A run of replay: the offsets it replays in the transactions it commits."""
        progress = ReplayProgress(DLQ, [self.committed])
        reads = progress.reads(0, selection, self.kept)
        chosen = [o for o in OFFSETS if o in reads and progress.admit(letter(o))]
        batches = [chosen[n : n + per_transaction] for n in range(0, len(chosen), per_transaction)]
        replayed: list[int] = []
        for batch in batches[:transactions]:
            plan = progress.commit_for([letter(offset) for offset in batch])
            progress.committed(plan)
            (self.committed,) = plan.offsets
            replayed += batch
        return replayed


def test_a_range_replayed_first_leaves_exactly_the_others_to_a_later_replay_of_all() -> None:
    partition = Partition()
    assert partition.replay(Selection(0, 4, 8)) == [4, 5, 6, 8]
    # Not past 0, 1 and 2: they were not replayed.
    assert partition.committed.offset == 0
    assert partition.replay(Selection(0, 5, 9)) == [9]
    assert partition.replay(Selection()) == [0, 1, 2, 10]
    assert (partition.committed.offset, partition.committed.metadata) == (11, "")
    assert partition.replay(Selection()) == []
    assert partition.replay(Selection(0, 2, 5)) == []


def test_a_replay_stopped_after_some_transactions_is_taken_up_where_it_stopped() -> None:
    partition = Partition()
    assert partition.replay(Selection(), per_transaction=2, transactions=2) == [0, 1, 2, 4]
    assert partition.committed.offset == 5
    assert partition.replay(Selection(0, 8, 9), per_transaction=1, transactions=1) == [8]
    assert partition.replay(Selection(), per_transaction=2) == [5, 6, 9, 10]
    assert partition.replay(Selection()) == []


def test_dead_letters_deleted_by_retention_are_passed_over() -> None:
    partition = Partition(kept=range(5, 12))
    assert partition.replay(Selection(0, 8, 9)) == [8, 9]
    # Held at the oldest offset kept, not below: what is below is gone.
    assert partition.committed.offset == 5
    assert partition.replay(Selection()) == [5, 6, 10]
    assert partition.committed.offset == 11
