"""Observability against the real local Prometheus: every panel of the Services dashboard shows
data under a short load, every metric a panel names is one a service, Kafka Connect's JMX
exporter or the lag exporter exports, and the alert rules are valid, pass their unit tests and
are loaded."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from local.config import CONTRACTS, REPO, StackSettings
from local.stack import scrape_targets
from monitoring.dashboard import DASHBOARD, RATE
from monitoring.render import render

from jobflow.core.settings import KafkaSettings
from tests.polling import eventually
from tests.stack.topics import produce

# run by make observability-check too (tests/targets.mk)
pytestmark = pytest.mark.observability

RULES = CONTRACTS / "monitoring" / "rules.yaml"
# What a PromQL expression names that is not a metric.
PROMQL_WORDS = {
    "sum", "max", "by", "rate", "increase", "histogram_quantile", "or", "vector", "on",
    "group_left", "le", "job", "instance", "service", "topic", "partition", "group", "stage",
    "status", "reason", "backend", "outcome", "handler", "connector", "task", "consumergroup",
}  # fmt: skip
ALERTS = {
    "JobflowServiceDown",
    "JobflowConsumerLagGrowing",
    "JobflowDeadLetters",
    "JobflowHighErrorRatio",
    "JobflowJobsNotFinishing",
    "JobflowConnectorNotRunning",
    "JobflowSinkLagGrowing",
}


def promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None, "promtool comes with Debian's prometheus, which `make up` installs"
    return subprocess.run(  # noqa: S603 - promtool from the system's prometheus package
        [binary, *arguments], capture_output=True, text=True, check=False, cwd=REPO
    )


def test_the_rules_are_valid(local_stack: StackSettings) -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_each_alert_fires_when_it_should_and_not_before(local_stack: StackSettings) -> None:
    tested = promtool("test", "rules", "monitoring/rules-test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_local_prometheus_loaded_the_rules(local_stack: StackSettings) -> None:
    def evaluated() -> list[dict[str, Any]]:
        answer = httpx.get(f"{local_stack.prometheus_url}/api/v1/rules", timeout=10).json()
        (group,) = [g for g in answer["data"]["groups"] if g["name"] == "jobflow"]
        rules: list[dict[str, Any]] = group["rules"]
        # "unknown" until the first evaluation, 5 s at most after Prometheus (re)started.
        return rules if all(rule["health"] != "unknown" for rule in rules) else []

    rules = eventually(evaluated, 30, "the rules were never evaluated")
    assert {rule["name"] for rule in rules} == ALERTS
    # Evaluated on the real series without an error (a rule that cannot be is "err").
    assert {rule["name"]: rule["health"] for rule in rules} == dict.fromkeys(ALERTS, "ok")


def dashboard_queries() -> list[tuple[str, str]]:
    model: dict[str, Any] = orjson.loads(DASHBOARD.read_bytes())
    return [
        (panel["title"], target["expr"])
        for panel in model["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


async def some_traffic(ports: dict[str, int], kafka: KafkaSettings) -> None:
    """Jobs created and looked up, a bad request, a record for the dead-letter topic."""
    async with httpx.AsyncClient(timeout=10) as client:
        created = await asyncio.gather(
            *(
                client.post(
                    f"http://127.0.0.1:{ports['receiver']}/api/v1/create/job", json={"sleep": 10}
                )
                for _ in range(50)
            )
        )
        await client.post(
            f"http://127.0.0.1:{ports['receiver']}/api/v1/create/job", json={"sleep": "x"}
        )
        for answer in created[:20]:
            await client.get(f"http://127.0.0.1:{ports['informer']}/info/{answer.json()['id']}")
    produce(kafka, kafka.receiver_topic, [(f"observability-{uuid.uuid4()}".encode(), b"not json")])


@pytest.mark.timeout(180)
def test_every_panel_shows_data_from_the_real_prometheus(
    local_stack: StackSettings, ports: dict[str, int], kafka: KafkaSettings
) -> None:
    asyncio.run(some_traffic(ports, kafka))

    def empty_panels() -> list[str]:
        empty = []
        for title, expr in dashboard_queries():
            answer = httpx.get(
                f"{local_stack.prometheus_url}/api/v1/query",
                params={"query": expr.replace(RATE, "1m")},
                timeout=10,
            ).json()
            assert answer["status"] == "success", f"{title}: {answer}"
            if not answer["data"]["result"]:
                empty.append(f"{title}: {expr}")
        return empty

    # Scrapes every 5 s, and a rate needs two samples after the traffic.
    deadline = time.monotonic() + 90
    while (empty := empty_panels()) and time.monotonic() < deadline:
        time.sleep(2)
    assert empty == [], "panels without data"


def test_every_metric_a_panel_names_is_exported(local_stack: StackSettings) -> None:
    exported = set()
    for address in scrape_targets(local_stack).values():
        text = httpx.get(f"http://{address}/metrics", timeout=10).text
        exported |= set(re.findall(r"^# TYPE (\w+) ", text, re.MULTILINE))
    named = {
        word
        for _, expr in dashboard_queries()
        for word in re.findall(r"\b([a-z_][a-z0-9_]*)\b", re.sub(r'"[^"]*"|\[[^]]*\]', "", expr))
        if word not in PROMQL_WORDS and not word.isdigit()
    }
    # A histogram's series are named after its TYPE line plus _bucket, _count or _sum;
    # prometheus_client's TYPE line names a counter without its _total suffix. A gauge of the
    # JMX exporter may itself end in _count (..._task_count).
    missing = {
        name
        for name in named
        if not {
            name,
            re.sub(r"_(bucket|count|sum)$", "", name),
            name.removesuffix("_total"),
        }
        & exported
    }
    assert missing == set()


def test_make_dashboards_draws_every_panel_from_the_real_prometheus(
    local_stack: StackSettings, tmp_path: Path
) -> None:
    # Runs after the panel test above, whose traffic is still within the window drawn.
    out = tmp_path / "services.png"
    empty = render(local_stack.prometheus_url, 10, out)
    assert empty == []
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
