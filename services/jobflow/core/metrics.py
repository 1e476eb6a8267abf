"""Prometheus metrics common to the services: Kafka clients, consume-transform-produce stages.

Names follow Prometheus conventions (base units, ``_total`` counters, ``_seconds`` durations).
Metrics that belong to one service are declared in that service's module.
"""

from __future__ import annotations

from importlib.metadata import version

from prometheus_client import Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A job may last a minute.
JOB_BUCKETS = (*LATENCY_BUCKETS, 30.0, 60.0, 120.0)

BUILD_INFO = Info("jobflow_build", "Version of the running jobflow service.")

KAFKA_PRODUCE_SECONDS = Histogram(
    "jobflow_kafka_produce_duration_seconds",
    "Time from producing a record to the broker's acknowledgement.",
    ["topic"],
    buckets=LATENCY_BUCKETS,
)
KAFKA_DELIVERY_ERRORS = Counter(
    "jobflow_kafka_delivery_errors_total",
    "Records the broker did not acknowledge.",
    ["topic"],
)
RECORDS_CONSUMED = Counter(
    "jobflow_records_consumed_total", "Records read from an input topic.", ["topic"]
)
DLQ_RECORDS = Counter(
    "jobflow_dlq_records_total",
    "Records sent to a dead-letter topic because they could not be decoded.",
    ["topic"],
)
RECORD_SECONDS = Histogram(
    "jobflow_record_duration_seconds",
    "Time from consuming a record to committing its outputs.",
    ["stage"],
    buckets=JOB_BUCKETS,
)
RECORDS_SKIPPED = Counter(
    "jobflow_records_skipped_total",
    "Records consumed again that were already done (their commit's metadata says so): after "
    "a rewind, a rebalance or a restart.",
    ["topic"],
)
OFFSET_METADATA_FULL = Counter(
    "jobflow_offset_metadata_full_total",
    "Commits that left a partition's finished records for later, because the offsets done "
    "above its lowest unfinished record did not fit in the commit's metadata.",
    ["stage"],
)
RECORDS_IN_FLIGHT = Gauge(
    "jobflow_records_in_flight", "Consumed records whose outputs are not committed yet.", ["stage"]
)

CONSUMER_LAG = Gauge(
    "jobflow_consumer_lag_records",
    "Records in a partition after the consumer's position (librdkafka's statistics).",
    ["group", "topic", "partition"],
)

TRANSACTION_SECONDS = Histogram(
    "jobflow_transaction_duration_seconds",
    "Time from beginning a stage's transaction to its commit's answer.",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
TRANSACTIONS = Counter(
    "jobflow_transactions_total",
    "Kafka transactions of a stage (a batch's outputs with its input offsets), by outcome.",
    ["stage", "outcome"],
)


def publish_build_info(service: str) -> None:
    BUILD_INFO.info({"service": service, "version": version("jobflow")})
