"""How the ingest benchmark tells a target's ceiling from the ramp's."""

from __future__ import annotations

import pytest
from bench.ingest import top_rate


@pytest.mark.parametrize(
    ("schedule", "rate"),
    [
        ("step(250, 3000, 250, 5s)", 3000),
        ("step(1500, 250, 250, 3s)", 1500),
        ("const(500, 35s)", 500),
        ("line(1, 100, 10s) const(100, 5s)", 100),
    ],
)
def test_the_top_rate_is_the_highest_any_part_of_the_schedule_asks_for(
    schedule: str, rate: int
) -> None:
    assert top_rate(schedule) == rate


def test_a_schedule_without_rates_is_refused() -> None:
    with pytest.raises(ValueError, match="no const, line or step"):
        top_rate("30s")
