"""Prometheus on the local stack scrapes every service, Kafka Connect's JMX exporter and the
lag exporter."""

from __future__ import annotations

import asyncio
import time

import httpx
from local.config import StackSettings
from local.stack import scrape_targets, service_ports


async def test_prometheus_scrapes_every_target(local_stack: StackSettings) -> None:
    wanted = set(scrape_targets(local_stack))
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=local_stack.prometheus_url, timeout=10) as prometheus:
        while True:
            targets = (await prometheus.get("/api/v1/targets")).json()["data"]["activeTargets"]
            up = {t["labels"]["job"] for t in targets if t["health"] == "up"}
            if up >= wanted or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        assert up == wanted
        result = (
            await prometheus.get("/api/v1/query", params={"query": "jobflow_build_info"})
        ).json()["data"]["result"]
    assert {series["metric"]["service"] for series in result} == set(service_ports())
