"""The Services dashboard, written as data: `python -m monitoring.dashboard --write` renders
charts/jobflow/files/monitoring/services-dashboard.json (Grafana's JSON model), which the chart
provisions and tests/stack/test_observability.py checks against the local Prometheus.

One row per service, one for the sinks and one for the pipeline; every panel queries Prometheus
through the dashboard's `datasource` variable, never a fixed datasource uid.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import orjson

DASHBOARD = (
    Path(__file__).resolve().parents[1]
    / "charts"
    / "jobflow"
    / "files"
    / "monitoring"
    / "services-dashboard.json"
)
RATE = "$__rate_interval"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: tuple[Query, ...]
    description: str = ""


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def p99_and_p50(metric: str, selector: str = "", by: str = "") -> tuple[Query, ...]:
    group = f"le{', ' + by if by else ''}"
    legend = f"{{{{{by}}}}} " if by else ""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{selector}[{RATE}])))",
            f"{legend}p{int(q * 100)}",
        )
        for q in (0.99, 0.5)
    )


def rate_of(metric: str, selector: str = "", by: str = "", legend: str = "") -> Query:
    grouping = f" by ({by})" if by else ""
    return Query(f"sum{grouping} (rate({metric}{selector}[{RATE}]))", legend or f"{{{{{by}}}}}")


def zero_when_absent(query: Query) -> Query:
    """A counter with labels has no series until its first event: show 0, not "No data"."""
    return Query(f"({query.expr}) or vector(0)", query.legend)


def stage_row(
    stage: str, title: str, done_metric: str, done_legend: str, output_topics: str
) -> Row:
    selector = f'{{stage="{stage}"}}'
    return Row(
        title,
        (
            Panel("Jobs per second", "ops", (rate_of(done_metric, legend=done_legend),)),
            Panel(
                "Consumer lag by partition",
                "short",
                (
                    Query(
                        "sum by (topic, partition) "
                        f'(jobflow_consumer_lag_records{{group="{stage}"}})',
                        "{{topic}} [{{partition}}]",
                    ),
                ),
                "Records after the group's position; growing lag means this stage falls behind.",
            ),
            Panel(
                "Records in flight",
                "short",
                (Query(f"sum(jobflow_records_in_flight{selector})", "in flight"),),
            ),
            Panel(
                "Record duration (consumed to committed)",
                "s",
                p99_and_p50("jobflow_record_duration_seconds", selector),
            ),
            Panel(
                "Transactions by outcome",
                "ops",
                (rate_of("jobflow_transactions_total", selector, by="outcome"),),
            ),
            Panel(
                "Produce latency (to the broker's ack)",
                "s",
                p99_and_p50(
                    "jobflow_kafka_produce_duration_seconds", f'{{job=~".*{stage}.*"}}', by="topic"
                ),
            ),
        ),
    )


RECEIVER = '{handler="/api/v1/create/job"}'
INFORMER = '{handler="/info/{job_id}"}'
# The consumer groups that report no lag of their own: Kafka Connect's sink (connect-<its
# connector>) and ClickHouse's Kafka engine (kafka_group_name in clickhouse/migrations/). Their
# lag comes from Kafka Exporter's kafka_consumergroup_lag, as in the alert rules.
SINK_GROUPS = ("connect-postgres-connector", "clickhouse")
SINKS = f'{{consumergroup=~"{"|".join(SINK_GROUPS)}"}}'
# The Kafka Connect sink's connector: the chart's KafkaConnector, the local stack's.
CONNECTOR = '{connector="postgres-connector"}'

ROWS = (
    Row(
        "Receiver",
        (
            Panel(
                "Requests by status",
                "reqps",
                (rate_of("http_requests_total", RECEIVER, by="status"),),
            ),
            Panel("Request latency", "s", p99_and_p50("http_request_duration_seconds", RECEIVER)),
            Panel(
                "Jobs accepted and rejected",
                "ops",
                (
                    rate_of("jobflow_jobs_accepted_total", legend="accepted"),
                    zero_when_absent(rate_of("jobflow_jobs_rejected_total", by="reason")),
                ),
                "Rejected: valid jobs the receiver could not write (queue full, Kafka away).",
            ),
            Panel(
                "Produce latency to receiver-topic",
                "s",
                p99_and_p50("jobflow_kafka_produce_duration_seconds", '{topic="receiver-topic"}'),
            ),
        ),
    ),
    stage_row(
        "processor", "Processor", "jobflow_jobs_finished_total", "finished", "processor-topic"
    ),
    stage_row(
        "converter",
        "Converter",
        "jobflow_jobs_converted_total",
        "converted",
        "postgres-topic|clickhouse-topic",
    ),
    Row(
        "Sinks",
        (
            Panel(
                "Connector state",
                "short",
                (
                    Query(
                        f"max by (connector, status) (kafka_connect_connector_status{CONNECTOR})",
                        "{{connector}}: {{status}}",
                    ),
                ),
                "Kafka Connect's JMX metrics: a series at 1 for the state the connector is in "
                "(running, paused, stopped, failed, unassigned); the legend names it.",
            ),
            Panel(
                "Connector tasks by state",
                "short",
                tuple(
                    Query(
                        "sum by (connector) "
                        f"(kafka_connect_worker_connector_{state}_task_count{CONNECTOR})",
                        state,
                    )
                    for state in ("running", "failed", "paused", "restarting", "unassigned")
                ),
                "The connector's tasks on all workers, by state: anything but running for 5 "
                "minutes is JobflowConnectorNotRunning.",
            ),
            Panel(
                "Sink consumer lag",
                "short",
                (
                    Query(
                        f"sum by (consumergroup) (kafka_consumergroup_lag{SINKS})",
                        "{{consumergroup}}",
                    ),
                ),
                "Records after the committed offsets of Kafka Connect's sink and ClickHouse's "
                "Kafka engine (Kafka Exporter). With transactions, a group that is caught up "
                "may show 1 a partition: the commit marker after its last record.",
            ),
        ),
    ),
    Row(
        "Informer",
        (
            Panel(
                "Lookups by answer",
                "reqps",
                (rate_of("jobflow_informer_lookups_total", by="status"),),
            ),
            Panel(
                "Backend latency",
                "s",
                p99_and_p50("jobflow_informer_backend_duration_seconds", by="backend"),
            ),
            Panel(
                "Backend errors",
                "ops",
                (zero_when_absent(rate_of("jobflow_informer_backend_errors_total", by="backend")),),
            ),
            Panel("Request latency", "s", p99_and_p50("http_request_duration_seconds", INFORMER)),
        ),
    ),
    Row(
        "Pipeline",
        (
            Panel(
                "Jobs accepted, finished, converted",
                "ops",
                (
                    rate_of("jobflow_jobs_accepted_total", legend="accepted"),
                    rate_of("jobflow_jobs_finished_total", legend="finished"),
                    rate_of("jobflow_jobs_converted_total", legend="converted"),
                ),
            ),
            Panel(
                "End-to-end latency (create_date to the sinks' topics)",
                "s",
                p99_and_p50("jobflow_pipeline_latency_seconds"),
            ),
            Panel(
                "Job duration (create_date to finish_date)",
                "s",
                p99_and_p50("jobflow_job_duration_seconds"),
            ),
            Panel(
                "Consumer lag by group",
                "short",
                (Query("sum by (group) (jobflow_consumer_lag_records)", "{{group}}"),),
            ),
            Panel(
                "Records the broker never acknowledged, by topic",
                "short",
                (
                    zero_when_absent(
                        Query(
                            "sum by (topic) "
                            f"(increase(jobflow_kafka_delivery_errors_total[{RATE}]))",
                            "{{topic}}",
                        )
                    ),
                ),
            ),
            Panel(
                "Dead-lettered records by source topic",
                "short",
                (
                    zero_when_absent(
                        Query(
                            f"sum by (topic) (increase(jobflow_dlq_records_total[{RATE}]))",
                            "{{topic}}",
                        )
                    ),
                ),
            ),
            Panel(
                "Resident memory by service",
                "bytes",
                (
                    # jobflow_build_info names the service, whatever the scrape job is called.
                    Query(
                        "sum by (service) (process_resident_memory_bytes"
                        " * on (job, instance) group_left (service) jobflow_build_info)",
                        "{{service}}",
                    ),
                ),
            ),
        ),
    ),
)


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, object]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": q.expr,
                "legendFormat": q.legend,
            }
            for i, q in enumerate(panel.queries)
        ],
    }


def dashboard() -> dict[str, object]:
    panels: list[dict[str, object]] = []
    y = 0
    for row in ROWS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        for index, panel in enumerate(row.panels):
            if index and index % 3 == 0:
                y += 8
            panels.append(panel_json(panel, len(panels) + 1, (index % 3) * 8, y))
        y += 8
    return {
        "uid": "jobflow-services",
        "title": "Services",
        "tags": ["jobflow"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                }
            ]
        },
        "panels": panels,
    }


def rendered() -> str:
    return orjson.dumps(dashboard(), option=orjson.OPT_INDENT_2).decode() + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        DASHBOARD.write_text(rendered())
    else:
        sys.stdout.write(rendered())
