"""What the scenarios compute from their samples: per-second series, sustained rate, memory."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from loadtest.tank import Shot, quantile

# A rate counts as sustained when it is held this long with under 1% errors.
SUSTAINED_WINDOW_S = 5
MAX_ERROR_RATIO = 0.01


@dataclass(frozen=True)
class PerSecond:
    """One second of a tank run, counted by when the answers came."""

    second: int  # from the run's first answer
    ok: int
    errors: int
    p50_ms: float
    p99_ms: float


def per_second(shots: list[Shot]) -> list[PerSecond]:
    if not shots:
        return []
    start = int(min(shot.answered_at for shot in shots))
    buckets: dict[int, list[Shot]] = defaultdict(list)
    for shot in shots:
        buckets[int(shot.answered_at) - start].append(shot)
    series = []
    for second in range(max(buckets) + 1):
        bucket = buckets.get(second, [])
        latencies = [shot.latency_ms for shot in bucket if shot.ok]
        series.append(
            PerSecond(
                second=second,
                ok=len(latencies),
                errors=len(bucket) - len(latencies),
                p50_ms=quantile(latencies, 0.5),
                p99_ms=quantile(latencies, 0.99),
            )
        )
    return series


def sustained_rps(shots: list[Shot], window_s: int = SUSTAINED_WINDOW_S) -> float:
    """The most successful answers per second over any ``window_s`` whole seconds with under
    1% errors. The first and last seconds are partial, so they are left out."""
    series = per_second(shots)[1:-1]
    best = 0.0
    for start in range(len(series) - window_s + 1):
        window = series[start : start + window_s]
        ok = sum(second.ok for second in window)
        errors = sum(second.errors for second in window)
        if ok and errors / (ok + errors) < MAX_ERROR_RATIO:
            best = max(best, ok / window_s)
    return round(best, 1)


def rss_mib(pid: int) -> float:
    """The process's resident set size now, in MiB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for process {pid}")
