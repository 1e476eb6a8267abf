"""Migrations offline: files and bundles, what runs and what is refused, and the model of the
tables the migrations leave, checked against current ClickHouse (chDB) for the chart's own.

The stores themselves: tests/stack/test_schema_apply.py (ClickHouse, PostgreSQL),
tests/unit/test_schema_apply_ksqldb.py (ksqlDB's documented protocol).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from local.config import CONTRACTS

from jobflow.schema.definitions import (
    ClickHouseModel,
    Column,
    Definition,
    KsqlDbModel,
    Model,
    ModelError,
    PostgresModel,
    differences,
    expected,
)
from jobflow.schema.migrations import (
    Applied,
    Migration,
    MigrationError,
    bundle,
    checksum,
    load_directory,
    parse_bundle,
    plan,
)
from jobflow.schema.targets import clickhouse_definitions

# run by make test-operator too (tests/targets.mk)
pytestmark = pytest.mark.operator

STORES = {"clickhouse": ClickHouseModel, "postgres": PostgresModel, "ksqldb": KsqlDbModel}
PARAMETERS = {"kafka_broker_list": "127.0.0.1:1"}


def migration(name: str, text: str = "SELECT 1") -> Migration:
    return Migration.parse(f"{name}.sql", text, {})


def applied(m: Migration, checksum_: str | None = None) -> Applied:
    return Applied(m.version, m.name, checksum_ or m.checksum)


# Files and bundles -----------------------------------------------------------------------------


def test_a_migration_is_known_by_its_number_and_its_text_without_blank_space_around() -> None:
    one = Migration.parse("0007_add_priority.sql", "\n-- why\nSELECT ${x};\n", {"x": "1"})
    assert (one.version, one.name, one.statements) == (7, "0007_add_priority", ("SELECT 1",))
    assert one.checksum == checksum("-- why\r\nSELECT ${x};")
    assert one.checksum != checksum("-- why, edited\nSELECT ${x};")


@pytest.mark.parametrize("name", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql", "0001.sql"])
def test_a_file_not_named_nnnn_name_sql_is_refused(name: str) -> None:
    with pytest.raises(MigrationError, match="not a migration's name"):
        Migration.parse(name, "SELECT 1", {})


def test_two_migrations_with_one_number_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match="0001_a and 0001_b have the same number"):
        load_directory(tmp_path, {})


@pytest.mark.parametrize("store", STORES)
def test_a_bundle_carries_each_file_with_its_checksum(store: str) -> None:
    folder = CONTRACTS / store / "migrations"
    assert parse_bundle(bundle(folder), PARAMETERS) == load_directory(folder, PARAMETERS)


def test_statements_outside_any_migration_are_refused() -> None:
    with pytest.raises(MigrationError, match="no migrations: each begins with a line"):
        parse_bundle("CREATE TABLE t (a String) ENGINE = Memory;", {})
    with pytest.raises(MigrationError, match="statements before the first"):
        parse_bundle("SELECT 1;\n-- migration: 0001_a.sql\nSELECT 2;\n", {})
    # Comments before the first marker are no statement.
    assert len(parse_bundle("-- a bundle\n-- migration: 0001_a.sql\nSELECT 2;\n", {})) == 1


# What runs --------------------------------------------------------------------------------------


def test_only_what_the_store_lacks_runs_in_order() -> None:
    first, second, third = (migration(f"000{n}_m") for n in (1, 2, 3))
    steps = plan([first, second, third], [applied(first)])
    assert (steps.in_place, steps.pending) == ([first], [second, third])
    assert plan([first, second], [applied(first), applied(second)]).pending == []


def test_an_applied_migration_whose_file_changed_is_refused() -> None:
    first = migration("0001_jobs", "CREATE TABLE jobs (id String) ENGINE = Memory")
    with pytest.raises(MigrationError, match=r"0001_jobs changed since it was applied"):
        plan([first], [applied(first, checksum("CREATE TABLE jobs (id UInt64) ENGINE = Memory"))])


def test_a_new_migration_numbered_before_an_applied_one_is_refused() -> None:
    first, second, third = (migration(f"000{n}_m") for n in (1, 2, 3))
    with pytest.raises(MigrationError, match="0002_m is numbered before 0003_m"):
        plan([first, second, third], [applied(first), applied(third)])


def test_a_store_ahead_of_its_migrations_is_refused() -> None:
    first, second = migration("0001_m"), migration("0002_m")
    with pytest.raises(MigrationError, match="the store has migration 0002_m applied"):
        plan([first], [applied(first), applied(second)])


# What the migrations leave ---------------------------------------------------------------------


def leaves(model: Model, *statements: str) -> dict[str, Definition]:
    return expected(model, statements)


@pytest.mark.parametrize("store", STORES)
def test_every_migration_of_the_chart_is_followed(store: str) -> None:
    migrations = load_directory(CONTRACTS / store / "migrations", PARAMETERS)
    tables = expected(STORES[store](), (s for m in migrations for s in m.statements))
    assert tables
    assert all(definition.columns for definition in tables.values())


def test_the_charts_clickhouse_tables_are_what_current_clickhouse_makes_of_them(
    tmp_path: Path,
) -> None:
    """The model's types, engines and keys are ClickHouse's own words: applied to ClickHouse
    26.9 (chDB), the canonical migrations leave tables without a single difference."""
    chdb_session = pytest.importorskip("chdb.session")
    session = chdb_session.Session(str(tmp_path))
    migrations = load_directory(CONTRACTS / "clickhouse" / "migrations", PARAMETERS)
    refusals = []
    for statement in (s for m in migrations for s in m.statements):
        try:
            session.query(statement)
        except Exception as exc:
            refusals.append(str(exc))
    # The Kafka table only: registered, its consumers fail to start (see test_clickhouse_ddl.py).
    assert all("Shutdown was called" in refusal for refusal in refusals), refusals

    def rows(query: str) -> list[dict[str, str]]:
        text = str(session.query(query, "JSONEachRow"))
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    wanted = expected(ClickHouseModel(), (s for m in migrations for s in m.statements))
    live = clickhouse_definitions(
        list(wanted),
        rows("SELECT name, engine, sorting_key FROM system.tables WHERE database = 'default'"),
        rows("SELECT table, name, type FROM system.columns WHERE database = 'default'"),
    )
    session.close()
    assert set(wanted) == {"jobs_kafka", "jobs", "jobs_mv", "jobs_errors", "jobs_errors_mv"}
    assert differences(wanted, live) == []


def test_clickhouse_alters_are_followed_column_by_column() -> None:
    tables = leaves(
        ClickHouseModel(),
        "CREATE TABLE t (a String, b Decimal(10,2) DEFAULT 1, INDEX i a TYPE minmax GRANULARITY 1)"
        " ENGINE = MergeTree ORDER BY tuple()",
        "ALTER TABLE t ADD COLUMN c UInt64 AFTER a, DROP COLUMN b",
        "ALTER TABLE t MODIFY COLUMN c UInt32, ADD COLUMN IF NOT EXISTS z String FIRST",
        "ALTER TABLE t RENAME COLUMN c TO d, MODIFY ORDER BY (a, d), MODIFY TTL now()",
        "RENAME TABLE t TO u",
        "INSERT INTO u (a) VALUES ('x')",
    )
    assert tables == {
        "u": Definition(
            "MergeTree",
            (Column("z", "String"), Column("a", "String"), Column("d", "UInt32")),
            "a, d",
        )
    }
    assert (
        leaves(
            ClickHouseModel(),
            *[s for s in ("CREATE TABLE v (a String) ENGINE = Memory", "DROP TABLE IF EXISTS v")],
        )
        == {}
    )


def test_postgres_types_are_written_as_format_type_prints_them() -> None:
    tables = leaves(
        PostgresModel(),
        'CREATE TABLE IF NOT EXISTS public."Jobs" (id int, t timestamptz NOT NULL, '
        "n numeric(10, 2), s varchar(36), CONSTRAINT pk PRIMARY KEY (id, t))",
        'ALTER TABLE "Jobs" ADD COLUMN x varchar(3)[], ALTER COLUMN n TYPE float8 USING n::float8',
        'ALTER TABLE "Jobs" DROP COLUMN t',
        'ALTER TABLE "Jobs" RENAME TO jobs2',
        "ALTER TABLE jobs2 ALTER COLUMN x SET NOT NULL, RENAME COLUMN id TO ident",
        "CREATE INDEX ON jobs2 (s)",
    )
    assert tables == {
        "jobs2": Definition(
            "table",
            (
                Column("ident", "integer"),
                Column("n", "double precision"),
                Column("s", "character varying(36)"),
                Column("x", "character varying(3)[]"),
            ),
            "",  # dropping a column of the primary key drops the key
        )
    }


def test_a_ksqldb_query_takes_its_columns_types_from_its_source() -> None:
    migrations = load_directory(CONTRACTS / "ksqldb" / "migrations", {})
    tables = expected(KsqlDbModel(), (s for m in migrations for s in m.statements))
    strings = tuple(
        Column(name, "STRING") for name in ("ID", "STATUS", "CREATE_DATE", "FINISH_DATE")
    )
    assert tables == {
        "JOBS_STREAM": Definition("STREAM", strings, "ID"),
        "JOBS_TABLE": Definition("TABLE", strings, "ID"),
    }
    counted = leaves(
        KsqlDbModel(),
        "CREATE STREAM s (k VARCHAR KEY, v INT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON')",
        "ALTER STREAM s ADD COLUMN w ARRAY<VARCHAR>",
        "CREATE TABLE c AS SELECT v, COUNT(*) AS n, LATEST_BY_OFFSET(w) AS w FROM s GROUP BY v",
    )
    assert counted["C"] == Definition(
        "TABLE", (Column("V", "INTEGER"), Column("N", "BIGINT"), Column("W", "ARRAY")), "V"
    )


@pytest.mark.parametrize(
    ("model", "statement"),
    [
        (ClickHouseModel, "ALTER TABLE t MODIFY SAMPLE BY a"),
        (PostgresModel, "ALTER TABLE t SET SCHEMA other"),
        (ClickHouseModel, "CREATE TABLE copy AS t"),
    ],
)
def test_a_change_the_model_cannot_follow_is_an_error_not_a_guess(
    model: type[Model], statement: str
) -> None:
    created = {
        ClickHouseModel: "CREATE TABLE t (a String) ENGINE = MergeTree ORDER BY a",
        PostgresModel: "CREATE TABLE t (a text)",
    }[model]
    with pytest.raises(ModelError, match="cannot follow"):
        leaves(model(), created, statement)


def test_each_difference_is_named() -> None:
    want = {
        "jobs": Definition(
            "ReplacingMergeTree",
            (Column("id", "String"), Column("status", "String"), Column("t", "DateTime")),
            "id, status",
        ),
        "gone": Definition("Memory", (), None),
    }
    live = {
        "jobs": Definition(
            "MergeTree",
            (
                Column("status", "LowCardinality(String)"),
                Column("id", "String"),
                Column("x", "UInt8"),
            ),
            "id",
        ),
        "gone": None,
    }
    assert differences(want, live) == [
        "jobs: is MergeTree, the migrations say ReplacingMergeTree",
        "jobs: column t DateTime missing",
        "jobs: column x UInt8 not in the migrations",
        "jobs: column status is LowCardinality(String), the migrations say String",
        "jobs: columns in the order status, id, the migrations say id, status",
        "jobs: key is (id), the migrations say (id, status)",
        "gone: missing",
    ]
    assert differences(want, {**live, "jobs": want["jobs"]}) == ["gone: missing"]
