"""The apply command (what the operator's Job runs) against the local ClickHouse."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import httpx
import pytest
from local.config import REPO, StackSettings

# run by make test-operator too (tests/targets.mk)
pytestmark = pytest.mark.operator


def apply_command(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobflow.schema"],
        env={**os.environ, **environment},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_statements_are_applied_once_and_a_second_run_changes_nothing(
    local_stack: StackSettings,
) -> None:
    database = f"apply_{uuid.uuid4().hex[:8]}"
    environment = {
        "SCHEMA_TARGET": "clickhouse",
        "SCHEMA_URL": local_stack.clickhouse_url,
        "SCHEMA_PARAMETERS": f'{{"database": "{database}"}}',
        "SCHEMA_STATEMENTS": (
            "-- a comment\n"
            "CREATE DATABASE IF NOT EXISTS ${database};\n"
            "CREATE TABLE IF NOT EXISTS ${database}.jobs (id String, status String, "
            "timestamp DateTime) ENGINE = MergeTree() ORDER BY timestamp;\n"
        ),
    }
    first = apply_command(environment)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.splitlines() == [
        f"applying 2 statement(s) to clickhouse at {local_stack.clickhouse_url}",
        f"[1/2] applied: CREATE DATABASE IF NOT EXISTS {database}",
        f"[2/2] applied: CREATE TABLE IF NOT EXISTS {database}.jobs (id String, status String, "
        "timestamp DateTime) ENGINE = MergeTree() ORDER BY timestamp",
        "done",
    ]
    httpx.post(
        local_stack.clickhouse_url,
        content=f"INSERT INTO {database}.jobs VALUES ('a', 'create', now())",
    )
    second = apply_command(environment)
    assert second.returncode == 0, second.stdout + second.stderr
    count = httpx.post(local_stack.clickhouse_url, content=f"SELECT count() FROM {database}.jobs")
    assert count.text.strip() == "1", "the second run must leave the table (and its rows) alone"


def test_the_first_failure_stops_the_run_with_the_servers_reason(
    local_stack: StackSettings,
) -> None:
    database = f"apply_{uuid.uuid4().hex[:8]}"
    result = apply_command(
        {
            "SCHEMA_TARGET": "clickhouse",
            "SCHEMA_URL": local_stack.clickhouse_url,
            "SCHEMA_STATEMENTS": (
                f"CREATE TABLE nowhere.t (a String) ENGINE = Memory;CREATE DATABASE {database};"
            ),
        }
    )
    assert result.returncode == 1
    assert "[1/2] FAILED CREATE TABLE nowhere.t" in result.stdout
    assert "Database nowhere doesn't exist" in result.stdout
    databases = httpx.post(local_stack.clickhouse_url, content="SHOW DATABASES").text.split()
    assert database not in databases


def test_a_target_that_never_answers_exits_2() -> None:
    result = apply_command(
        {
            "SCHEMA_TARGET": "clickhouse",
            "SCHEMA_URL": "http://127.0.0.1:9",
            "SCHEMA_STATEMENTS": "SELECT 1;",
            "SCHEMA_WAIT_TIMEOUT_S": "2",
        }
    )
    assert result.returncode == 2
    assert "target not ready: not ready after" in result.stdout
