"""jobflow_consumer_lag_records from librdkafka's statistics documents."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from jobflow.core.kafka import export_consumer_lag


def lag(group: str, topic: str, partition: str) -> float | None:
    return REGISTRY.get_sample_value(
        "jobflow_consumer_lag_records", {"group": group, "topic": topic, "partition": partition}
    )


def statistics(partitions: dict[str, dict[str, int]]) -> dict[str, Any]:
    return {"topics": {"t-lag": {"partitions": partitions}}}


def test_lag_counts_from_the_last_record_handed_over_not_the_committed_offset() -> None:
    # Regression: offsets committed in a transaction never reach the consumer's statistics,
    # so consumer_lag (from the committed offset) grew forever on an idle, caught-up stage.
    export_consumer_lag(
        "g-lag",
        statistics(
            {
                "0": {"consumer_lag": 480, "consumer_lag_stored": 0},
                "1": {"consumer_lag": 500, "consumer_lag_stored": 12},
            }
        ),
    )
    assert lag("g-lag", "t-lag", "0") == 0
    assert lag("g-lag", "t-lag", "1") == 12


def test_librdkafkas_internal_partition_and_unknown_lags_are_left_out() -> None:
    export_consumer_lag(
        "g-unknown",
        statistics({"-1": {"consumer_lag_stored": 5}, "2": {"consumer_lag_stored": -1}}),
    )
    assert lag("g-unknown", "t-lag", "-1") is None
    assert lag("g-unknown", "t-lag", "2") is None
