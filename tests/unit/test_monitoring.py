"""The Services dashboard's structure, offline; its queries run in test_observability.py."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from monitoring.dashboard import DASHBOARD, rendered

# run by make observability-check too (tests/targets.mk)
pytestmark = pytest.mark.observability


def panels() -> list[dict[str, Any]]:
    model: dict[str, Any] = orjson.loads(DASHBOARD.read_bytes())
    return list(model["panels"])


def test_the_committed_dashboard_is_the_generated_one() -> None:
    assert DASHBOARD.read_text() == rendered(), "run `python -m monitoring.dashboard --write`"


def test_the_dashboard_has_a_row_per_service_and_the_pipeline() -> None:
    rows = [p["title"] for p in panels() if p["type"] == "row"]
    assert rows == ["Receiver", "Processor", "Converter", "Informer", "Pipeline"]


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
