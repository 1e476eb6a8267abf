"""The Services dashboard's structure and the names it and the alert rules share with the
contracts, offline; the queries run in test_observability.py and test_sink_metrics.py."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
import yaml
from local.components import Connect
from local.config import CONTRACTS
from monitoring.dashboard import DASHBOARD, SINK_GROUPS, rendered

# run by make observability-check too (tests/targets.mk)
pytestmark = pytest.mark.observability


def panels() -> list[dict[str, Any]]:
    model: dict[str, Any] = orjson.loads(DASHBOARD.read_bytes())
    return list(model["panels"])


def test_the_committed_dashboard_is_the_generated_one() -> None:
    assert DASHBOARD.read_text() == rendered(), "run `python -m monitoring.dashboard --write`"


def test_the_dashboard_has_a_row_per_service_and_the_pipeline() -> None:
    rows = [p["title"] for p in panels() if p["type"] == "row"]
    assert rows == ["Receiver", "Processor", "Converter", "Sinks", "Informer", "Pipeline"]


def test_panel_ids_are_unique_and_every_query_uses_the_datasource_variable() -> None:
    model = orjson.loads(DASHBOARD.read_bytes())
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    (variable,) = model["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    text = DASHBOARD.read_text()
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', text)) - {"jobflow-services"}
    assert uids == {"${datasource}"}, "a hard-coded datasource uid"
    for panel in model["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])


def rule_expressions() -> dict[str, str]:
    rules = yaml.safe_load((CONTRACTS / "monitoring" / "rules.yaml").read_text())
    return {r["alert"]: r["expr"] for group in rules["groups"] for r in group["rules"]}


def test_the_sink_groups_are_those_kafka_connect_and_clickhouse_consume_as() -> None:
    """Kafka Connect names a sink's group connect-<connector>; ClickHouse's Kafka engine takes
    kafka_group_name. The chart's KafkaConnector and the local stack's connector are one name."""
    (clickhouse,) = re.findall(
        r"kafka_group_name\s*=\s*'([^']+)'",
        (CONTRACTS / "clickhouse" / "migrations" / "0001_jobs.sql").read_text(),
    )
    assert (f"connect-{Connect.connector}", clickhouse) == SINK_GROUPS
    template = (CONTRACTS.parent / "templates" / "connect.yaml").read_text()
    assert re.search(rf"kind: KafkaConnector\nmetadata:\n  name: {Connect.connector}\n", template)


def test_the_sink_rules_and_panels_watch_the_sinks_and_nothing_else() -> None:
    sinks = "|".join(SINK_GROUPS)
    texts = [*rule_expressions().values(), DASHBOARD.read_text()]
    groups = {g for text in texts for g in re.findall(r'consumergroup=~\\?"([^"\\]+)', text)}
    assert groups == {sinks}
    texts = [rule_expressions()["JobflowConnectorNotRunning"], DASHBOARD.read_text()]
    connectors = {c for text in texts for c in re.findall(r'connector=\\?"([^"\\]+)', text)}
    assert connectors == {Connect.connector}
