"""The chart's yandex-tank profiles pass yandex-tank's own validator (yandextank 2.0.11 in the
`loadtest` environment, which `make test` builds)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from loadtest import tank
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


@pytest.mark.parametrize("name", ["seed", "ramp"])
def test_the_local_bfg_config_from_a_profile_passes_the_validator(
    name: str, tmp_path: Path
) -> None:
    config = tank.tank_config(
        workdir=tmp_path,
        url="http://127.0.0.1:8001/api/v1/create/job",
        schedule=tank.schedule_of(name),
        instances=tank.DEFAULT_INSTANCES,
        autostop=tank.autostop_of(name),
    )
    path = tmp_path / "tank.yaml"
    path.write_text(yaml.safe_dump(config))
    validated = validate(path)
    assert validated.returncode == 0, validated.stdout + validated.stderr


def test_the_local_run_takes_the_profiles_schedule_and_autostop() -> None:
    assert tank.schedule_of("seed") == "const(25, 300s)"
    assert tank.autostop_of("seed") == []
    assert tank.schedule_of("ramp") == "line(1, 2000, 300s)"
    assert tank.autostop_of("ramp") == [
        "http(5xx,1%,10s)",
        "net(xx,1%,10s)",
        "quantile(95,100ms,10s)",
    ]


def test_a_constant_schedule_is_shortened_at_the_same_rate() -> None:
    assert tank.shortened("const(25, 300s)", 20) == "const(25, 20s)"
    with pytest.raises(ValueError, match="only a const"):
        tank.shortened("line(1, 2000, 300s)", 20)


def test_the_quantile_is_a_latency_some_request_had() -> None:
    latencies = [float(n) for n in range(1, 101)]
    assert tank.quantile(latencies, 0.5) == 50.0
    assert tank.quantile(latencies, 0.99) == 99.0
    assert tank.quantile(latencies, 1.0) == 100.0
    assert tank.quantile([7.0], 0.99) == 7.0
