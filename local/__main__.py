"""``python -m local {up,down,status,logs,clean}``: the pipeline on this machine."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys

from local import stack
from local.config import StackSettings


def print_status(settings: StackSettings) -> int:
    report = asyncio.run(stack.status(settings))
    healthy = True
    print(f"{'component':<11} {'state':<12} {'pid':>7}  {'endpoint':<40} health")
    for item in report:
        ok = item.state == "RUNNING" and item.problem is None
        healthy &= ok
        health = "ok" if ok else (item.problem or "-")
        print(f"{item.name:<11} {item.state:<12} {item.pid or '':>7}  {item.endpoint:<40} {health}")
    return 0 if healthy else 1


def show_logs(settings: StackSettings, name: str | None, follow: bool) -> int:
    logs = settings.path("logs")
    files = [logs / f"{name}.log"] if name else sorted(logs.glob("*.log"))
    command = ["tail", "-n", "40", *(["-F"] if follow else []), *map(str, files)]
    return subprocess.call(command)  # noqa: S603


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="install what is missing, start everything, wait until ready")
    commands.add_parser("down", help="stop everything the stack started; keep data")
    commands.add_parser("status", help="state and health of every component")
    logs = commands.add_parser("logs", help="the last lines of the logs")
    logs.add_argument("name", nargs="?", help="one component (default: all)")
    logs.add_argument("-f", "--follow", action="store_true")
    commands.add_parser("clean", help="stop everything and remove its data and logs")
    arguments = parser.parse_args(argv)
    settings = StackSettings()
    if arguments.command == "up":
        asyncio.run(stack.up(settings))
    elif arguments.command == "down":
        stack.down(settings)
    elif arguments.command == "status":
        return print_status(settings)
    elif arguments.command == "logs":
        return show_logs(settings, arguments.name, arguments.follow)
    elif arguments.command == "clean":
        stack.clean(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
