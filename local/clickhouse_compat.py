"""The canonical ClickHouse migrations, adapted for the ClickHouse 18.16 that Debian ships.

`charts/jobflow/files/clickhouse/migrations/` targets current ClickHouse (the chart runs 26.x).
The local stack runs Debian's 18.16, which lacks a few things: it applies each migration's
statements adapted (``adapt_migrations``), and records each migration with the checksum of its
file as written. Each adaptation is reported, never silent:

- Kafka engine settings 18.16 does not know (``kafka_skip_broken_messages``) are dropped; the
  local server's profile sets ``input_format_allow_errors_num`` instead (see users.xml).
- ``kafka_row_delimiter = '\\n'`` is added: 18.16 joins messages without a delimiter.
- The view's subquery, which leaves out rows whose timestamp does not parse (and, on current
  ClickHouse, messages that did not parse at all), is flattened to
  ``parseDateTimeBestEffortOrZero``: 18.16 cannot push Kafka rows through a subquery ("There is
  no query"), so such rows get timestamp 0 there instead of being left out.
- The dead-letter table ``jobs_errors`` and its view are left out: 18.16 has no
  ``kafka_handle_error_mode`` (no ``_error`` / ``_raw_message`` columns) and no TTL.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

from jobflow.schema.migrations import Migration

KAFKA_SETTINGS_18_16 = frozenset(
    {
        "kafka_broker_list",
        "kafka_topic_list",
        "kafka_group_name",
        "kafka_format",
        "kafka_row_delimiter",
        "kafka_schema",
        "kafka_num_consumers",
        "kafka_max_block_size",
    }
)
DEAD_LETTER_TABLE = "jobs_errors"
_KAFKA_ENGINE = re.compile(r"(ENGINE\s*=\s*Kafka\s+SETTINGS\s+)(.*)$", re.IGNORECASE | re.DOTALL)
_FILTERING_SUBQUERY = re.compile(
    r"assumeNotNull\((?P<parsed>\w+)\) AS (?P<alias>\w+)\s+"
    r"FROM \(\s*SELECT (?P<columns>.*?),\s*"
    r"parseDateTimeBestEffortOrNull\((?P<source>\w+)\) AS (?P=parsed)\s+"
    r"FROM (?P<table>\w+)\s*(?:WHERE length\(_error\) = 0\s*)?\)\s*"
    r"WHERE isNotNull\((?P=parsed)\)",
    re.DOTALL,
)
_SETTING = re.compile(r"\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|[^,]+?)\s*(?:,|$)", re.DOTALL)


def _adapt_kafka_settings(statement: str, report: Callable[[str], None]) -> str:
    match = _KAFKA_ENGINE.search(statement)
    if match is None:
        return statement
    kept = []
    for name, value in _SETTING.findall(match.group(2)):
        if name in KAFKA_SETTINGS_18_16:
            kept.append((name, value))
        else:
            report(
                f"18.16 adaptation: dropped Kafka setting {name} = {value} (unknown to 18.16; "
                "the local profile's input_format_allow_errors_num skips broken rows instead)"
            )
    if not any(name == "kafka_row_delimiter" for name, _ in kept):
        kept.append(("kafka_row_delimiter", r"'\n'"))
        report(r"18.16 adaptation: added kafka_row_delimiter = '\n' (18.16 joins messages)")
    settings = ",\n  ".join(f"{name} = {value}" for name, value in kept)
    return statement[: match.start(2)] + settings


def _flatten_timestamp_filter(statement: str, report: Callable[[str], None]) -> str:
    adapted, count = _FILTERING_SUBQUERY.subn(
        r"parseDateTimeBestEffortOrZero(\g<source>) AS \g<alias>\nFROM \g<table>", statement
    )
    if count:
        report(
            "18.16 adaptation: jobs_mv reads jobs_kafka directly; rows with an unparseable "
            "timestamp get timestamp 0 instead of being left out (18.16 cannot push Kafka rows "
            "through a subquery)"
        )
    return adapted


def _without_dead_letter_table(statements: list[str], report: Callable[[str], None]) -> list[str]:
    kept = [statement for statement in statements if DEAD_LETTER_TABLE not in statement]
    if len(kept) < len(statements):
        report(
            f"18.16 adaptation: left out {DEAD_LETTER_TABLE} and its view (18.16 has no "
            "kafka_handle_error_mode and no TTL; broken rows are skipped instead)"
        )
    return kept


def adapt_for_clickhouse_18(statements: list[str], report: Callable[[str], None]) -> list[str]:
    adapted = [
        _flatten_timestamp_filter(_adapt_kafka_settings(statement, report), report)
        for statement in statements
    ]
    return _without_dead_letter_table(adapted, report)


def adapt_migrations(migrations: list[Migration], report: Callable[[str], None]) -> list[Migration]:
    """Each migration with its statements adapted for 18.16; its checksum stays its file's."""
    return [
        replace(m, statements=tuple(adapt_for_clickhouse_18(list(m.statements), report)))
        for m in migrations
    ]
