"""Every test is marked with the name of its folder (unit, stack, chaos, cluster, kube), so that
a make target can select a whole folder and marked tests of other folders in one marker
expression (tests/targets.mk: `make test-operator` runs `kube or operator`)."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(item.path.relative_to(TESTS).parts[0])
