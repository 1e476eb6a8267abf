"""``python -m jobflow COMMAND``: run one of jobflow's services, or one of its commands: ``smoke``
checks a running pipeline end to end with one job; ``topics`` and ``connector`` set up a Kafka
and a Kafka Connect that jobflow does not manage. jobflow/components.py lists them."""

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
    command = COMMANDS[parser.parse_args(argv).service]
    # A service returns when it has shut down; topics and connector return their exit status.
    status = command.entry_point()()
    if status is not None:
        sys.exit(status)


if __name__ == "__main__":
    main()
