"""Waiting for a condition in tests that talk to real servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout_s: float = 30.0, what: str = "") -> T:
    """The probe's first truthy value; fail after ``timeout_s`` saying ``what`` was awaited."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, what or f"not so after {timeout_s:.0f}s"
        time.sleep(0.2)


async def eventually_async(
    probe: Callable[[], Awaitable[T | None]], timeout_s: float = 30.0, what: str = ""
) -> T:
    """eventually() for a coroutine probe."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        assert time.monotonic() < deadline, what or f"not so after {timeout_s:.0f}s"
        await asyncio.sleep(0.2)
