"""The canonical ClickHouse DDL, adapted for the ClickHouse 18.16 that Debian ships.

`charts/jobflow/files/clickhouse/schema.sql` targets current ClickHouse (the chart runs 26.x).
The local stack runs Debian's 18.16, which lacks a few things; each adaptation is reported,
never silent:

- Kafka engine settings 18.16 does not know (``kafka_skip_broken_messages``) are dropped; the
  local server's profile sets ``input_format_allow_errors_num`` instead (see users.xml).
- ``kafka_row_delimiter = '\\n'`` is added: 18.16 joins messages without a delimiter.
- ``parseDateTimeBestEffortOrNull`` becomes ``parseDateTimeBestEffortOrZero``: 18.16 cannot
  insert the Nullable result into the view's DateTime column.
"""

from __future__ import annotations

import re
from collections.abc import Callable

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
_KAFKA_ENGINE = re.compile(r"(ENGINE\s*=\s*Kafka\s+SETTINGS\s+)(.*)$", re.IGNORECASE | re.DOTALL)
_SETTING = re.compile(r"\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|[^,]+?)\s*(?:,|$)", re.DOTALL)
_OR_NULL = re.compile(r"\bparseDateTimeBestEffortOrNull(\s*\()")


def _adapt_kafka_settings(statement: str, report: Callable[[str], None]) -> str:
    match = _KAFKA_ENGINE.search(statement)
    if match is None:
        return statement
    kept = []
    for name, value in _SETTING.findall(match.group(2)):
        if name in KAFKA_SETTINGS_18_16:
            kept.append((name, value))
        else:
            report(f"18.16 adaptation: dropped Kafka setting {name} = {value} (unknown to 18.16)")
    if not any(name == "kafka_row_delimiter" for name, _ in kept):
        kept.append(("kafka_row_delimiter", r"'\n'"))
        report(r"18.16 adaptation: added kafka_row_delimiter = '\n' (18.16 joins messages)")
    settings = ",\n  ".join(f"{name} = {value}" for name, value in kept)
    return statement[: match.start(2)] + settings


def _adapt_functions(statement: str, report: Callable[[str], None]) -> str:
    adapted, count = _OR_NULL.subn(r"parseDateTimeBestEffortOrZero\1", statement)
    if count:
        report(
            "18.16 adaptation: parseDateTimeBestEffortOrNull -> parseDateTimeBestEffortOrZero "
            "(18.16 cannot insert Nullable(DateTime) into DateTime)"
        )
    return adapted


def adapt_for_clickhouse_18(statements: list[str], report: Callable[[str], None]) -> list[str]:
    return [
        _adapt_functions(_adapt_kafka_settings(statement, report), report)
        for statement in statements
    ]
