"""The processor's job written with Quix Streams, the peer bench/quix.py measures ours beside.

.venv-quix/bin/python -m bench.quix_processor --broker HOST:PORT --input TOPIC --output TOPIC
    --group GROUP [--commit-interval SECONDS]

Reads each Job (JSON) of the input topic, sleeps its ``sleep`` ms, and writes its JobDone (JSON,
the same key) to the output topic, with Quix's exactly-once guarantee: outputs and input
offsets go in one Kafka transaction per checkpoint. Without --commit-interval, Quix's own
default holds. It runs in .venv-quix (`make quix-env`): quixstreams pins an older
confluent-kafka than the project, so nothing of jobflow is importable here, and the message
shape is written out by hand.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quixstreams import Application

# RFC 3339 in UTC with nanoseconds, the wire format of the pipeline's dates.
_WHOLE_SECONDS = "%Y-%m-%dT%H:%M:%S"


def wire_date(epoch_ns: int) -> str:
    """``epoch_ns`` as the pipeline writes dates: UTC, up to nine fraction digits, no trailing
    zeros."""
    seconds, nanos = divmod(epoch_ns, 1_000_000_000)
    whole = time.strftime(_WHOLE_SECONDS, time.gmtime(seconds))
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{whole}.{fraction}Z" if fraction else f"{whole}Z"


def work(job: dict[str, Any]) -> None:
    time.sleep(job["sleep"] / 1000)


def done(job: dict[str, Any]) -> dict[str, Any]:
    # create_date passes through as text: the reader compares it with the input's.
    return {
        "id": job["id"],
        "status": "finish",
        "create_date": job["create_date"],
        "finish_date": wire_date(time.time_ns()),
    }


def build(arguments: argparse.Namespace) -> Application:
    # Imported here, so that the project's environment, which cannot hold quixstreams, can
    # still test the message shape above.
    from quixstreams import Application

    interval = (
        {} if arguments.commit_interval is None else {"commit_interval": arguments.commit_interval}
    )
    app = Application(
        broker_address=arguments.broker,
        consumer_group=arguments.group,
        processing_guarantee="exactly-once",
        # A new group must start at the beginning of its topic: the backlog may already be
        # committed when the group's first offsets are looked up.
        auto_offset_reset="earliest",
        state_dir=arguments.state_dir,
        loglevel="WARNING",
        **interval,
    )
    jobs = app.topic(arguments.input, value_deserializer="json")
    finished = app.topic(arguments.output, value_serializer="json")
    sdf = app.dataframe(topic=jobs)
    sdf = sdf.update(work)
    sdf = sdf.apply(done)
    sdf.to_topic(finished)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quix_processor", description=__doc__)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--commit-interval", type=float, default=None, help="seconds")
    # The app keeps no state, but Quix makes its state folder all the same.
    parser.add_argument("--state-dir", type=Path, required=True)
    # Quix stops on SIGTERM after committing its last checkpoint.
    build(parser.parse_args()).run()


if __name__ == "__main__":
    main()
