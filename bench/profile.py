"""Where an ingest target's CPU goes under load: py-spy samples it while the tank drives it.

python -m bench.profile [receiver|bare] [--rps 500] [--seconds 20]

Writes .local/profiles/<target>-<time>.svg (a flame graph) and prints the functions with the
most samples, on their own (self) and with what they call (total). The receiver runs on a
topic of its own, as in the ingest benchmark.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from loadtest import tank
from local.config import REPO, StackSettings
from tests.stack.processes import ServiceProcess

from bench.ingest import INSTANCES, bare_endpoint, receiver_on_own_topic

PROFILES = REPO / ".local" / "profiles"
TOP = 20


def sample(process: ServiceProcess, seconds: int, raw: Path, svg: Path) -> None:
    """py-spy on ``process`` for ``seconds``: collapsed stacks to ``raw``, a flame graph to
    ``svg`` (drawn from the same samples)."""
    py_spy = Path(sys.executable).parent / "py-spy"
    subprocess.run(  # noqa: S603
        [str(py_spy), "record", "--pid", str(process.process.pid), "--duration", str(seconds),
         "--rate", "200", "--format", "raw", "--output", str(raw), "--nonblocking", "--gil"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(  # noqa: S603
        [str(py_spy), "record", "--pid", str(process.process.pid), "--duration", "5",
         "--rate", "200", "--output", str(svg), "--nonblocking", "--gil"],
        check=True, capture_output=True,
    )  # fmt: skip


def top_functions(raw: Path) -> tuple[Counter[str], Counter[str], int]:
    """(self samples, total samples) by function, and all samples, from py-spy's raw output
    ("frame;frame;...;frame count" per line, outermost first)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        samples += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            total[frame] += int(count)
    return own, total, samples


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("target", choices=["receiver", "bare"], nargs="?", default="receiver")
    parser.add_argument("--rps", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=20)
    arguments = parser.parse_args()
    PROFILES.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    raw = PROFILES / f"{arguments.target}-{stamp}.txt"
    svg = raw.with_suffix(".svg")
    target = (
        receiver_on_own_topic(StackSettings().kafka_bootstrap)
        if arguments.target == "receiver"
        else bare_endpoint()
    )
    with target as process:
        url = f"{process.url}/api/v1/create/job"
        schedule = f"const({arguments.rps}, {arguments.seconds + 10}s)"
        load = threading.Thread(target=tank.run, args=(schedule,), kwargs={"url": url,
                                "instances": INSTANCES})  # fmt: skip
        load.start()
        sample(process, arguments.seconds, raw, svg)
        load.join()
    own, total, samples = top_functions(raw)
    print(f"{samples} samples of {arguments.target} at {arguments.rps} requests/s")
    for title, counts in (("self", own), ("total", total)):
        print(f"\n--- top {TOP} by {title} ---")
        for frame, count in counts.most_common(TOP):
            print(f"{100 * count / samples:5.1f}%  {frame}")
    print(f"\nflame graph: {svg.relative_to(REPO)}")


if __name__ == "__main__":
    main()
