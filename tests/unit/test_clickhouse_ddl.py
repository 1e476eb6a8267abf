"""The canonical ClickHouse DDL on a modern engine: chDB embeds ClickHouse 26.9.

The local stack runs Debian's ClickHouse 18.16 with an adapted copy (local/clickhouse_compat.py);
the chart runs the canonical text unchanged, so it is checked here against a current server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from local.config import CONTRACTS

from jobflow.core.models import ClickhouseMessage, JobDone
from jobflow.schema.statements import render, split_statements

chdb_session = pytest.importorskip("chdb.session")

JOB_ID = "b31b7446-20f7-4add-adea-157bac7fe73b"


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    session = chdb_session.Session(str(tmp_path_factory.mktemp("chdb")))
    session.query("SET session_timezone = 'UTC'")
    yield session
    session.close()


def query(session: object, sql: str) -> str:
    return str(session.query(sql, "TSV")).strip()  # type: ignore[attr-defined]


def error_of(session: object, sql: str) -> str | None:
    try:
        query(session, sql)
    except Exception as exc:
        return str(exc)
    return None


def canonical() -> dict[str, str]:
    text = render(
        (CONTRACTS / "clickhouse" / "schema.sql").read_text(), {"kafka_broker_list": "127.0.0.1:1"}
    )
    statements = split_statements(text)
    names = [re.search(r"EXISTS (\w+)", s).group(1) for s in statements]  # type: ignore[union-attr]
    return dict(zip(names, statements, strict=True))


def test_the_kafka_table_and_its_settings_are_accepted(clickhouse: object) -> None:
    statement = canonical()["jobs_kafka"]
    error = error_of(clickhouse, statement)
    # chDB validates the engine and its settings, registers the table, then fails to start the
    # (absent) background consumers; any other error is a real rejection.
    assert error is None or "Shutdown was called" in error
    engine = query(clickhouse, "SELECT engine_full FROM system.tables WHERE name = 'jobs_kafka'")
    for setting in re.findall(r"(kafka_\w+ = [^,\n]+)", statement):
        assert setting.strip() in engine.replace("\\'", "'")


def test_an_unknown_kafka_setting_would_be_rejected(clickhouse: object) -> None:
    with pytest.raises(Exception, match="Unknown setting 'kafka_no_such_thing'"):
        query(
            clickhouse,
            canonical()["jobs_kafka"]
            .replace("jobs_kafka", "jobs_kafka_bad")
            .replace("kafka_num_consumers = 1", "kafka_num_consumers = 1, kafka_no_such_thing = 1"),
        )


def test_the_target_table_and_the_view_are_created(clickhouse: object) -> None:
    query(clickhouse, canonical()["jobs"])
    query(clickhouse, canonical()["jobs_mv"])
    tables = query(clickhouse, "SHOW TABLES").split()
    assert {"jobs", "jobs_kafka", "jobs_mv"} <= set(tables)


def test_the_views_select_turns_the_csv_rows_into_the_specs_rows(
    clickhouse: object, tmp_path: Path
) -> None:
    done = JobDone(
        id=JOB_ID,
        create_date="2024-01-27T12:34:50.594423357Z",
        finish_date="2024-01-27T12:34:50.704464721Z",
    )
    csv = "\n".join(row.to_csv().decode() for row in ClickhouseMessage.rows_for(done))
    query(
        clickhouse,
        "CREATE TABLE csv_rows (id String, status String, timestamp String) ENGINE = Memory",
    )
    query(clickhouse, f"INSERT INTO csv_rows FORMAT CSV {csv}")
    select = canonical()["jobs_mv"].split("AS\n", 1)[1].replace("jobs_kafka", "csv_rows")
    assert query(clickhouse, f"SELECT * FROM ({select}) ORDER BY status").splitlines() == [
        f"{JOB_ID}\tcreate\t2024-01-27 12:34:50",
        f"{JOB_ID}\tfinish\t2024-01-27 12:34:50",
    ]


def test_a_row_with_an_unparseable_timestamp_is_left_out_and_does_not_block_the_others(
    clickhouse: object,
) -> None:
    # Regression: with a bare parseDateTimeBestEffortOrNull the NULL failed the whole insert.
    query(clickhouse, "CREATE DATABASE flow")
    query(
        clickhouse,
        "CREATE TABLE flow.feed (id String, status String, timestamp String) ENGINE = Null",
    )
    query(clickhouse, canonical()["jobs"].replace("EXISTS jobs", "EXISTS flow.jobs"))
    view = canonical()["jobs_mv"].replace("EXISTS jobs_mv", "EXISTS flow.jobs_mv")
    query(clickhouse, view.replace("TO jobs", "TO flow.jobs").replace("jobs_kafka", "flow.feed"))
    rows = [
        f"{JOB_ID},create,2024-01-27T12:34:50.594423357Z",
        f"{JOB_ID},finish,yesterday",
        f"{JOB_ID},finish,2024-01-27T12:34:50.704464721Z",
    ]
    query(clickhouse, "INSERT INTO flow.feed FORMAT CSV " + "\n".join(rows))
    assert query(clickhouse, "SELECT * FROM flow.jobs ORDER BY status").splitlines() == [
        f"{JOB_ID}\tcreate\t2024-01-27 12:34:50",
        f"{JOB_ID}\tfinish\t2024-01-27 12:34:50",
    ]
