"""The chart with a Kafka and a Kafka Connect it does not manage (kafka.strimzi.enabled false,
connect.external.url; profiles/external-kafka.yaml): no Strimzi object, the topics and connector
hook Jobs, and what it refuses. Rendered offline; the profile's strict dry-run, Pod Security,
checkov and NetworkPolicy flows are checked with every other profile's (test_chart.py,
test_pod_security.py, test_checkov.py, test_network_policies.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from local.config import CONTRACTS
from pydantic_settings import BaseSettings

from jobflow.connector import ConnectorSettings
from jobflow.core.settings import KafkaSettings, PostgresSettings
from jobflow.topics import TopicsSettings
from tests.kube.chart import CHART, PROFILES, helm, kinds, render

# run by make chart-check too (tests/targets.mk)
pytestmark = pytest.mark.chart

EXTERNAL = PROFILES["external-kafka"]
CONNECT_PEERS = '[{"ipBlock": {"cidr": "198.51.100.20/32"}}]'
# Strimzi's Kafka, a Kafka Connect of the user's own.
EXTERNAL_CONNECT = (
    "--set", "connect.external.url=http://connect.kafka:8083",
    "--set-json", f"networkPolicy.peers.connect={CONNECT_PEERS}",
)  # fmt: skip


def variables(*settings: type[BaseSettings]) -> set[str]:
    return {
        f"{s.model_config.get('env_prefix', '')}{name}".upper()
        for s in settings
        for name in s.model_fields
    }


def required(settings: type[BaseSettings]) -> set[str]:
    prefix = str(settings.model_config.get("env_prefix", ""))
    return {f"{prefix}{n}".upper() for n, f in settings.model_fields.items() if f.is_required()}


def hook(manifest: dict[str, Any]) -> tuple[set[str], int, set[str]]:
    """The hook events, weight and delete policies of a hook object."""
    annotations = manifest["metadata"]["annotations"]
    return (
        set(annotations["helm.sh/hook"].split(",")),
        int(annotations["helm.sh/hook-weight"]),
        set(annotations["helm.sh/hook-delete-policy"].split(",")),
    )


def container_of(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return dict(container)


def env_of(job: dict[str, Any]) -> dict[str, str]:
    return {variable["name"]: variable["value"] for variable in container_of(job)["env"]}


def mounted(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each mount path of the Job's container, with the volume mounted there."""
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in container_of(job)["volumeMounts"]}


# The contract file each command reads, as the chart finds it under files/.
CONTRACT_FILES = {"topics": "topics.yaml", "connector": "connect/postgres-connector.json"}


def command_job(
    objects: list[dict[str, Any]],
    command: str,
    settings: tuple[type[BaseSettings], ...],
    file_variable: str,
) -> dict[str, str]:
    """Check the hook Job that runs ``python -m jobflow <command>``, and return its variables:
    it runs the operator's image, is told only settings the command reads (``settings``, the
    first its own) and every one the command requires, and finds its contract file, byte for
    byte, at ``file_variable``, mounted from the ConfigMap named like the Job."""
    job = kinds(objects, "Job")[f"jobflow-{command}"]
    container = container_of(job)
    assert container["command"] == ["python", "-m", "jobflow", command]
    assert container["image"] == "jobflow-operator:0.1.0"
    env = env_of(job)
    assert set(env) <= variables(*settings)
    assert required(settings[0]) <= set(env)
    file = Path(env[file_variable])
    assert mounted(job)[str(file.parent)]["configMap"]["name"] == f"jobflow-{command}"
    config_map = kinds(objects, "ConfigMap")[f"jobflow-{command}"]
    assert config_map["data"] == {file.name: (CONTRACTS / CONTRACT_FILES[command]).read_text()}
    return env


def test_without_strimzi_no_strimzi_object_is_rendered() -> None:
    def strimzi_objects(objects: list[dict[str, Any]]) -> list[str]:
        return [o["kind"] for o in objects if o["apiVersion"].startswith("kafka.strimzi.io/")]

    assert {"KafkaTopic", "KafkaConnect", "KafkaConnector"} <= set(strimzi_objects(render()))
    assert strimzi_objects(render(*EXTERNAL)) == []
    assert strimzi_objects(render(*PROFILES["lite"], *EXTERNAL)) == []
    # Nor does the chart's Kafka Connect leave a policy or a Role behind.
    objects = render(*EXTERNAL)
    assert "jobflow-connect" not in kinds(objects, "NetworkPolicy")
    assert not [name for name in kinds(objects, "Role") if name.startswith("jobflow-connect")]


def test_with_strimzis_kafka_a_connect_of_ones_own_replaces_only_the_kafka_connect() -> None:
    objects = render(*EXTERNAL_CONNECT)
    assert kinds(objects, "KafkaTopic")
    assert not kinds(objects, "KafkaConnect")
    assert not kinds(objects, "KafkaConnector")
    assert set(kinds(objects, "Job")) == {"jobflow-connector"}
    assert env_of(kinds(objects, "Job")["jobflow-connector"])["CONNECTOR_URL"] == (
        "http://connect.kafka:8083"
    )


