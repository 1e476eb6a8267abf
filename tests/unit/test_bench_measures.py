"""What the benchmark computes from the tank's samples."""

from __future__ import annotations

from bench.measures import per_second, sustained_rps
from loadtest.tank import Shot

START = 1_800_000_000.0


def shots(per_second_ok: list[int], per_second_errors: list[int] | None = None) -> list[Shot]:
    """Shots answered evenly within each second, with the given counts."""
    errors = per_second_errors or [0] * len(per_second_ok)
    made = []
    for second, (ok, failed) in enumerate(zip(per_second_ok, errors, strict=True)):
        for n in range(ok + failed):
            made.append(
                Shot(
                    answered_at=START + second + n / (ok + failed + 1),
                    latency_ms=float(n + 1),
                    net_code=0,
                    proto_code=200 if n < ok else 503,
                )
            )
    return made


def test_per_second_counts_answers_and_errors_by_the_second_they_came() -> None:
    series = per_second(shots([3, 5], [0, 2]))
    assert [(s.second, s.ok, s.errors) for s in series] == [(0, 3, 0), (1, 5, 2)]
    assert series[1].p50_ms == 3.0
    assert series[1].p99_ms == 5.0


def test_the_sustained_rate_leaves_out_partial_seconds_and_windows_with_errors() -> None:
    # Seconds 1..5 hold 100/s cleanly; 6..10 reach 200/s but with 5% errors; the first and
    # last seconds (partial) are higher still and do not count.
    ok = [900, 100, 100, 100, 100, 100, 200, 200, 200, 200, 200, 900]
    errors = [0] * 6 + [10] * 5 + [0]
    assert sustained_rps(shots(ok, errors)) == 100.0


def test_a_rate_with_under_one_percent_errors_is_sustained() -> None:
    ok = [10] + [200] * 5 + [10]
    errors = [0] + [1] * 5 + [0]
    assert sustained_rps(shots(ok, errors)) == 200.0
