"""Statement files: split into statements, with ``${name}`` placeholders filled in."""

from __future__ import annotations

import re
from collections.abc import Mapping
from string import Template

import sqlparse


def split_statements(text: str) -> list[str]:
    """The statements of ``text``, comments removed, without their terminating semicolon."""
    statements = []
    for statement in sqlparse.split(text):
        stripped = sqlparse.format(statement, strip_comments=True).strip().rstrip(";").strip()
        if stripped:
            statements.append(stripped)
    return statements


_CREATED = re.compile(r"\bIF NOT EXISTS\s+([\w.]+)", re.IGNORECASE)


def created_name(statement: str) -> str:
    """The name a ``CREATE ... IF NOT EXISTS <name>`` statement creates."""
    match = _CREATED.search(statement)
    if match is None:
        raise ValueError(f"not a CREATE ... IF NOT EXISTS statement: {statement[:60]!r}")
    return match.group(1)


def render(text: str, values: Mapping[str, str]) -> str:
    """Fill ``${name}`` placeholders; a placeholder without a value is an error."""
    try:
        return Template(text).substitute(values)
    except KeyError as exc:
        raise ValueError(f"no value for placeholder ${{{exc.args[0]}}}") from None
