"""The Makefile's test targets, as tests/targets.mk defines them: `make test` runs every test file;
each target names folders that exist and markers that tests in those folders carry; each folder
needs what its tests use; and make runs each target as the data says, with those needs first."""

from __future__ import annotations

import re
import subprocess
import tomllib
from functools import cache
from pathlib import Path

import pytest
from local.config import REPO

TESTS = REPO / "tests"
TARGETS = TESTS / "targets.mk"
ASSIGNMENT = re.compile(r"([A-Za-z][\w-]*) :=(.*)")
ENVIRONMENT = ".venv/.synced"

# What in a test module's text shows that it uses one of the needs. This file is left out of the
# search: it names them all.
USES = {
    "loadtest-env": re.compile(r"\.venv-loadtest|\bloadtest import tank\b|\bloadtest\.tank\b"),
    "checkov-env": re.compile(r"\.venv-checkov"),
    "kube-tools": re.compile(r"\btests\.kube\b"),
    "strimzi-crds": re.compile(r"\bstrimzi_crd"),
    "go-receiver": re.compile(r"\bgo_receiver\b"),
}


@cache
def data() -> dict[str, str]:
    values = {}
    for number, line in enumerate(TARGETS.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = ASSIGNMENT.fullmatch(line)
        assert match, (
            f"tests/targets.mk:{number}: only `NAME := words` lines, so that this reads it"
        )
        values[match[1]] = match[2].strip()
    return values


def targets() -> list[str]:
    return [name.removeprefix("FOLDERS_") for name in data() if name.startswith("FOLDERS_")]


def folders(target: str) -> list[str]:
    return data()[f"FOLDERS_{target}"].split()


def needs(target: str) -> set[str]:
    return {need for folder in folders(target) for need in data()[f"NEEDS_{folder}"].split()}


def folder_of(path: Path) -> str:
    return path.relative_to(TESTS).parts[0]


def declared_markers() -> set[str]:
    pytest_options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
    return {line.split(":")[0] for line in pytest_options["ini_options"]["markers"]}


def modules() -> list[Path]:
    """Every Python file of the test folders (helpers and conftests too), but this one."""
    return [
        path
        for path in sorted(TESTS.glob("*/**/*.py"))
        if path.resolve() != Path(__file__).resolve()
    ]


def test_make_test_runs_every_folder_that_holds_tests_whole() -> None:
    # Every test file the repository has, tracked or new: all under tests/, all in a folder.
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*test_*.py"],  # noqa: S607
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    paths = [REPO / name for name in listed if Path(name).name.startswith("test_")]
    assert paths
    assert all(
        path.is_relative_to(TESTS) and len(path.relative_to(TESTS).parts) > 1 for path in paths
    )
    assert set(folders("test")) == {folder_of(path) for path in paths}, (
        "tests/targets.mk: FOLDERS_test must name every folder of tests, and a new folder its NEEDS"
    )
    assert "MARKER_test" not in data()


@pytest.mark.parametrize("target", targets())
def test_each_target_selects_folders_that_exist_and_markers_that_their_tests_carry(
    target: str,
) -> None:
    for folder in folders(target):
        assert (TESTS / folder).is_dir(), f"{target}: no folder tests/{folder}"
        assert f"NEEDS_{folder}" in data(), f"tests/targets.mk: no NEEDS_{folder}"
    expression = data().get(f"MARKER_{target}")
    if expression is None:
        return
    names = set(re.findall(r"[\w-]+", expression)) - {"and", "or", "not"}
    assert names <= declared_markers(), f"{target}: undeclared markers (pyproject.toml)"
    for name in names:
        if name in folders("test"):  # a folder's name, which marks everything in that folder
            assert name in folders(target), f"{target} selects {name} but not tests/{name}"
            continue
        carriers = [path for path in modules() if f"pytest.mark.{name}" in path.read_text()]
        assert carriers, f"{target}: no test carries the marker {name}"
        unselected = [path for path in carriers if folder_of(path) not in folders(target)]
        assert not unselected, f"{target} never runs these, marked {name}: {unselected}"


def test_each_folder_needs_what_its_tests_use() -> None:
    missing = [
        f"{path.relative_to(REPO)} uses {need}: add it to NEEDS_{folder_of(path)}"
        for path in modules()
        for need, pattern in USES.items()
        if pattern.search(path.read_text())
        and need not in data().get(f"NEEDS_{folder_of(path)}", "").split()
    ]
    assert not missing


def make(*arguments: str) -> str:
    run = subprocess.run(  # noqa: S603 - the repository's own Makefile
        ["make", "--no-print-directory", *arguments],  # noqa: S607
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    return run.stdout


def prerequisites(target: str) -> set[str]:
    """The target's prerequisites as make reads them (its database: -p; nothing run: -q)."""
    rule = re.search(rf"^{re.escape(target)}: (.*)$", make("-pRrq", "help"), re.MULTILINE)
    assert rule, f"no rule for {target} in the Makefile"
    return set(rule[1].split())


@pytest.mark.parametrize("target", targets())
def test_make_runs_each_target_as_the_data_says_after_what_its_folders_need(target: str) -> None:
    assert {ENVIRONMENT, *needs(target)} <= prerequisites(target)
    # The commands make would run (-n: nothing run).
    arguments = " ".join(f"tests/{folder}" for folder in folders(target))
    if expression := data().get(f"MARKER_{target}"):
        arguments += f" -m '{expression}'"
    runs = [line for line in make("-n", target).splitlines() if " pytest " in f"{line} "]
    assert runs, f"make {target} runs no pytest"
    assert runs[-1].endswith(f"pytest {arguments}")


def test_the_targets_on_the_local_stack_that_run_no_tests_start_from_a_fresh_checkout_too() -> None:
    # bench drives yandex-tank (loadtest/tank.py) and measures the Go receiver; the dashboard is
    # drawn from the running stack.
    assert {ENVIRONMENT, "loadtest-env", "go-receiver"} <= prerequisites("bench")
    assert "up" in prerequisites("dashboards")
