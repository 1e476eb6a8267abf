"""``python -m jobflow COMMAND``: run one of jobflow's services, or one of its commands: ``smoke``
checks a running pipeline end to end with one job; ``topics`` and ``connector`` set up a Kafka
and a Kafka Connect that jobflow does not manage; ``dlq`` lists, shows and replays dead letters
(``python -m jobflow dlq --help``). jobflow/components.py lists them."""

from __future__ import annotations

import argparse
import sys

from jobflow.components import COMMANDS

# local/cluster and tests/cluster import these from here; jobflow.components is their home.
from jobflow.components import PIPELINE_SERVICES as PIPELINE_SERVICES
from jobflow.components import SERVICES as SERVICES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="jobflow", description=__doc__)
    parser.add_argument("service", choices=list(COMMANDS))
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the command's own (dlq)")
    parsed = parser.parse_args(argv)
    command = COMMANDS[parsed.service]
    if parsed.arguments and not command.takes_arguments:
        parser.error(f"{command.name} takes no arguments: its environment configures it")
    entry = command.entry_point()
    # A service returns when it has shut down; the other commands return their exit status.
    status = entry(parsed.arguments) if command.takes_arguments else entry()
    if status is not None:
        sys.exit(status)


if __name__ == "__main__":
    main()
