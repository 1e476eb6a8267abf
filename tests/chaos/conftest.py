"""Fault-injection scenarios on the real local stack; their table is printed at the end."""

from __future__ import annotations

import asyncio

import pytest
from local import stack
from local.config import StackSettings

from tests.chaos.harness import Outcome, Stack, table

OUTCOMES: list[Outcome] = []


@pytest.fixture(scope="session")
def chaos_stack() -> Stack:
    settings = StackSettings()
    asyncio.run(stack.up(settings))
    return Stack(settings)


@pytest.fixture
def outcomes() -> list[Outcome]:
    return OUTCOMES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if OUTCOMES:
        terminalreporter.section("fault injection")
        terminalreporter.write_line(table(OUTCOMES))
