"""Progress lines of the local stack's commands."""

from __future__ import annotations

import sys


def step(what: str, detail: str) -> None:
    print(f"==> {what}: {detail}", file=sys.stderr, flush=True)


def warn(what: str, detail: str) -> None:
    print(f"!!! {what}: {detail}", file=sys.stderr, flush=True)
