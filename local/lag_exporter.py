"""Consumer group lag for Prometheus, under the name Kafka Exporter gives it.

In a cluster, Strimzi's Kafka Exporter (k8s/strimzi/kafka.yaml, ``kafkaExporter``) exports
``kafka_consumergroup_lag{consumergroup, topic, partition}``, and the alert rules and the
Services dashboard read the lag of the groups jobflow's stages do not report themselves: Kafka
Connect's sink and ClickHouse's Kafka engine. Kafka Exporter is a Go program the Go module
proxy does not serve, so the local stack runs this in its place, with the same metric, labels
and meaning: for every partition of each topic a group has committed offsets on, the
partition's latest offset minus the group's committed offset, or -1 where the group has
committed none on that partition. Each scrape asks the broker afresh, as Kafka Exporter does.

    python -m local.lag_exporter --bootstrap-servers 127.0.0.1:9092 --listen 127.0.0.1:9308
"""

from __future__ import annotations

import argparse
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("lag-exporter")

Partition = tuple[str, int]
# A partition's end offset as a read_uncommitted reader sees it (the high watermark), as Kafka
# Exporter asks for it; confluent-kafka's OffsetSpec has no type annotations.
LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call]


def group_lags(
    committed: Mapping[str, Mapping[Partition, int]],
    partitions: Mapping[str, int],
    latest: Mapping[Partition, int],
) -> dict[tuple[str, str, int], int]:
    """Each group's lag on every partition of the topics it has committed offsets on.

    ``committed``: group -> (topic, partition) -> committed offset; ``partitions``: topic ->
    its number of partitions; ``latest``: (topic, partition) -> its latest offset. A partition
    whose latest offset is unknown (the broker did not answer for it) is left out.
    """
    lags = {}
    for group, offsets in committed.items():
        for topic in {topic for topic, _ in offsets}:
            for partition in range(partitions.get(topic, 0)):
                if (topic, partition) not in latest:
                    continue
                offset = offsets.get((topic, partition), -1)
                lag = latest[topic, partition] - offset if offset >= 0 else -1
                lags[group, topic, partition] = lag
    return lags


class LagCollector(Collector):
    def __init__(
        self, connect: Callable[[], AdminClient], groups: re.Pattern[str], timeout_s: float
    ) -> None:
        self.connect = connect
        self.admin = connect()
        self.groups = groups
        self.timeout_s = timeout_s

    def committed(self) -> dict[str, dict[Partition, int]]:
        listed = self.admin.list_consumer_groups(request_timeout=self.timeout_s).result()
        # Kafka Exporter's group filter is an unanchored match too.
        names = [g.group_id for g in listed.valid if self.groups.search(g.group_id)]
        # One group per request is all the admin API takes; they run concurrently.
        asked: dict[str, Future[ConsumerGroupTopicPartitions]] = {}
        for name in names:
            asked |= self.admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(name)], request_timeout=self.timeout_s
            )
        committed = {}
        for name, future in asked.items():
            try:
                answer = future.result()
            except KafkaException as exc:  # the group went away since it was listed
                log.info("offsets of group %s: %s", name, exc)
                continue
            committed[name] = {
                (tp.topic, tp.partition): tp.offset
                for tp in answer.topic_partitions or []
                if tp.error is None
            }
        return committed

    def latest(self, partitions: list[Partition]) -> dict[Partition, int]:
        if not partitions:
            return {}
        asked = self.admin.list_offsets(
            {TopicPartition(topic, partition): LATEST for topic, partition in partitions},
            request_timeout=self.timeout_s,
        )
        latest = {}
        for tp, future in asked.items():
            try:
                latest[tp.topic, tp.partition] = future.result().offset
            except KafkaException as exc:
                log.info("latest offset of %s [%d]: %s", tp.topic, tp.partition, exc)
        return latest

    def lags(self) -> dict[tuple[str, str, int], int]:
        committed = self.committed()
        topics = {topic for offsets in committed.values() for topic, _ in offsets}
        metadata = self.admin.list_topics(timeout=self.timeout_s).topics
        partitions = {
            topic: len(metadata[topic].partitions) for topic in topics if topic in metadata
        }
        wanted = [(topic, p) for topic, count in partitions.items() for p in range(count)]
        return group_lags(committed, partitions, self.latest(wanted))

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "kafka_consumergroup_lag",
            "Records after the consumer group's committed offset on the partition (-1: none "
            "committed there)",
            labels=("consumergroup", "topic", "partition"),
        )
        # A client per scrape: one kept across a broker's restart (kill -9) had every group's
        # offsets request time out from then on, while a new one was answered at once.
        self.admin = self.connect()
        try:
            lags = self.lags()
        except KafkaException as exc:
            # No series rather than stale ones: the broker is away, and Prometheus's alerts on
            # the lag then hold their state instead of seeing a made-up value.
            log.warning("reading the lag: %s", exc)
            lags = {}
        for (group, topic, partition), lag in sorted(lags.items()):
            family.add_metric([group, topic, str(partition)], lag)
        yield family


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--listen", required=True, help="host:port to serve /metrics on")
    parser.add_argument(
        "--group-regex",
        default=".*",
        help="groups to report (Strimzi's kafkaExporter groupRegex; k8s/strimzi has .*)",
    )
    parser.add_argument("--timeout-s", type=float, default=3.0)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    # log_level 3: librdkafka's errors only; a broker restarting is said once per scrape above.
    def connect() -> AdminClient:
        return AdminClient({"bootstrap.servers": arguments.bootstrap_servers, "log_level": 3})

    registry = CollectorRegistry(auto_describe=False)
    registry.register(LagCollector(connect, re.compile(arguments.group_regex), arguments.timeout_s))
    host, port = arguments.listen.rsplit(":", 1)
    start_http_server(int(port), addr=host, registry=registry)
    log.info("serving consumer group lag on http://%s/metrics", arguments.listen)
    threading.Event().wait()


if __name__ == "__main__":
    main()
