"""skaffold.yaml, checked offline: every config and every profile against skaffold's published
schema (skaffold/v4beta14), the files it names, the images it builds against
jobflow/components.py, and the order of deployment."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from jsonschema import Draft7Validator
from local.config import REPO

from jobflow.components import IMAGES
from tests.kube.chart import PROFILES
from tests.kube.conftest import SHARED, require_shared_file, strimzi_version

# run by make chart-check too (tests/targets.mk)
pytestmark = pytest.mark.chart

SKAFFOLD = REPO / "skaffold.yaml"
# No package registry serves skaffold's schema (nor skaffold), so it comes from ../shared.
SCHEMA = SHARED / "skaffold-schema" / "v4beta14.json"
SCHEMA_ORIGIN = (
    "the JSON Schema skaffold publishes for skaffold/v4beta14, in skaffold's repository at "
    "docs-v2/content/en/schemas/v4beta14.json (release v2.24)"
)


def configs() -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c for c in yaml.safe_load_all(SKAFFOLD.read_text())}


def with_profiles(config: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """The config as skaffold resolves it with ``names`` active (profiles here only patch)."""
    resolved = copy.deepcopy(config)
    profiles = resolved.pop("profiles", [])
    for profile in profiles:
        if profile["name"] in names:
            assert set(profile) == {"name", "patches"}, "profiles only patch, so this is exact"
            resolved = jsonpatch.apply_patch(resolved, profile["patches"])
    return resolved


def profile_names() -> set[str]:
    return {p["name"] for c in configs().values() for p in c.get("profiles", [])}


PROFILE_SETS = [
    set(),
    {"lite"},
    {"loadtest"},
    {"lite", "loadtest"},
    {"kafka-auth"},
    {"lite", "kafka-auth"},
]


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    require_shared_file(SCHEMA, SCHEMA_ORIGIN)
    return Draft7Validator(json.loads(SCHEMA.read_text()))


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_a_missing_schema_fails_in_ci_and_is_skipped_elsewhere_naming_the_file_and_its_origin(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    missing = SCHEMA.with_name("missing.json")
    with pytest.raises(outcome) as raised:
        require_shared_file(missing, SCHEMA_ORIGIN)
    assert str(missing) in str(raised.value)
    assert "docs-v2/content/en/schemas/v4beta14.json" in str(raised.value)


def test_the_profiles_are_lite_loadtest_and_kafka_auth() -> None:
    assert profile_names() == {"lite", "loadtest", "kafka-auth"}
    assert [c["apiVersion"] for c in configs().values()] == ["skaffold/v4beta14"] * 4


@pytest.mark.parametrize("active", PROFILE_SETS, ids=lambda s: "+".join(sorted(s)) or "none")
def test_every_config_with_its_profiles_applied_is_valid(
    validator: Draft7Validator, active: set[str]
) -> None:
    for name, config in configs().items():
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(with_profiles(config, active))
        ]
        assert not errors, (name, errors)


def test_the_schema_rejects_a_misspelt_field(validator: Draft7Validator) -> None:
    config = copy.deepcopy(configs()["jobflow"])
    config["deploy"]["helm"]["releases"][0]["valueFiles"] = []
    assert not validator.is_valid(config)


@pytest.mark.parametrize("active", PROFILE_SETS, ids=lambda s: "+".join(sorted(s)) or "none")
def test_every_file_named_exists(active: set[str]) -> None:
    for config in configs().values():
        resolved = with_profiles(config, active)
        named = list(resolved.get("manifests", {}).get("rawYaml", []))
        for deployer in resolved.get("deploy", {}).values():
            for release in deployer.get("releases", []):
                named += release.get("valuesFiles", [])
                named += [release["chartPath"]] if "chartPath" in release else []
            for stage in deployer.get("hooks", {}).values():
                named += [hook["host"]["command"][0] for hook in stage]
        for artifact in resolved.get("build", {}).get("artifacts", []):
            named.append(str(Path(artifact.get("context", ".")) / artifact["docker"]["dockerfile"]))
        missing = [path for path in named if not (REPO / path).exists()]
        assert not missing


def test_each_profile_deploys_the_chart_with_its_tested_values_file() -> None:
    for active in PROFILE_SETS:
        (release,) = with_profiles(configs()["jobflow"], active)["deploy"]["helm"]["releases"]
        assert sorted(release["valuesFiles"]) == sorted(
            str(Path(PROFILES[name][1]).relative_to(REPO)) for name in active
        )
    platform = with_profiles(configs()["platform"], {"lite"})["manifests"]["rawYaml"]
    assert not any("ksqldb" in path for path in platform)
    assert any("ksqldb" in path for path in configs()["platform"]["manifests"]["rawYaml"])


def test_it_builds_each_image_of_jobflow_components_and_hands_it_to_the_chart() -> None:
    config = configs()["jobflow"]
    built = [
        (
            artifact["image"],
            str(Path(artifact.get("context", ".")) / artifact["docker"]["dockerfile"]),
            artifact["docker"].get("target"),
        )
        for artifact in config["build"]["artifacts"]
    ]
    assert built == [(f"jobflow-{i.name}", i.dockerfile, i.target) for i in IMAGES.values()]
    (release,) = config["deploy"]["helm"]["releases"]
    assert release["setValueTemplates"] == {
        f"image.overrides.{name}": f"{{{{.IMAGE_FULLY_QUALIFIED_jobflow_{name}}}}}"
        for name in IMAGES
    }


def deploy_order() -> list[str]:
    """Configs in an order skaffold may deploy them: each after everything it requires."""
    graph = {
        name: [n for r in c.get("requires", []) for n in r["configs"]]
        for name, c in configs().items()
    }
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"cycle: {path}"
        for required in graph[name]:
            visit(required, (*path, name))
        if name not in order:
            order.append(name)

    for name in graph:
        visit(name, ())
    return order


def test_everything_is_deployed_after_what_it_needs() -> None:
    order = deploy_order()
    # Strimzi's CRDs and the Prometheus Operator's (PodMonitor) before the platform's
    # manifests; Kafka and the ServiceMonitor kind before the chart.
    assert order.index("strimzi") < order.index("platform") < order.index("jobflow")
    assert order.index("monitoring") < order.index("platform")


def test_the_namespace_is_made_by_a_hook_before_strimzi_and_never_deleted() -> None:
    # The Strimzi chart makes RoleBindings in the namespaces it watches, so the namespace comes
    # first; as a manifest, `skaffold delete` would delete it with its volumes and Secrets.
    hooks = configs()["strimzi"]["deploy"]["helm"]["hooks"]["before"]
    assert [hook["host"]["command"] for hook in hooks] == [["k8s/ensure-secrets.sh", "jobflow"]]
    for config in configs().values():
        for path in config.get("manifests", {}).get("rawYaml", []):
            kinds = {d["kind"] for d in yaml.safe_load_all((REPO / path).read_text()) if d}
            assert "Namespace" not in kinds, path


def test_strimzi_is_the_release_whose_crds_the_chart_is_checked_against() -> None:
    (release,) = configs()["strimzi"]["deploy"]["helm"]["releases"]
    assert release["version"] == strimzi_version() == "1.2.0"
    namespace = yaml.safe_load((REPO / "k8s" / "namespace.yaml").read_text())["metadata"]["name"]
    assert release["setValues"] == {
        "watchNamespaces[0]": namespace,
        # The namespace enforces the restricted standard, which Strimzi's pods meet only with
        # its restricted provider.
        "extraEnvs[0].name": "STRIMZI_POD_SECURITY_PROVIDER_CLASS",
        "extraEnvs[0].value": "restricted",
    }
    (chart,) = configs()["jobflow"]["deploy"]["helm"]["releases"]
    assert chart["namespace"] == namespace
    assert configs()["platform"]["deploy"]["kubectl"]["defaultNamespace"] == namespace
