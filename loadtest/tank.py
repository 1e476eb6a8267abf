"""Run yandex-tank here, with the BFG generator and our keep-alive gun (loadtest/gun.py).

The chart's profiles (charts/jobflow/files/loadtest/seed.yaml, ramp.yaml) drive phantom, which
these machines cannot install. A local run takes the same schedule (and autostop criteria) from
a profile and hands it to BFG as files/loadtest/bfg.yaml configures it, as the chart's loadtest
Job does with loadtest.generator bfg, so the load and the generator each have one definition.
yandex-tank runs from its own environment (.venv-loadtest: `make loadtest-env`).

    python -m loadtest.tank seed [--url URL] [--schedule "const(25, 20s)"] [--instances N]

prints the run's summary: shots, errors, quantiles, acknowledged ids.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from local.config import CONTRACTS, REPO

PROFILES = CONTRACTS / "loadtest"
PROFILE_NAMES = ("seed", "ramp")
# BFG's configuration, which a profile's load is merged into.
BFG = PROFILES / "bfg.yaml"
# The request, in phantom's format.
AMMO = PROFILES / "ammo.txt"
TANK = REPO / ".venv-loadtest" / "bin" / "yandex-tank"
GUN = Path(__file__).resolve().parent / "gun.py"
RECEIVER_URL = "http://127.0.0.1:8001/api/v1/create/job"


@dataclass(frozen=True)
class Shot:
    """One request as BFG recorded it (a line of bfgout.log, phantom's phout columns)."""

    answered_at: float  # epoch seconds
    latency_ms: float
    net_code: int
    proto_code: int

    @property
    def ok(self) -> bool:
        return self.net_code == 0 and self.proto_code == 200


@dataclass(frozen=True)
class TankRun:
    schedule: str
    exit_code: int
    shots: list[Shot]
    acked_ids: list[str]
    artifacts: Path

    @property
    def errors(self) -> int:
        return sum(not shot.ok for shot in self.shots)

    def quantile_ms(self, q: float) -> float:
        """The q-quantile (0..1) of the successful shots' latency; nan without any."""
        return quantile([shot.latency_ms for shot in self.shots if shot.ok], q)

    def after(self, seconds: float) -> TankRun:
        """This run without the shots answered in its first ``seconds`` (a warm-up)."""
        if not self.shots:
            return self
        start = min(shot.answered_at for shot in self.shots) + seconds
        return dataclasses.replace(
            self, shots=[shot for shot in self.shots if shot.answered_at >= start]
        )

    def summary(self) -> dict[str, object]:
        return {
            "schedule": self.schedule,
            "exit_code": self.exit_code,
            "shots": len(self.shots),
            "errors": self.errors,
            "acked_ids": len(self.acked_ids),
            "p50_ms": round(self.quantile_ms(0.5), 2),
            "p99_ms": round(self.quantile_ms(0.99), 2),
            "artifacts": str(self.artifacts),
        }


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile: a latency some request really had."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def profile(name: str) -> dict[str, Any]:
    """A chart profile (seed, ramp) as yandex-tank reads it."""
    loaded: dict[str, Any] = yaml.safe_load((PROFILES / f"{name}.yaml").read_text())
    return loaded


def bfg_base() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(BFG.read_text())
    return loaded


# One instance is one process with one connection, waiting for each answer (bfg.yaml says why
# this many).
DEFAULT_INSTANCES = int(bfg_base()["bfg"]["instances"])


def bfg_profile(name: str) -> dict[str, Any]:
    """A profile for BFG: bfg.yaml with the profile's load_profile as bfg's and its autostop.
    The chart's loadtest Job runs this with loadtest.generator bfg (its template merges the
    same way), the target and paths given as options."""
    config = bfg_base()
    source = profile(name)
    config["bfg"]["load_profile"] = source["phantom"]["load_profile"]
    if "autostop" in source:
        config["autostop"] = source["autostop"]
    return config


def caseline_ammo(*bodies: bytes) -> bytes:
    """ammo.txt's request as BFG's caseline ammo, `case<TAB>body`: its case (the tag, which
    names the gun's method) and its own body (empty: the seed's curl sends none), or one line
    per body of ``bodies``, which BFG sends in turn, round and round."""
    header, request = AMMO.read_bytes().split(b"\n", 1)
    _, case = header.split(b" ", 1)
    for body in bodies:
        if b"\n" in body or b"\t" in body:
            raise ValueError("a caseline ammo body cannot hold a newline or a tab")
    own_body = request.split(b"\r\n\r\n", 1)[1]
    return b"".join(case + b"\t" + body + b"\n" for body in bodies or (own_body,))


def schedule_of(name: str) -> str:
    return str(profile(name)["phantom"]["load_profile"]["schedule"])


def const_rate(schedule: str) -> int:
    """A constant schedule's requests per second: `const(25, 300s)` → 25."""
    matched = re.fullmatch(r"\s*const\(\s*(\d+)\s*,\s*[^)]+\)\s*", schedule)
    if matched is None:
        raise ValueError(f"only a const(...) schedule has one rate, not {schedule!r}")
    return int(matched.group(1))


def shortened(schedule: str, seconds: int) -> str:
    """A constant schedule's rate for ``seconds`` instead: `const(25, 300s)` → `const(25, 20s)`."""
    return f"const({const_rate(schedule)}, {seconds}s)"


def autostop_of(name: str) -> list[str]:
    section = profile(name).get("autostop")
    if not isinstance(section, dict) or not section.get("enabled"):
        return []
    return list(section["autostop"])


def tank_config(
    *,
    workdir: Path,
    url: str,
    schedule: str,
    instances: int,
    autostop: list[str],
) -> dict[str, object]:
    """bfg.yaml with ``schedule`` (rps) and ``autostop``, aimed at ``url``, in ``workdir``."""
    config = bfg_base()
    config["core"] = {"artifacts_base_dir": str(workdir / "artifacts"), "lock_dir": str(workdir)}
    config["bfg"] |= {
        "instances": instances,
        "ammofile": str(workdir / "ammo.txt"),
        "load_profile": {"load_type": "rps", "schedule": schedule},
    }
    config["bfg"]["gun_config"] |= {
        "module_path": str(GUN),
        "target_url": url,
        "acked_ids_dir": str(workdir / "acked"),
    }
    config["autostop"] = {"enabled": bool(autostop), "autostop": autostop}
    return config


def run(
    schedule: str,
    *,
    url: str = RECEIVER_URL,
    bodies: Sequence[bytes] = (),
    instances: int = DEFAULT_INSTANCES,
    autostop: list[str] | None = None,
    workdir: Path | None = None,
) -> TankRun:
    """One yandex-tank run of ``schedule`` (rps) against ``url``, the requests' bodies taken
    in turn from ``bodies`` (by default ammo.txt's: none, as the seed's curl sends it)."""
    if not TANK.exists():
        raise FileNotFoundError(f"{TANK} is missing: run `make loadtest-env`")
    workdir = workdir or Path(tempfile.mkdtemp(prefix="tank-"))
    (workdir / "acked").mkdir(parents=True, exist_ok=True)
    (workdir / "ammo.txt").write_bytes(caseline_ammo(*bodies))
    config = workdir / "tank.yaml"
    config.write_text(
        yaml.safe_dump(
            tank_config(
                workdir=workdir,
                url=url,
                schedule=schedule,
                instances=instances,
                autostop=autostop or [],
            )
        )
    )
    with (workdir / "tank.log").open("wb") as log:
        finished = subprocess.run(  # noqa: S603
            [str(TANK), f"--config={config}"],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return TankRun(
        schedule=schedule,
        exit_code=finished.returncode,
        shots=read_shots(workdir),
        acked_ids=read_acked_ids(workdir / "acked"),
        artifacts=workdir,
    )


def read_shots(workdir: Path) -> list[Shot]:
    """Every shot in the run's bfgout.log (phout columns: answered at, tag, interval_real µs,
    connect, send, latency, receive, interval_event, size_out, size_in, net_code, proto_code)."""
    shots = []
    for log in sorted(workdir.glob("artifacts/*/bfgout.log")):
        for line in log.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) < 12:
                continue
            shots.append(
                Shot(
                    answered_at=float(fields[0]),
                    latency_ms=int(float(fields[2])) / 1000,
                    net_code=int(float(fields[10])),
                    proto_code=int(float(fields[11])),
                )
            )
    return shots


def read_acked_ids(directory: Path) -> list[str]:
    return [
        line
        for path in sorted(directory.glob("acked-*.ids"))
        for line in path.read_text().splitlines()
        if line
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.tank", description=__doc__)
    parser.add_argument("profile", choices=PROFILE_NAMES, help="chart profile to take from")
    parser.add_argument("--url", default=RECEIVER_URL)
    parser.add_argument("--schedule", help="instead of the profile's, e.g. 'const(25, 20s)'")
    parser.add_argument("--instances", type=int, default=DEFAULT_INSTANCES)
    arguments = parser.parse_args()
    result = run(
        arguments.schedule or schedule_of(arguments.profile),
        url=arguments.url,
        instances=arguments.instances,
        autostop=autostop_of(arguments.profile),
    )
    print(orjson.dumps(result.summary(), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
