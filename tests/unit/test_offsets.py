"""What a stage commits per partition when its records finish out of order: the lowest
unfinished offset, with the offsets done above it in the commit's metadata, and what a
restarted instance makes of that metadata."""

from __future__ import annotations

import random

from confluent_kafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from jobflow.core.offsets import (
    PREFIX,
    Completions,
    PartitionProgress,
    decode_done,
    encode_done,
)

P = ("receiver-topic", 0)


def bits(*offsets: int, committed: int) -> int:
    return sum(1 << (offset - committed) for offset in offsets)


def done_offsets(committed: int, done: int) -> set[int]:
    return {committed + i for i in range(done.bit_length()) if done >> i & 1}


def commit(progress: PartitionProgress, finished: list[int]) -> None:
    progress.mark_committed(*progress.after(finished))


@given(
    st.integers(min_value=0, max_value=2**40),
    st.sets(st.integers(min_value=1, max_value=70_000), max_size=300),
)
def test_metadata_gives_back_the_offsets_done_above_the_committed_one(
    committed: int, above: set[int]
) -> None:
    done = bits(*(committed + a for a in above), committed=committed)
    metadata = encode_done(committed, done)
    assert decode_done(committed, metadata) == done
    assert (metadata == "") == (not above)


def test_a_long_job_with_sixty_thousand_done_above_it_fits_in_the_default_metadata() -> None:
    # One minute of 1,000 jobs/s over one partition, a few still running here and there.
    committed = 5_000_000
    running = set(random.Random(1).sample(range(1, 60_000), 50))
    done = bits(*(committed + i for i in range(1, 60_000) if i not in running), committed=committed)
    assert len(encode_done(committed, done).encode()) < 4096


def test_metadata_not_ours_or_written_for_another_offset_is_ignored() -> None:
    assert decode_done(10, "some other tool's note") == 0
    assert decode_done(10, encode_done(9, bits(12, committed=9))) == 0
    assert decode_done(10, f"{PREFIX}10:not base64!") == 0
    assert decode_done(10, None) == 0


def test_the_committed_offset_stays_at_the_lowest_unfinished_record() -> None:
    progress = PartitionProgress(100)
    assert all(progress.admit(offset) for offset in range(100, 105))
    assert progress.after([101, 103]) == (100, bits(101, 103, committed=100))
    commit(progress, [101, 103])
    assert progress.committed == 100
    commit(progress, [100])
    assert (progress.committed, done_offsets(progress.committed, progress.done)) == (102, {103})
    commit(progress, [102, 104])
    assert (progress.committed, progress.done) == (105, 0)


def test_records_the_metadata_says_are_done_are_skipped_and_counted_as_done() -> None:
    progress = PartitionProgress(100, bits(101, 102, committed=100))
    assert progress.admit(100)
    assert not progress.admit(101)
    assert not progress.admit(102)
    assert progress.admit(103)
    commit(progress, [100])
    assert progress.committed == 103


def test_done_records_not_consumed_again_yet_still_move_the_committed_offset() -> None:
    # Committed at 100 with 101 done; 100 is handled again and committed before 101 is
    # fetched: the committed offset passes 101, which is then skipped as below it.
    progress = PartitionProgress(100, bits(101, committed=100))
    assert progress.admit(100)
    commit(progress, [100])
    assert progress.committed == 102
    assert not progress.admit(101)


def test_offsets_that_are_not_records_do_not_hold_the_committed_offset() -> None:
    # A transactional input has commit markers at some offsets, which are never consumed.
    progress = PartitionProgress(0)
    for offset in (0, 1, 3, 4):
        progress.admit(offset)
    commit(progress, [0, 1, 3, 4])
    assert progress.committed == 5


def plan_for(completions: Completions, finished: list[int]) -> tuple[list[int], TopicPartition]:
    plan = completions.plan({P: finished})
    [offsets] = plan.offsets or [TopicPartition(*P, -1)]
    return plan.records.get(P, []), offsets


def completions_with_open(max_bytes: int, count: int) -> Completions:
    completions = Completions(max_bytes)
    completions.load([TopicPartition(*P, 0)])
    for offset in range(count):
        completions.admit(P, offset)
    return completions


def test_finished_records_commit_above_a_long_one_when_the_metadata_fits() -> None:
    completions = completions_with_open(4096, 10)
    records, offsets = plan_for(completions, [2, 5, 7])
    assert records == [2, 5, 7]
    assert offsets.offset == 0
    assert decode_done(0, offsets.metadata) == bits(2, 5, 7, committed=0)


def test_when_the_metadata_does_not_fit_only_records_below_the_lowest_unfinished_commit() -> None:
    completions = completions_with_open(0, 10)
    records, offsets = plan_for(completions, [0, 1, 5, 7])
    assert records == [0, 1]
    assert (offsets.offset, offsets.metadata) == (2, "")
    plan = completions.plan({P: [0, 1, 5, 7]})
    assert plan.held_back == 1


def test_when_nothing_fits_the_partition_is_not_committed_at_all() -> None:
    completions = completions_with_open(0, 10)
    records, _ = plan_for(completions, [5, 7])
    assert records == []


def test_a_partition_loaded_from_a_commit_skips_what_its_metadata_says_is_done() -> None:
    completions = Completions()
    completions.load([TopicPartition(*P, 10, metadata=encode_done(10, bits(11, 13, committed=10)))])
    assert [completions.admit(P, offset) for offset in range(10, 15)] == [
        True,
        False,
        True,
        False,
        True,
    ]


def test_a_partition_with_nothing_committed_handles_every_record() -> None:
    completions = Completions()
    completions.load([TopicPartition(*P, -1001)])
    assert completions.admit(P, 0)
    assert completions.admit(P, 1)
