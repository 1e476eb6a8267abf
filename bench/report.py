"""The benchmark's PNG report: rate and latency quantiles over time per scenario, the pipeline's
end-to-end latency histogram, processor scaling."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench.ingest import IngestResult
from bench.measures import PerSecond
from bench.pipeline import PipelineResult
from bench.processor import Throughput
from bench.seed import SeedResult


def _over_time(axes: Axes, title: str, runs: dict[str, list[PerSecond]]) -> None:
    """Answers per second (solid) and errors per second (dotted) on the left; p50 and p99
    latency (thin) on the right."""
    latency = axes.twinx()
    for label, series in runs.items():
        seconds = [point.second for point in series]
        line = axes.plot(seconds, [point.ok for point in series], label=f"{label} ok/s")[0]
        if any(point.errors for point in series):
            axes.plot(
                seconds,
                [point.errors for point in series],
                ":",
                color=line.get_color(),
                label=f"{label} errors/s",
            )
        for q, style in (("p50_ms", "--"), ("p99_ms", "-.")):
            latency.plot(
                seconds,
                [getattr(point, q) for point in series],
                style,
                linewidth=0.8,
                color=line.get_color(),
                label=f"{label} {q[:3]}",
            )
    axes.set_title(title, fontsize=9)
    axes.set_xlabel("s")
    axes.set_ylabel("answers/s")
    latency.set_ylabel("ms")
    latency.set_yscale("log")
    handles = axes.get_legend_handles_labels()
    more = latency.get_legend_handles_labels()
    axes.legend(handles[0] + more[0], handles[1] + more[1], fontsize=6, loc="upper left")


def draw(
    path: Path,
    ingest: list[IngestResult],
    pipeline: PipelineResult,
    seed: SeedResult,
    scaling: list[Throughput],
) -> None:
    figure, grid = plt.subplots(3, 2, figsize=(14, 13))
    _over_time(grid[0][0], "Ingest: step ramp", {r.target: r.ramp for r in ingest})
    _over_time(grid[0][1], "Ingest: constant 500 requests/s", {r.target: r.fixed for r in ingest})
    _over_time(grid[1][0], f"Pipeline load: {pipeline.schedule}", {"receiver": pipeline.load})
    histogram = grid[1][1]
    for label, values in (
        ("created → JobDone visible, minus sleep", pipeline.done_over_sleep_ms),
        ("created → row committed in PostgreSQL", pipeline.postgres_after_create_ms),
    ):
        if values:
            histogram.hist(values, bins=60, alpha=0.6, label=label)
    histogram.set_title("Pipeline end to end (ms)", fontsize=9)
    histogram.set_xlabel("ms")
    histogram.set_ylabel("jobs")
    histogram.legend(fontsize=7)
    _over_time(grid[2][0], f"Seed profile: {seed.schedule}", {"receiver": seed.load})
    bars = grid[2][1]
    bars.bar([str(run.instances) for run in scaling], [run.jobs_per_s for run in scaling])
    bars.set_title("Processor scaling: backlog, 100 ms sleeps", fontsize=9)
    bars.set_xlabel("instances")
    bars.set_ylabel("jobs/s")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
