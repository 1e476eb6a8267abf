"""Fault-injection scenarios on the real local stack; their table is printed at the end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from local import stack
from local.config import StackSettings

from tests.chaos.harness import Outcome, Stack, table

OUTCOMES: list[Outcome] = []


@pytest.fixture(scope="session")
def chaos_stack() -> Iterator[Stack]:
    settings = StackSettings()
    asyncio.run(stack.up(settings))
    yield Stack(settings)
    # A stack of several brokers is this suite's own (`make chaos-brokers`, beside `make up`'s):
    # stopped afterwards, its data kept. The one-broker stack is everybody's, left running.
    if settings.kafka_brokers > 1:
        stack.down(settings)


@pytest.fixture
def outcomes() -> list[Outcome]:
    return OUTCOMES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if OUTCOMES:
        terminalreporter.section("fault injection")
        terminalreporter.write_line(table(OUTCOMES))
