"""Nanosecond UTC timestamps in the wire format of the pipeline.

The contract's dates look like ``2024-01-27T12:34:50.594423357Z``: RFC 3339 in UTC with up to
nine fractional digits, trailing zeros trimmed (Go's ``time.RFC3339Nano``, which is how the
original services marshalled ``time.Time``). Python's ``datetime`` stops at microseconds, so a
timestamp is kept as integer nanoseconds since the epoch and formatted here.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer, ValidationInfo, WithJsonSchema

NANOS_PER_SECOND = 1_000_000_000
_EPOCH = datetime(1970, 1, 1)
# Dates outside [1970, 10000) are not job dates; bounding them keeps formatting total.
MAX_EPOCH_NS = 253_402_300_800 * NANOS_PER_SECOND

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<time>\d{2}:\d{2}:\d{2})"
    r"(?:\.(?P<fraction>\d{1,9}))?"
    r"(?P<zone>[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)


def now_ns() -> int:
    """Wall-clock time in nanoseconds since the epoch."""
    return time.time_ns()


def format_rfc3339_nano(epoch_ns: int) -> str:
    """Format nanoseconds since the epoch as RFC 3339 UTC, trailing fractional zeros trimmed."""
    seconds, nanos = divmod(epoch_ns, NANOS_PER_SECOND)
    whole = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos == 0:
        return f"{whole}Z"
    return f"{whole}.{nanos:09d}".rstrip("0") + "Z"


def parse_rfc3339_nano(text: str) -> int:
    """Parse an RFC 3339 timestamp (any offset, up to nanoseconds) to nanoseconds since the epoch.

    Raises ValueError with the offending text when it is not RFC 3339.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    zone = match["zone"].upper()
    offset = timedelta(0)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    local = datetime.fromisoformat(f"{match['date']}T{match['time']}")
    seconds = (local - _EPOCH - offset) // timedelta(seconds=1)
    nanos = int((match["fraction"] or "0").ljust(9, "0"))
    return seconds * NANOS_PER_SECOND + nanos


def epoch_seconds(epoch_ns: int) -> int:
    """Whole seconds since the epoch, rounded down, as the Postgres contract stores dates."""
    return epoch_ns // NANOS_PER_SECOND


def _to_epoch_ns(value: object, info: ValidationInfo) -> object:
    if isinstance(value, str):
        return parse_rfc3339_nano(value)
    # On the wire a date is a string; integers are for code building models from now_ns().
    if info.mode == "json" or isinstance(value, bool):
        raise ValueError("a date must be an RFC 3339 string")
    return value


EpochNanos = Annotated[
    int,
    BeforeValidator(_to_epoch_ns),
    Field(ge=0, lt=MAX_EPOCH_NS),
    PlainSerializer(format_rfc3339_nano, return_type=str),
    WithJsonSchema(
        {"type": "string", "format": "date-time", "examples": ["2024-01-27T12:34:50.594423357Z"]}
    ),
]
"""A timestamp held as nanoseconds since the epoch, serialised as RFC 3339 with nanoseconds."""
