"""Which records of each partition are done, beyond the partition's committed offset.

A stage's records finish in any order: one job sleeps a minute, the next ones a few
milliseconds. Kafka keeps one committed offset per partition, meaning "every record before it
is done", so a record finished above an unfinished one cannot move it. As Confluent's Parallel
Consumer does, the offsets finished above it travel in the commit's metadata string, committed
in the same transaction as their outputs; whoever consumes the partition next (this instance
after a rewind, another after a rebalance, a restarted one after a crash) reads them back and
skips those records.

The metadata is ``jobflow-done:1:<committed offset>:<bitmap>``, the bitmap saying which offsets
above the committed one are done (bit i: offset committed + i, little-endian), zlib-compressed
and base64-encoded. The broker refuses metadata longer than ``offset.metadata.max.bytes`` (4 KiB by
default): when the finished offsets would not fit, a partition commits only the records below
its lowest unfinished one, as if records had to finish in order, and the others wait for it.
Metadata that is not ours, or written for another committed offset (an offset reset with
Kafka's tools), is ignored: those records are handled again, never skipped wrongly.
"""

from __future__ import annotations

import base64
import binascii
import logging
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import TopicPartition

log = logging.getLogger(__name__)

PREFIX = "jobflow-done:1:"
# The broker's offset.metadata.max.bytes by default.
DEFAULT_MAX_METADATA_BYTES = 4096

Partition = tuple[str, int]


def encode_done(committed: int, done: int) -> str:
    """The metadata saying which offsets above ``committed`` are done (bit i of ``done``:
    offset committed + i); empty when none is."""
    if done == 0:
        return ""
    bits = done.to_bytes((done.bit_length() + 7) // 8, "little")
    return f"{PREFIX}{committed}:{base64.b64encode(zlib.compress(bits, 9)).decode()}"


def decode_done(committed: int, metadata: str | None) -> int:
    """Which offsets above ``committed`` ``metadata`` says are done, as encode_done's bits."""
    if not metadata or not metadata.startswith(PREFIX):
        return 0
    written_for, _, packed = metadata[len(PREFIX) :].partition(":")
    try:
        if int(written_for) != committed:
            log.warning(
                "offset metadata written for another offset is ignored",
                extra={"committed": committed, "metadata_offset": written_for},
            )
            return 0
        bits = zlib.decompress(base64.b64decode(packed, validate=True))
    except (ValueError, binascii.Error, zlib.error) as exc:
        log.warning("unreadable offset metadata is ignored", extra={"error": str(exc)})
        return 0
    # The committed offset itself is never done: it would have been committed past.
    return int.from_bytes(bits, "little") & ~1


def _trailing_ones(bits: int) -> int:
    return (~bits & (bits + 1)).bit_length() - 1


@dataclass
class PartitionProgress:
    """One assigned partition: its committed offset, the offsets done above it (committed with
    their outputs), and the records consumed since that are not committed yet.

    Done offsets are bits of an int (bit i: offset committed + i): a long job at the committed
    offset may have tens of thousands done above it, set and shifted at C speed.
    """

    committed: int
    done: int = 0
    # Offsets handled here and not known done, ascending (a partition is consumed in order).
    open: deque[int] = field(default_factory=deque)
    # The offset after the last record consumed; None until one is.
    consumed_up_to: int | None = None

    def is_done(self, offset: int) -> bool:
        index = offset - self.committed
        return index < 0 or bool(self.done >> index & 1)

    def admit(self, offset: int) -> bool:
        """Note a consumed record; false when it is done already (to be skipped)."""
        self.consumed_up_to = offset + 1
        if self.is_done(offset):
            return False
        self.open.append(offset)
        return True

    def lowest_unfinished(self, finishing: set[int]) -> int | None:
        """The lowest offset handled here that is neither done nor in ``finishing``."""
        return next((o for o in self.open if o not in finishing and not self.is_done(o)), None)

    def after(self, finished: Iterable[int]) -> tuple[int, int]:
        """The committed offset and done bits once ``finished`` (open offsets) are done."""
        done = self.done
        for offset in finished:
            done |= 1 << (offset - self.committed)
        first_open = next((o for o in self.open if not done >> (o - self.committed) & 1), None)
        committed = (
            first_open
            if first_open is not None
            else max(self.committed, self.consumed_up_to or self.committed)
        )
        done >>= committed - self.committed
        # Records not consumed again yet that the metadata said are done.
        skipped = _trailing_ones(done)
        return committed + skipped, done >> skipped

    def mark_committed(self, committed: int, done: int) -> None:
        """The offset and done bits ``after`` gave were committed. (Records consumed since
        are above them and change neither.)"""
        self.committed, self.done = committed, done
        while self.open and self.open[0] < committed:
            self.open.popleft()


@dataclass
class CommitPlan:
    """What one transaction commits: the records whose outputs it carries, and the offsets."""

    records: dict[Partition, list[int]]
    offsets: list[TopicPartition]
    # Each partition's committed offset and done bits once committed (what offsets say).
    progress: dict[Partition, tuple[int, int]] = field(default_factory=dict)
    # Partitions whose finished records did not all fit in the offset metadata.
    held_back: int = 0


class Completions:
    """The progress of every partition this instance consumes."""

    def __init__(self, max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES) -> None:
        self._max_metadata_bytes = max_metadata_bytes
        self._partitions: dict[Partition, PartitionProgress] = {}

    def unknown(self, partitions: Iterable[Partition]) -> set[Partition]:
        """Which of ``partitions`` have no progress yet: their committed offsets are needed."""
        return {p for p in partitions if p not in self._partitions}

    def load(self, committed: Iterable[TopicPartition]) -> None:
        """Start tracking partitions from their committed offsets and metadata (a negative
        offset: nothing committed yet)."""
        for tp in committed:
            if tp.offset >= 0:
                progress = PartitionProgress(tp.offset, decode_done(tp.offset, tp.metadata))
            else:
                progress = PartitionProgress(0)
            self._partitions[(tp.topic, tp.partition)] = progress

    def admit(self, partition: Partition, offset: int) -> bool:
        """Note a consumed record; false when it is done already (to be skipped)."""
        return self._partitions[partition].admit(offset)

    def clear(self) -> None:
        """Forget everything: consumed again from the committed offsets, it is loaded anew."""
        self._partitions.clear()

    def plan(self, finished: dict[Partition, list[int]]) -> CommitPlan:
        """What may be committed of ``finished``: per partition all of it when the metadata
        fits, else what lies below its lowest unfinished record, else nothing."""
        plan = CommitPlan({}, [])
        for partition, offsets in finished.items():
            progress = self._partitions[partition]
            lowest = progress.lowest_unfinished(set(offsets))
            in_order = [o for o in offsets if lowest is None or o < lowest]
            for candidates in (offsets, in_order):
                if not candidates:
                    continue
                committed, done = progress.after(candidates)
                metadata = encode_done(committed, done)
                if len(metadata.encode()) <= self._max_metadata_bytes:
                    plan.records[partition] = candidates
                    plan.offsets.append(TopicPartition(*partition, committed, metadata=metadata))
                    plan.progress[partition] = (committed, done)
                    break
            if plan.records.get(partition) != offsets:
                plan.held_back += 1
        return plan

    def mark_committed(self, plan: CommitPlan) -> None:
        for partition, (committed, done) in plan.progress.items():
            self._partitions[partition].mark_committed(committed, done)
