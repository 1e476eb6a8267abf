"""Tests on the real local stack: Kafka, Kafka Connect, PostgreSQL, ClickHouse, the services.

The session starts the stack when it is not up (`python -m local up`, idempotent).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import psycopg
import pytest
from local import stack
from local.config import StackSettings

from jobflow.core.settings import KafkaSettings, PostgresSettings


@pytest.fixture(scope="session")
def local_stack() -> StackSettings:
    settings = StackSettings()
    asyncio.run(stack.up(settings))
    return settings


@pytest.fixture(scope="session")
def kafka(local_stack: StackSettings) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=local_stack.kafka_bootstrap)


@pytest.fixture(scope="session")
def ports(local_stack: StackSettings) -> dict[str, int]:
    return stack.service_ports()


@pytest.fixture
async def receiver(ports: dict[str, int]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['receiver']}", timeout=10) as c:
        yield c


@pytest.fixture
async def informer(ports: dict[str, int]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['informer']}", timeout=10) as c:
        yield c


@pytest.fixture
def postgres(local_stack: StackSettings) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(PostgresSettings().conninfo(), autocommit=True) as connection:
        yield connection


@pytest.fixture
async def clickhouse(local_stack: StackSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=local_stack.clickhouse_url, timeout=10) as client:
        yield client
