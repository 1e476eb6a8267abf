"""PartitionStarts: which assigned partitions have not started fetching, from librdkafka's
statistics documents."""

from __future__ import annotations

from typing import Any

from jobflow.core.kafka import PartitionStarts


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def statistics(
    fetch_states: dict[str, str], group_state: tuple[str, str] = ("up", "steady")
) -> dict[str, Any]:
    """A statistics document in which each named partition of topic t is assigned."""
    return {
        "cgrp": {"state": group_state[0], "join_state": group_state[1]},
        "topics": {
            "t": {
                "partitions": {
                    partition: {"desired": partition != "-1", "fetch_state": state}
                    for partition, state in fetch_states.items()
                }
            }
        },
    }


def test_a_partition_waiting_past_the_limit_is_named_until_it_starts() -> None:
    clock = Clock()
    starts = PartitionStarts(clock)
    starts.update(statistics({"0": "none", "1": "active", "-1": "none"}))
    clock.now = 10.0
    starts.update(statistics({"0": "none", "1": "active", "-1": "none"}))
    assert starts.not_started(9.0) == ["t[0]"]
    assert starts.not_started(11.0) == []
    starts.update(statistics({"0": "active", "1": "active"}))
    assert starts.not_started(0.0) == []


def test_partitions_not_assigned_here_are_left_out() -> None:
    clock = Clock()
    starts = PartitionStarts(clock)
    document = statistics({"0": "none"})
    document["topics"]["t"]["partitions"]["0"]["desired"] = False
    starts.update(document)
    clock.now = 100.0
    assert starts.not_started(1.0) == []


def test_the_wait_is_counted_only_while_the_consumer_is_a_settled_member() -> None:
    # During a rebalance, or with the brokers away, a partition not fetching is expected: the
    # count starts again once the group is settled.
    clock = Clock()
    starts = PartitionStarts(clock)
    starts.update(statistics({"0": "none"}))
    clock.now = 50.0
    starts.update(statistics({"0": "none"}, ("wait-coord", "init")))
    assert starts.not_started(1.0) == []
    starts.update(statistics({"0": "none"}))
    clock.now = 60.0
    assert starts.not_started(20.0) == []
    assert starts.not_started(5.0) == ["t[0]"]


def test_a_started_partition_waiting_for_its_leader_is_not_counted() -> None:
    clock = Clock()
    starts = PartitionStarts(clock)
    starts.update(statistics({"0": "offset-query", "1": "validate-epoch-wait"}))
    clock.now = 500.0
    starts.update(statistics({"0": "offset-query", "1": "validate-epoch-wait"}))
    assert starts.not_started(1.0) == []
