"""The chart's yandex-tank profiles, and their BFG versions, pass yandex-tank's own validator
(yandextank 2.0.11 in the `loadtest` environment, which `make test` builds)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from loadtest import tank
from loadtest.tank import caseline_ammo
from local.config import CONTRACTS, REPO

TANK_PYTHON = REPO / ".venv-loadtest" / "bin" / "python"
# The profiles; files/loadtest/bfg.yaml is none, but what BFG adds to one.
PROFILES = sorted(
    path for path in (CONTRACTS / "loadtest").glob("*.yaml") if path.name != tank.BFG.name
)


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
    assert sorted(tank.PROFILE_NAMES) == [p.stem for p in PROFILES]


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


@pytest.mark.parametrize("name", tank.PROFILE_NAMES)
def test_the_bfg_profile_with_what_the_chart_gives_at_run_time_passes_the_validator(
    name: str, tmp_path: Path
) -> None:
    """The profile as the chart's loadtest Job runs it with loadtest.generator bfg
    (tests/kube/test_chart_operations.py checks that the chart renders this very config), with
    the Job's --option values."""
    config = tank.bfg_profile(name)
    config["bfg"]["gun_config"] |= {
        "target_url": "http://jobflow-receiver:8001/api/v1/create/job",
        "module_path": "/opt/jobflow/gun.py",
        "acked_ids_dir": "/results/acked",
    }
    config["bfg"]["ammofile"] = "/etc/tank/ammo.txt"
    config["core"] = {"artifacts_base_dir": "/results/artifacts", "lock_dir": "/tmp"}  # noqa: S108
    path = tmp_path / "tank.yaml"
    path.write_text(yaml.safe_dump(config))
    validated = validate(path)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert config["bfg"]["load_profile"] == tank.profile(name)["phantom"]["load_profile"]
    assert tank.autostop_of(name) == config.get("autostop", {}).get("autostop", [])


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
    assert tank.const_rate("const(25, 20s)") == 25
    with pytest.raises(ValueError, match="only a const"):
        tank.shortened("line(1, 2000, 300s)", 20)


def test_the_quantile_is_a_latency_some_request_had() -> None:
    latencies = [float(n) for n in range(1, 101)]
    assert tank.quantile(latencies, 0.5) == 50.0
    assert tank.quantile(latencies, 0.99) == 99.0
    assert tank.quantile(latencies, 1.0) == 100.0
    assert tank.quantile([7.0], 0.99) == 7.0


def test_caseline_ammo_has_one_line_per_body_each_with_the_seeds_case() -> None:
    assert caseline_ammo(b'{"sleep":100}', b'{"sleep":45000}') == (
        b'create_job\t{"sleep":100}\ncreate_job\t{"sleep":45000}\n'
    )


def test_caseline_ammo_refuses_a_body_that_would_break_its_line() -> None:
    with pytest.raises(ValueError, match="newline or a tab"):
        caseline_ammo(b'{"sleep":\n100}')
