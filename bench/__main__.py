"""`make bench`: run the benchmarks against the local stack, write bench/results/<time>.json.

python -m bench [--jobs N]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import os
import platform

import orjson
from local import stack
from local.config import REPO, StackSettings

from bench.processor import TARGET_JOBS_PER_S, measure

RESULTS = REPO / "bench" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--jobs", type=int, default=30_000, help="backlog per measurement")
    arguments = parser.parse_args()

    settings = StackSettings()
    asyncio.run(stack.up(settings))
    bootstrap = settings.kafka_bootstrap
    # Side by side in one run: the same backlog with and without the 100 ms sleeps.
    slept = measure(bootstrap, arguments.jobs, 100)
    unslept = measure(bootstrap, arguments.jobs, 0)
    results = {
        "machine": {
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "processor_jobs_per_s_at_100ms_sleep": slept.jobs_per_s,
        "processor_jobs_per_s_at_0ms_sleep": unslept.jobs_per_s,
        "processor_100ms_vs_0ms": round(slept.jobs_per_s / unslept.jobs_per_s, 3),
        "processor_target_jobs_per_s": TARGET_JOBS_PER_S,
        "processor_target_met": slept.jobs_per_s >= TARGET_JOBS_PER_S,
        "lost_jobs": slept.lost + unslept.lost,
        "duplicated_jobs": slept.duplicated + unslept.duplicated,
        "runs": [dataclasses.asdict(slept), dataclasses.asdict(unslept)],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{stamp}.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    print(f"written to {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
