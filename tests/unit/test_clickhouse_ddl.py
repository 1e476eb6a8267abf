"""The canonical ClickHouse DDL on a modern engine: chDB embeds ClickHouse 26.9.

The local stack runs Debian's ClickHouse 18.16 with an adapted copy (local/clickhouse_compat.py);
the chart runs the canonical text unchanged, so it is checked here against a current server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from local.config import CONTRACTS

from jobflow.core.models import ClickhouseMessage, JobDone
from jobflow.schema.statements import created_name, render, split_statements

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
        (CONTRACTS / "clickhouse" / "migrations" / "0001_jobs.sql").read_text(),
        {"kafka_broker_list": "127.0.0.1:1"},
    )
    statements = split_statements(text)
    return {created_name(statement): statement for statement in statements}


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


# What the Kafka engine adds to each row it reads (kafka_handle_error_mode = 'stream'): stand-in
# tables carry them as ordinary columns, so that the views' SQL runs on rows of our choosing.
VIRTUAL_COLUMNS = (
    "_topic String DEFAULT 'clickhouse-topic', _partition UInt64 DEFAULT 0, "
    "_offset UInt64 DEFAULT 0, _error String DEFAULT '', _raw_message String DEFAULT ''"
)


def test_every_table_and_view_is_created(clickhouse: object) -> None:
    for name in ("jobs", "jobs_mv", "jobs_errors", "jobs_errors_mv"):
        query(clickhouse, canonical()[name])
    tables = query(clickhouse, "SHOW TABLES").split()
    assert {"jobs", "jobs_kafka", "jobs_mv", "jobs_errors", "jobs_errors_mv"} <= set(tables)


def test_the_views_select_turns_the_csv_rows_into_the_specs_rows(clickhouse: object) -> None:
    done = JobDone(
        id=JOB_ID,
        create_date="2024-01-27T12:34:50.594423357Z",
        finish_date="2024-01-27T12:34:50.704464721Z",
    )
    csv = "\n".join(row.to_csv().decode() for row in ClickhouseMessage.rows_for(done))
    query(
        clickhouse,
        "CREATE TABLE csv_rows (id String, status String, timestamp String, "
        f"{VIRTUAL_COLUMNS}) ENGINE = Memory",
    )
    query(clickhouse, f"INSERT INTO csv_rows (id, status, timestamp) FORMAT CSV {csv}")
    select = canonical()["jobs_mv"].split("AS\n", 1)[1].replace("jobs_kafka", "csv_rows")
    assert query(clickhouse, f"SELECT * FROM ({select}) ORDER BY status").splitlines() == [
        f"{JOB_ID}\tcreate\t2024-01-27 12:34:50",
        f"{JOB_ID}\tfinish\t2024-01-27 12:34:50",
    ]


@pytest.fixture
def flow(clickhouse: object) -> Iterator[object]:
    """The canonical tables and views in a database of their own, fed by a Null table that
    stands in for jobs_kafka."""
    query(clickhouse, "CREATE DATABASE flow")
    query(
        clickhouse,
        "CREATE TABLE flow.feed (id String, status String, timestamp String, "
        f"{VIRTUAL_COLUMNS}) ENGINE = Null",
    )
    for name in ("jobs", "jobs_errors", "jobs_mv", "jobs_errors_mv"):
        statement = re.sub(r"\b(jobs\w*)", r"flow.\1", canonical()[name])
        query(clickhouse, statement.replace("flow.jobs_kafka", "flow.feed"))
    yield clickhouse
    query(clickhouse, "DROP DATABASE flow")


def test_a_row_with_an_unparseable_timestamp_goes_to_the_errors_table_not_blocking_others(
    flow: object,
) -> None:
    # Regression: with a bare parseDateTimeBestEffortOrNull the NULL failed the whole insert.
    rows = [
        f"{JOB_ID},create,2024-01-27T12:34:50.594423357Z",
        f"{JOB_ID},finish,yesterday",
        f"{JOB_ID},finish,2024-01-27T12:34:50.704464721Z",
    ]
    query(flow, "INSERT INTO flow.feed (id, status, timestamp) FORMAT CSV " + "\n".join(rows))
    assert query(flow, "SELECT * FROM flow.jobs ORDER BY status").splitlines() == [
        f"{JOB_ID}\tcreate\t2024-01-27 12:34:50",
        f"{JOB_ID}\tfinish\t2024-01-27 12:34:50",
    ]
    assert query(flow, "SELECT raw_message, error FROM flow.jobs_errors").splitlines() == [
        f"{JOB_ID},finish,yesterday\ttimestamp is not a date and time"
    ]


def test_a_message_the_engine_could_not_parse_goes_to_the_errors_table_with_its_origin(
    flow: object,
) -> None:
    # In stream mode the engine hands over such a message as a row with empty columns and
    # _error / _raw_message set.
    query(
        flow,
        "INSERT INTO flow.feed (_partition, _offset, _error, _raw_message) VALUES "
        "(2, 41, 'Cannot parse input: expected \\',\\'', 'not,a,csv,row,at,all')",
    )
    assert query(flow, "SELECT count() FROM flow.jobs") == "0"
    assert query(
        flow, "SELECT topic, partition, offset, raw_message, error FROM flow.jobs_errors"
    ).splitlines() == [
        "clickhouse-topic\t2\t41\tnot,a,csv,row,at,all\tCannot parse input: expected \\',\\'"
    ]


def test_a_replayed_row_is_folded_so_each_job_shows_one_create_and_one_finish(
    flow: object,
) -> None:
    rows = "\n".join(
        [
            f"{JOB_ID},create,2024-01-27T12:34:50.594423357Z",
            f"{JOB_ID},finish,2024-01-27T12:34:50.704464721Z",
        ]
    )
    # Two inserts of the same block: what the engine does when it inserted a block and stopped
    # before committing its offsets.
    for _ in range(2):
        query(flow, f"INSERT INTO flow.feed (id, status, timestamp) FORMAT CSV {rows}")
    assert query(flow, "SELECT count() FROM flow.jobs") == "4"
    assert query(
        flow, "SELECT status, count() FROM flow.jobs FINAL GROUP BY status ORDER BY status"
    ).splitlines() == [
        "create\t1",
        "finish\t1",
    ]
