"""Bring a store up to its migrations: wait until it is ready, apply in order the migrations it
has not recorded, one line of output per statement, then check that its tables are what the
migrations say they are."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from tenacity import AsyncRetrying, stop_after_delay, wait_exponential

from jobflow.schema.definitions import Definition, differences, expected
from jobflow.schema.migrations import Migration, plan
from jobflow.schema.targets import StatementError, Target, TargetError


class Exit(IntEnum):
    """How the apply command ends (its exit status; see ``python -m jobflow.schema``)."""

    DONE = 0
    FAILED = 1
    NOT_READY = 2
    DRIFTED = 3
    REFUSED = 4


class NotReadyError(Exception):
    """The target did not become ready in time."""


class DriftError(Exception):
    """The store's tables differ from what its migrations say."""

    def __init__(self, found: list[str]) -> None:
        super().__init__("; ".join(found))
        self.differences = found


async def wait_ready(target: Target, within_s: float, report: Callable[[str], None]) -> None:
    """Return once ``target`` is ready; back off between checks; give up after ``within_s``."""
    started = time.monotonic()
    reason: str | None = "not checked yet"
    async for attempt in AsyncRetrying(
        wait=wait_exponential(multiplier=0.5, max=10),
        stop=stop_after_delay(within_s),
        retry_error_callback=lambda _: None,
    ):
        with attempt:
            reason = await target.unready_reason()
            if reason is not None:
                report(f"waiting for the target: {reason}")
                raise NotReadyError(reason)
    if reason is not None:
        raise NotReadyError(f"not ready after {time.monotonic() - started:.0f}s: {reason}")


def headline(statement: str) -> str:
    """The statement's first line, enough to recognise it in a log."""
    return statement.strip().splitlines()[0].rstrip(" (")


async def apply_migration(
    target: Target, migration: Migration, report: Callable[[str], None]
) -> None:
    """Apply one migration; TargetError naming the migration and the statement that failed."""
    total = len(migration.statements)

    def statement_done(number: int, statement: str, outcome: str) -> None:
        report(f"{migration.name} [{number}/{total}] {outcome}: {headline(statement)}")

    try:
        await target.apply(migration, statement_done)
    except StatementError as exc:
        statement = migration.statements[exc.number - 1]
        report(
            f"{migration.name} [{exc.number}/{total}] FAILED {headline(statement)}: {exc.reason}"
        )
        raise TargetError(f"{migration.name}: {exc}") from exc
    report(f"{migration.name}: applied and recorded")


async def migrate(
    target: Target, migrations: list[Migration], report: Callable[[str], None]
) -> None:
    """Apply what is new, then compare the live definitions with the migrations'.

    MigrationError when the store's record and the migrations disagree (nothing is applied),
    ModelError when the migrations change a table in a way the check cannot follow (nothing is
    applied), TargetError when a statement fails, DriftError when the tables differ.
    """
    wanted: dict[str, Definition] = expected(
        target.model(), (statement for m in migrations for statement in m.statements)
    )
    steps = plan(migrations, await target.applied())
    for migration in steps.in_place:
        report(f"{migration.name}: in place")
    for migration in steps.pending:
        await apply_migration(target, migration, report)
    found = differences(wanted, await target.definitions(wanted))
    for difference in found:
        report(f"drift: {difference}")
    if found:
        raise DriftError(found)
    report(f"{', '.join(wanted) or 'no tables'}: as the migrations say")
    report(f"done: {len(steps.pending)} applied, {len(steps.in_place)} already in place")


async def apply(
    target: Target,
    migrations: list[Migration],
    wait_s: float,
    report: Callable[[str], None],
) -> None:
    """``migrate`` once the target is ready; the target is closed afterwards."""
    try:
        await wait_ready(target, wait_s, report)
        await migrate(target, migrations, report)
    finally:
        await target.close()