def test_the_topics_job_creates_the_contract_files_topics_before_each_install_and_upgrade(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = render(*EXTERNAL)
    job = kinds(objects, "Job")["jobflow-topics"]
    config_map = kinds(objects, "ConfigMap")["jobflow-topics"]
    policy = kinds(objects, "NetworkPolicy")["jobflow-topics"]
    # The release's own objects come after the pre-install hooks: what the Job needs is a hook
    # too, made before it. A hook outlives an uninstall unless deleted when it succeeds; a
    # failed one is kept, with its log, until the next run replaces it.
    for manifest in (config_map, policy, job):
        events, _, deletion = hook(manifest)
        assert events == {"pre-install", "pre-upgrade"}
        assert deletion == {"before-hook-creation", "hook-succeeded"}
    assert hook(config_map)[1] < hook(policy)[1] < hook(job)[1]

    env = command_job(objects, "topics", (TopicsSettings, KafkaSettings), "TOPICS_FILE")
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "192.0.2.10:9092"
    assert env["TOPICS_REPLICATION_FACTOR"] == "-1"
    # The command reads these settings, and gives up before the Job's own deadline.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = TopicsSettings()
    assert (settings.replication_factor, settings.timeout_s) == (-1, 120)
    assert job["spec"]["activeDeadlineSeconds"] > settings.timeout_s
    assert job["spec"]["backoffLimit"] == 0


def test_the_connector_job_registers_the_contract_connector_after_each_install_and_upgrade(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = render(*EXTERNAL)
    job = kinds(objects, "Job")["jobflow-connector"]
    assert hook(job) == (
        {"post-install", "post-upgrade"},
        0,
        {"before-hook-creation", "hook-succeeded"},
    )
    # After the install, the release's objects exist: its ConfigMap is one of them.
    config_map = kinds(objects, "ConfigMap")["jobflow-connector"]
    assert "helm.sh/hook" not in config_map["metadata"].get("annotations", {})

    env = command_job(
        objects, "connector", (ConnectorSettings, PostgresSettings), "CONNECTOR_CONFIG_FILE"
    )
    assert env["CONNECTOR_URL"] == "http://192.0.2.20:8083"
    # The credentials are files of the mounted Secret, never variables.
    for variable in ("POSTGRES_USER_FILE", "POSTGRES_PASSWORD_FILE"):
        secret = mounted(job)[str(Path(env[variable]).parent)]["secret"]
        assert secret["secretName"] == "jobflow-postgres"
    assert not {"POSTGRES_USER", "POSTGRES_PASSWORD"} & set(env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    timeout_s = ConnectorSettings().timeout_s
    assert timeout_s == 180
    assert job["spec"]["activeDeadlineSeconds"] > timeout_s


@pytest.mark.parametrize(
    "postgres",
    [
        (),
        ("--set", "postgres.enabled=false", "--set", "postgres.host=db.example",
         "--set", "postgres.port=6432", "--set", "postgres.database=jobs"),
    ],
    ids=["release", "external"],
)  # fmt: skip
def test_the_connector_job_gives_connect_the_jdbc_url_the_kafka_connector_gets(
    postgres: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    (connector,) = kinds(render(*postgres), "KafkaConnector").values()
    job = kinds(render(*EXTERNAL, *postgres), "Job")["jobflow-connector"]
    for name, value in env_of(job).items():
        # The credentials' files are the Secret's, in the pod only.
        if not name.endswith("_FILE"):
            monkeypatch.setenv(name, value)
    assert PostgresSettings().jdbc_url() == connector["spec"]["config"]["connection.url"]


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (
            ("--set", "kafka.strimzi.enabled=false", "--set", "networkPolicy.enabled=false"),
            "kafka.strimzi.enabled false needs connect.external.url",
        ),
        ((*EXTERNAL, "--set", "kafkaAuth.enabled=true"), "kafkaAuth needs kafka.strimzi.enabled"),
        (
            (*EXTERNAL_CONNECT, "--set", "kafkaAuth.enabled=true"),
            "kafkaAuth needs the chart's own Kafka Connect",
        ),
        (
            (*EXTERNAL, "--set-json", "networkPolicy.peers.kafka=[]"),
            "kafka.strimzi.enabled false needs networkPolicy.peers.kafka",
        ),
        (
            (*EXTERNAL, "--set-json", "networkPolicy.peers.connect=[]"),
            "connect.external.url needs networkPolicy.peers.connect",
        ),
        (
            (*EXTERNAL, "--set", "kafka.topicsJob.replicationFactor=0"),
            "/kafka/topicsJob/replicationFactor",
        ),
        ((*EXTERNAL, "--set", "connect.external.url=connect:8083"), "/connect/external/url"),
        ((*EXTERNAL, "--set", "kafka.bootstrapServers=kafka"), "/kafka/bootstrapServers"),
    ],
    ids=[
        "no-connect-url",
        "kafka-auth",
        "kafka-auth-own-connect",
        "no-kafka-peers",
        "no-connect-peers",
        "replication-factor-0",
        "url-without-scheme",
        "bootstrap-without-port",
    ],
)
def test_what_the_mode_cannot_do_is_refused_with_a_clear_message(
    arguments: tuple[str, ...], complaint: str
) -> None:
    result = helm("template", "jobflow", str(CHART), *arguments)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_without_network_policies_the_peers_need_not_be_given() -> None:
    objects = render(
        *EXTERNAL,
        "--set", "networkPolicy.enabled=false",
        "--set-json", "networkPolicy.peers.kafka=[]",
        "--set-json", "networkPolicy.peers.connect=[]",
    )  # fmt: skip
    assert not kinds(objects, "NetworkPolicy")
    assert set(kinds(objects, "Job")) == {"jobflow-topics", "jobflow-connector"}
