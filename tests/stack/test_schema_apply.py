"""The apply command (what the operator's Job runs) against the local ClickHouse and PostgreSQL.

Each test has a database of its own, made and dropped here: the stack's own tables are not
touched. ClickHouse's migrations here are a MergeTree table of the test's (the chart's own need a
Kafka engine 18.16 does not have; they are checked against ClickHouse 26.9 in
tests/unit/test_schema_migrations.py); PostgreSQL's are the chart's files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from local.config import CONTRACTS, REPO, StackSettings

from jobflow.core.settings import PostgresSettings
from jobflow.schema.migrations import bundle, checksum

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


@dataclass
class Store:
    """One store as the tests use it: a database of the test's, its migrations in a folder."""

    name: str
    environment: dict[str, str]
    migrations: Path
    run: Callable[[str], object]  # a statement out of band, in the test's database
    rows: Callable[[str], list[tuple[object, ...]]]
    columns_query: str  # the names of table jobs' columns, in order
    add_column: str  # a second migration: ALTER TABLE jobs ADD COLUMN priority ...
    drift: tuple[str, ...]  # changes made by hand
    differences: list[str]  # what the apply command says of them

    def apply(self, **extra: str) -> subprocess.CompletedProcess[str]:
        return apply_command({**self.environment, **extra})

    def records(self) -> list[tuple[object, ...]]:
        return self.rows("SELECT version, name, checksum FROM schema_migrations ORDER BY version")

    def columns(self) -> list[str]:
        return [str(row[0]) for row in self.rows(self.columns_query)]


CLICKHOUSE_FIRST = """-- The test's table: the chart's needs a Kafka engine.
CREATE TABLE IF NOT EXISTS jobs (
  id String,
  status String,
  timestamp DateTime,
  attempts UInt8,
  payload String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(timestamp)
ORDER BY (id, status);
"""


@pytest.fixture
def clickhouse_store(local_stack: StackSettings, tmp_path: Path) -> Iterator[Store]:
    database = f"apply_{uuid.uuid4().hex[:8]}"
    http = httpx.Client(base_url=local_stack.clickhouse_url, timeout=10)

    def run(statement: str) -> str:
        answer = http.post("/", params={"database": database}, content=statement)
        assert answer.status_code == 200, answer.text
        return answer.text

    def rows(query: str) -> list[tuple[object, ...]]:
        text = run(f"{query} FORMAT TSV")
        return [tuple(line.split("\t")) for line in text.splitlines()]

    http.post("/", content=f"CREATE DATABASE {database}").raise_for_status()
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_jobs.sql").write_text(CLICKHOUSE_FIRST)
    store = Store(
        name="clickhouse",
        environment={
            "SCHEMA_TARGET": "clickhouse",
            "SCHEMA_URL": local_stack.clickhouse_url,
            "SCHEMA_DATABASE": database,
            "SCHEMA_MIGRATIONS_DIR": str(tmp_path / "migrations"),
        },
        migrations=tmp_path / "migrations",
        run=run,
        rows=rows,
        columns_query=(
            f"SELECT name FROM system.columns WHERE database = '{database}' AND table = 'jobs'"
        ),
        add_column="ALTER TABLE jobs ADD COLUMN priority UInt8;\n",
        drift=(
            "ALTER TABLE jobs DROP COLUMN payload",
            "ALTER TABLE jobs ADD COLUMN note String",
            "ALTER TABLE jobs MODIFY COLUMN attempts UInt16",
        ),
        differences=[
            "jobs: column payload String missing",
            "jobs: column note String not in the migrations",
            "jobs: column attempts is UInt16, the migrations say UInt8",
        ],
    )
    yield store
    http.post("/", content=f"DROP DATABASE {database}").raise_for_status()
    http.close()


@pytest.fixture
def postgres_store(local_stack: StackSettings, tmp_path: Path) -> Iterator[Store]:
    settings = PostgresSettings()
    database = f"apply_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.conninfo(), autocommit=True) as server:
        server.execute(f"CREATE DATABASE {database}".encode())
    connection = psycopg.connect(
        settings.model_copy(update={"database": database}).conninfo(), autocommit=True
    )

    def run(statement: str) -> object:
        return connection.execute(statement.encode())

    def rows(query: str) -> list[tuple[object, ...]]:
        return connection.execute(query.encode()).fetchall()

    shutil.copytree(CONTRACTS / "postgres" / "migrations", tmp_path / "migrations")
    store = Store(
        name="postgres",
        environment={
            "SCHEMA_TARGET": "postgres",
            "SCHEMA_URL": f"postgresql://{settings.host}:{settings.port}/{database}",
            "SCHEMA_USER": settings.user,
            "SCHEMA_PASSWORD": settings.password.get_secret_value(),
            "SCHEMA_MIGRATIONS_DIR": str(tmp_path / "migrations"),
        },
        migrations=tmp_path / "migrations",
        run=run,
        rows=rows,
        columns_query=(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = 'jobs' ORDER BY ordinal_position"
        ),
        add_column="ALTER TABLE jobs ADD COLUMN priority integer;\n",
        drift=(
            "ALTER TABLE jobs DROP COLUMN finish_date",
            "ALTER TABLE jobs ADD COLUMN note text",
            "ALTER TABLE jobs ALTER COLUMN status TYPE varchar(10)",
        ),
        differences=[
            "jobs: column finish_date bigint missing",
            "jobs: column note text not in the migrations",
            "jobs: column status is character varying(10), the migrations say text",
        ],
    )
    yield store
    connection.close()
    with psycopg.connect(settings.conninfo(), autocommit=True) as server:
        server.execute(f"DROP DATABASE {database} WITH (FORCE)".encode())


