"""Numbered migration files, and which of them a store still needs.

A store's migrations are the files ``NNNN_name.sql`` of its folder (for the chart's stores,
``charts/jobflow/files/<store>/migrations/``), applied in the order of their numbers, each once.
A migration already applied never changes: its checksum is recorded with it, and a file whose
checksum differs from the record is refused, as is a new file numbered before one already
applied. A change to a table is a new migration.

The files travel to the apply Job as one text, a *bundle*: each file's text after a line
``-- migration: <file name>`` (what the chart's ConfigMap holds; ``bundle`` writes the same).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from jobflow.schema.statements import render, split_statements

FILE_NAME = re.compile(r"^(?P<version>\d{4,})_(?P<title>[a-z0-9_]+)\.sql$")
MARKER = "-- migration: "
_MARKER_LINE = re.compile(rf"^{MARKER}(?P<file>\S+)[ \t]*$", re.MULTILINE)


class MigrationError(Exception):
    """Migrations that must not be applied as they are: a changed or missing applied one, one
    out of order, a malformed file name or bundle."""


def checksum(text: str) -> str:
    """SHA-256 of a migration's text, its line ends and its leading and trailing blank space
    aside (a file and its copy in a bundle or a ConfigMap have the same checksum)."""
    normalized = text.replace("\r\n", "\n").strip()
    return hashlib.sha256(normalized.encode()).hexdigest()


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # the file name without .sql: 0002_add_priority
    checksum: str  # of the file's text as written, placeholders unfilled
    statements: tuple[str, ...]  # the text's statements, placeholders filled

    @classmethod
    def parse(cls, file_name: str, text: str, parameters: Mapping[str, str]) -> Migration:
        match = FILE_NAME.match(file_name)
        if match is None:
            raise MigrationError(
                f"{file_name!r} is not a migration's name: NNNN_name.sql (digits, then lower-case "
                "letters, digits and underscores)"
            )
        return cls(
            version=int(match["version"]),
            name=file_name.removesuffix(".sql"),
            checksum=checksum(text),
            statements=tuple(split_statements(render(text, parameters))),
        )


def ordered(migrations: Iterable[Migration]) -> list[Migration]:
    """By version; two migrations with one number are refused."""
    by_version: dict[int, Migration] = {}
    for migration in migrations:
        other = by_version.setdefault(migration.version, migration)
        if other is not migration:
            raise MigrationError(f"{other.name} and {migration.name} have the same number")
    return [by_version[version] for version in sorted(by_version)]


def load_directory(folder: Path, parameters: Mapping[str, str]) -> list[Migration]:
    """The migrations of a folder's ``*.sql`` files."""
    paths = sorted(folder.glob("*.sql"))
    if not paths:
        raise MigrationError(f"no migrations in {folder}: NNNN_name.sql files")
    return ordered(Migration.parse(path.name, path.read_text(), parameters) for path in paths)


def bundle(folder: Path) -> str:
    """The folder's migrations as one text, as the chart's ConfigMap holds them."""
    return "".join(
        f"{MARKER}{path.name}\n{path.read_text().strip()}\n"
        for path in sorted(folder.glob("*.sql"))
    )


def parse_bundle(text: str, parameters: Mapping[str, str]) -> list[Migration]:
    """The migrations of a bundle; text before its first marker must hold no statement."""
    markers = list(_MARKER_LINE.finditer(text))
    if not markers:
        raise MigrationError(
            f"no migrations: each begins with a line '{MARKER}NNNN_name.sql' "
            "(charts/jobflow/files/README.md)"
        )
    if split_statements(text[: markers[0].start()]):
        raise MigrationError(f"statements before the first '{MARKER}' line belong to no migration")
    ends = [marker.start() for marker in markers[1:]] + [len(text)]
    return ordered(
        Migration.parse(marker["file"], text[marker.end() : end], parameters)
        for marker, end in zip(markers, ends, strict=True)
    )


@dataclass(frozen=True)
class Applied:
    """A migration as the store records it."""

    version: int
    name: str
    checksum: str


@dataclass(frozen=True)
class Plan:
    in_place: list[Migration]
    pending: list[Migration]


def plan(migrations: list[Migration], applied: Iterable[Applied]) -> Plan:
    """Which migrations are in place and which are to run, in order; MigrationError when the
    store's record and the migrations disagree."""
    by_version = {migration.version: migration for migration in migrations}
    records = sorted(applied, key=lambda record: record.version)
    for record in records:
        migration = by_version.get(record.version)
        if migration is None:
            raise MigrationError(
                f"the store has migration {record.name} applied, which these migrations lack: "
                "they are older than the store's schema"
            )
        if migration.checksum != record.checksum:
            raise MigrationError(
                f"{migration.name} changed since it was applied (checksum "
                f"{record.checksum[:12]} applied, {migration.checksum[:12]} now): an applied "
                "migration must stay as it is; put the change in a new migration"
            )
    done = {record.version for record in records}
    pending = [migration for migration in migrations if migration.version not in done]
    if records and pending and pending[0].version < records[-1].version:
        raise MigrationError(
            f"{pending[0].name} is numbered before {records[-1].name}, which is applied: number "
            "a new migration after the last one"
        )
    return Plan([by_version[version] for version in sorted(done)], pending)
