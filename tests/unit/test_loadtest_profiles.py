"""The chart's yandex-tank profiles pass yandex-tank's own validator (yandextank 2.0.11 in the
`loadtest` environment, which `make test` builds)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from local.config import CONTRACTS, REPO

TANK_PYTHON = REPO / ".venv-loadtest" / "bin" / "python"
PROFILES = sorted((CONTRACTS / "loadtest").glob("*.yaml"))


def validate(*configs: Path) -> subprocess.CompletedProcess[str]:
    assert TANK_PYTHON.exists(), "the loadtest environment is missing: run `make loadtest-env`"
    return subprocess.run(  # noqa: S603 - our own script in our own environment
        [str(TANK_PYTHON), str(REPO / "loadtest" / "validate.py"), *map(str, configs)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_there_are_the_seed_and_ramp_profiles() -> None:
    assert [p.name for p in PROFILES] == ["ramp.yaml", "seed.yaml"]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_the_profile_passes_yandex_tanks_validator(profile: Path) -> None:
    validated = validate(profile)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert validated.stdout.strip() == f"{profile}: valid"


def test_an_option_yandex_tank_does_not_know_is_rejected(tmp_path: Path) -> None:
    seed = (CONTRACTS / "loadtest" / "seed.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(seed.replace("  timeout: 10s", "  timeout: 10s\n  no_such_option: 1"))
    validated = validate(bad)
    assert validated.returncode == 1
    assert "'no_such_option': ['unknown field']" in validated.stdout