@pytest.fixture(params=["clickhouse", "postgres"])
def store(request: pytest.FixtureRequest) -> Store:
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stdout.splitlines()


def test_a_fresh_store_gets_every_migration_and_their_record(store: Store) -> None:
    # As the operator's Job gets them: one bundle, from an environment variable.
    environment = {k: v for k, v in store.environment.items() if k != "SCHEMA_MIGRATIONS_DIR"}
    result = apply_command({**environment, "SCHEMA_STATEMENTS": bundle(store.migrations)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result)[-3:] == [
        "0001_jobs: applied and recorded",
        "jobs: as the migrations say",
        "done: 1 applied, 0 already in place",
    ]
    ((version, name, recorded),) = store.records()
    file_checksum = checksum((store.migrations / "0001_jobs.sql").read_text())
    assert (int(str(version)), name, recorded) == (1, "0001_jobs", file_checksum)


def test_a_second_run_applies_nothing(store: Store) -> None:
    assert store.apply().returncode == 0
    store.run("INSERT INTO jobs (id, status) VALUES ('a', 'create')")
    second = store.apply()
    assert second.returncode == 0, second.stdout
    assert lines(second)[1:] == [
        "0001_jobs: in place",
        "jobs: as the migrations say",
        "done: 0 applied, 1 already in place",
    ]
    assert len(store.records()) == 1
    ((count,),) = store.rows("SELECT count(*) FROM jobs")
    assert int(str(count)) == 1, "the second run must leave the table (and its rows) alone"


def test_a_new_migration_file_applies_only_itself(store: Store) -> None:
    assert store.apply().returncode == 0
    (store.migrations / "0002_priority.sql").write_text(store.add_column)
    result = store.apply()
    assert result.returncode == 0, result.stdout
    assert lines(result)[1:] == [
        "0001_jobs: in place",
        f"0002_priority [1/1] applied: {store.add_column.strip().rstrip(';')}",
        "0002_priority: applied and recorded",
        "jobs: as the migrations say",
        "done: 1 applied, 1 already in place",
    ]
    assert [str(row[1]) for row in store.records()] == ["0001_jobs", "0002_priority"]
    assert store.columns()[-1] == "priority"


def test_a_table_altered_by_hand_is_reported_drifted_with_what_differs(store: Store) -> None:
    assert store.apply().returncode == 0
    for statement in store.drift:
        store.run(statement)
    result = store.apply()
    assert result.returncode == 3, result.stdout
    assert [line for line in lines(result) if line.startswith("drift: ")] == [
        f"drift: {difference}" for difference in store.differences
    ]
    assert lines(result)[-1] == f"drifted: {'; '.join(store.differences)}"
    assert "as the migrations say" not in result.stdout


def test_a_changed_applied_migration_is_refused_and_nothing_runs(store: Store) -> None:
    assert store.apply().returncode == 0
    first = store.migrations / "0001_jobs.sql"
    first.write_text(first.read_text() + store.add_column)
    (store.migrations / "0002_later.sql").write_text(store.add_column.replace("priority", "later"))
    result = store.apply()
    assert result.returncode == 4, result.stdout
    assert lines(result)[-1].startswith(
        "refused: 0001_jobs changed since it was applied (checksum "
    )
    assert lines(result)[-1].endswith(
        "an applied migration must stay as it is; put the change in a new migration"
    )
    assert len(store.records()) == 1
    assert "priority" not in store.columns()
    assert "later" not in store.columns()


def test_a_failed_statement_stops_the_run_and_its_migration_is_not_recorded(
    store: Store,
) -> None:
    assert store.apply().returncode == 0
    (store.migrations / "0002_broken.sql").write_text(
        store.add_column + "ALTER TABLE nowhere ADD COLUMN x text;\n"
    )
    result = store.apply()
    assert result.returncode == 1, result.stdout
    assert "0002_broken [2/2] FAILED ALTER TABLE nowhere ADD COLUMN x text: " in result.stdout
    assert lines(result)[-1].startswith("failed: 0002_broken: statement 2 failed: ")
    assert len(store.records()) == 1
    if store.name == "postgres":
        # One transaction per migration: its first statement is undone with it.
        assert "priority" not in store.columns()
    else:
        # ClickHouse has no transactions: the first statement stays, and the migration, not
        # recorded, runs again from its first statement next time (see docs/operations.md).
        assert "priority" in store.columns()


def test_the_local_stack_records_the_charts_migrations(local_stack: StackSettings) -> None:
    """`make up` applies the files the chart carries (ClickHouse's adapted for 18.16), and
    records them with the checksums of those files."""
    for store in ("clickhouse", "postgres"):
        expected = [
            (path.stem, checksum(path.read_text()))
            for path in sorted((CONTRACTS / store / "migrations").glob("*.sql"))
        ]
        query = "SELECT name, checksum FROM schema_migrations ORDER BY version"
        if store == "clickhouse":
            text = httpx.post(local_stack.clickhouse_url, content=f"{query} FORMAT TSV").text
            recorded = [tuple(line.split("\t")) for line in text.splitlines()]
        else:
            with psycopg.connect(PostgresSettings().conninfo()) as connection:
                recorded = connection.execute(query.encode()).fetchall()
        assert recorded == expected, store


def test_a_target_that_never_answers_exits_2(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    result = apply_command(
        {
            "SCHEMA_TARGET": "clickhouse",
            "SCHEMA_URL": "http://127.0.0.1:9",
            "SCHEMA_MIGRATIONS_DIR": str(tmp_path),
            "SCHEMA_WAIT_TIMEOUT_S": "2",
        }
    )
    assert result.returncode == 2
    assert "target not ready: not ready after" in result.stdout
