"""Apply a statement file to its target: wait until the target is ready, then each statement in
order, one line of output per statement, stopping at the first real failure."""

from __future__ import annotations

import time
from collections.abc import Callable

from tenacity import AsyncRetrying, stop_after_delay, wait_exponential

from jobflow.schema.targets import Target, TargetError


class NotReadyError(Exception):
    """The target did not become ready in time."""


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


async def apply_statements(
    target: Target, statements: list[str], report: Callable[[str], None]
) -> None:
    """Apply ``statements`` in order; raise TargetError naming the first that failed."""
    for number, statement in enumerate(statements, start=1):
        prefix = f"[{number}/{len(statements)}]"
        try:
            outcome = await target.apply(statement)
        except TargetError as exc:
            report(f"{prefix} FAILED {headline(statement)}: {exc}")
            raise TargetError(f"statement {number} failed: {exc}") from exc
        report(f"{prefix} {outcome}: {headline(statement)}")


async def apply(
    target: Target,
    statements: list[str],
    wait_s: float,
    report: Callable[[str], None],
) -> None:
    try:
        await wait_ready(target, wait_s, report)
        await apply_statements(target, statements, report)
    finally:
        await target.close()
