"""The Helm chart, checked offline as strictly as we can: helm lint --strict, the values
schema, a server-side dry-run of every rendered object on a real kube-apiserver (with the
Strimzi CRDs installed, strict field validation), and consistency with jobflow/components.py,
the services' settings and charts/jobflow/files/."""

from __future__ import annotations

import base64
import json
import re
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from local.config import CONTRACTS, REPO
from pydantic_settings import BaseSettings

from jobflow.components import IMAGES, PIPELINE_SERVICES, SERVICES
from jobflow.core.settings import KafkaSettings, PostgresSettings
from jobflow.operator.run import OperatorSettings
from jobflow.schema.migrations import bundle, load_directory, parse_bundle
from tests.kube.apiserver import ControlPlane, api_client, dry_run_create
from tests.kube.chart import (
    CHART,
    PROFILES,
    WITH_KEDA,
    WITH_PROMETHEUS_OPERATOR,
    helm,
    kinds,
    render,
)

# run by make chart-check too (tests/targets.mk)
pytestmark = pytest.mark.chart

SHARED_SETTINGS = (KafkaSettings, PostgresSettings)


def test_helm_lint_strict_passes() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("bogus=1", "additional properties 'bogus' not allowed"),
        ("receiver.replicaCount=2", "additional properties 'replicaCount' not allowed"),
        ("informer.backend=mysql", "value must be one of 'ksqldb', 'postgres'"),
        ("receiver.env.DEBUG=1", "'DEBUG' does not match pattern"),
    ],
)
def test_the_values_schema_rejects_what_it_does_not_know(setting: str, complaint: str) -> None:
    result = helm("template", "jobflow", str(CHART), "--set", setting)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_every_rendered_object_passes_a_strict_server_side_dry_run(
    control_plane: ControlPlane, strimzi_crds: list[str], jobflow_crds: list[str]
) -> None:
    admin = api_client(control_plane.admin_kubeconfig)
    namespace = f"chart-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": namespace}})
    objects = render()
    assert {"Deployment", "Service", "KafkaTopic", "StreamSchema", "Role"} <= {
        o["kind"] for o in objects
    }
    for manifest in objects:
        dry_run_create(admin, manifest, namespace)


def test_a_field_the_api_does_not_know_fails_the_dry_run(
    control_plane: ControlPlane, strimzi_crds: list[str]
) -> None:
    admin = api_client(control_plane.admin_kubeconfig)
    topic = next(iter(kinds(render(), "KafkaTopic").values()))
    topic["spec"]["retentionMs"] = 1
    with pytest.raises(client.exceptions.ApiException) as rejected:
        dry_run_create(admin, topic, "default")
    assert 'unknown field "spec.retentionMs"' in json.loads(str(rejected.value.body))["message"]


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


def test_the_charts_components_are_those_of_jobflow_components() -> None:
    """Every place the chart names the components, against the one list: the image overrides
    (values.yaml and its schema), each service's Deployment, image and port, the services that
    serve metrics (the jobflow.services helper) and the services' variables in *.env."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    overrides = schema["properties"]["image"]["properties"]["overrides"]
    assert list(values["image"]["overrides"]) == list(IMAGES)
    assert overrides["required"] == list(overrides["properties"]) == list(IMAGES)

    objects = render()
    tag = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    deployments = kinds(objects, "Deployment")
    assert set(deployments) == {f"jobflow-{name}" for name in SERVICES}
    for name, service in SERVICES.items():
        (container,) = deployments[f"jobflow-{name}"]["spec"]["template"]["spec"]["containers"]
        assert (container["name"], container["image"]) == (name, f"jobflow-{name}:{tag}")
        assert values[name][_camel(service.port_setting)] == service.default_port
        assert [port["containerPort"] for port in container["ports"]] == [service.default_port]
        env = {variable["name"]: variable.get("value") for variable in container["env"]}
        assert env[service.port_variable] == str(service.default_port)
    (connect,) = kinds(objects, "KafkaConnect").values()
    assert connect["spec"]["image"] == f"jobflow-connect:{tag}"

    metrics = kinds(objects, "NetworkPolicy")["jobflow-metrics"]["spec"]["podSelector"]
    (scraped,) = metrics["matchExpressions"]
    assert scraped["values"] == list(PIPELINE_SERVICES)
    pattern = schema["definitions"]["env"]["propertyNames"]["pattern"]
    prefixes = re.fullmatch(r"\^\(([A-Z|]+)\)_\[A-Z0-9_\]\+\$", pattern)
    assert prefixes is not None, pattern
    assert set(prefixes.group(1).split("|")) == {
        "KAFKA",
        "POSTGRES",
        *(service.env_prefix.removesuffix("_") for service in PIPELINE_SERVICES.values()),
    }


def _known_variables(component: str) -> set[str]:
    known = set()
    settings: type[BaseSettings]
    for settings in (PIPELINE_SERVICES[component].settings_class(), *SHARED_SETTINGS):
        prefix = str(settings.model_config.get("env_prefix", ""))
        known |= {f"{prefix}{name}".upper() for name in settings.model_fields}
    return known


@pytest.mark.parametrize("component", sorted(PIPELINE_SERVICES))
def test_each_service_gets_only_settings_it_reads_on_the_port_it_serves(component: str) -> None:
    deployments = kinds(render(), "Deployment")
    (container,) = deployments[f"jobflow-{component}"]["spec"]["template"]["spec"]["containers"]
    variables = {variable["name"] for variable in container["env"]}
    assert variables <= _known_variables(component)
    port = PIPELINE_SERVICES[component].default_port
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = kinds(render(), "Service")[f"jobflow-{component}"]
    assert service["spec"]["ports"][0]["port"] == port


def test_every_required_setting_is_set() -> None:
    deployments = kinds(render(), "Deployment")
    for component, service in PIPELINE_SERVICES.items():
        (container,) = deployments[f"jobflow-{component}"]["spec"]["template"]["spec"]["containers"]
        variables = {variable["name"] for variable in container["env"]}
        settings = service.settings_class()
        prefix = str(settings.model_config.get("env_prefix", ""))
        required = {
            f"{prefix}{name}".upper()
            for name, field in settings.model_fields.items()
            if field.is_required()
        }
        assert required <= variables
        assert {f"{prefix}HOST", f"{prefix}PORT", "KAFKA_BOOTSTRAP_SERVERS"} <= variables


def test_kafka_topics_are_the_contract_file() -> None:
    contract = yaml.safe_load((CONTRACTS / "topics.yaml").read_text())["topics"]
    topics = sorted(
        (
            topic["spec"]["topicName"],
            topic["spec"]["partitions"],
            topic["spec"]["replicas"],
            topic["spec"].get("config", {}),
        )
        for topic in kinds(render(), "KafkaTopic").values()
    )
    assert topics == sorted(
        (t["name"], t["partitions"], t["replicas"], t.get("config", {})) for t in contract
    )
    assert all(
        topic["metadata"]["labels"]["strimzi.io/cluster"] == "jobflow"
        for topic in kinds(render(), "KafkaTopic").values()
    )


def test_pods_are_restricted() -> None:
    for deployment in kinds(render(), "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        # Only the operator talks to the Kubernetes API.
        uses_api = deployment["metadata"]["name"] == "jobflow-operator"
        assert pod["automountServiceAccountToken"] is uses_api
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert set(container["resources"]) == {"requests", "limits"}


def test_the_schema_config_map_carries_each_stores_migration_files() -> None:
    config_map = kinds(render(), "ConfigMap")["jobflow-schema"]
    stores = ("clickhouse", "postgres", "ksqldb")
    # Byte for byte what jobflow.schema.migrations.bundle makes of the files, and so the same
    # migrations with the same checksums as the local stack applies from the files themselves.
    assert config_map["data"] == {
        f"{store}.sql": bundle(CONTRACTS / store / "migrations") for store in stores
    }
    for store in stores:
        parameters = {"kafka_broker_list": "kafka:9092"}
        bundled = parse_bundle(config_map["data"][f"{store}.sql"], parameters)
        assert bundled == load_directory(CONTRACTS / store / "migrations", parameters)


def test_the_operator_gets_exactly_the_rules_of_the_contract_file() -> None:
    role = kinds(render(), "Role")["jobflow-operator"]
    rules = yaml.safe_load((CONTRACTS / "operator" / "rbac-rules.yaml").read_text())["rules"]
    assert role["rules"] == rules
    binding = kinds(render(), "RoleBinding")["jobflow-operator"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "jobflow-operator", "namespace": "jobflow"}
    ]
    operator = kinds(render(), "Deployment")["jobflow-operator"]["spec"]["template"]["spec"]
    assert operator["serviceAccountName"] == "jobflow-operator"
    (container,) = operator["containers"]
    known = {f"OPERATOR_{name}".upper() for name in OperatorSettings.model_fields}
    assert {variable["name"] for variable in container["env"]} <= known
    assert (
        container["ports"][0]["containerPort"]
        == OperatorSettings.model_fields["liveness_port"].default
    )


def test_schemas_point_at_the_servers_and_run_the_operators_image() -> None:
    schemas = kinds(render(), "StreamSchema")
    clickhouse, ksqldb = schemas["jobflow-clickhouse"]["spec"], schemas["jobflow-ksqldb"]["spec"]
    assert clickhouse["target"] == {
        "type": "clickhouse",
        "url": "http://clickhouse:8123",
        "credentialsSecret": {"name": "clickhouse-credentials"},
    }
    assert clickhouse["parameters"] == {"kafka_broker_list": "jobflow-kafka-bootstrap:9092"}
    assert ksqldb["target"] == {"type": "ksqldb", "url": "http://ksqldb:8088"}
    # The connector creates no table (schema.evolution none): the migrations make it.
    postgres = schemas["jobflow-postgres"]["spec"]
    assert postgres["target"] == {
        "type": "postgres",
        "url": "postgresql://jobflow-postgres:5432/postgres",
        "credentialsSecret": {"name": "jobflow-postgres"},
    }
    images = {schema["spec"]["job"]["image"] for schema in schemas.values()}
    assert images == {"jobflow-operator:0.1.0"}
    for name, schema in schemas.items():
        store = name.removeprefix("jobflow-")
        reference = {"name": "jobflow-schema", "key": f"{store}.sql"}
        assert schema["spec"]["statements"] == {"configMapKeyRef": reference}
    assert set(kinds(render("--set", "ksqldb.enabled=false"), "StreamSchema")) == {
        "jobflow-clickhouse",
        "jobflow-postgres",
    }


def test_the_connector_is_the_contract_file_with_credentials_from_the_secret() -> None:
    (connector,) = kinds(render(), "KafkaConnector").values()
    contract = json.loads((CONTRACTS / "connect" / "postgres-connector.json").read_text())
    spec = connector["spec"]
    assert spec["class"] == contract.pop("connector.class")
    assert spec["tasksMax"] == int(contract.pop("tasks.max"))
    # A task the database stopped (it does not retry every error) is restarted by Strimzi.
    assert spec["autoRestart"] == {"enabled": True}
    config = dict(spec["config"])
    assert config.pop("connection.url") == "jdbc:postgresql://jobflow-postgres:5432/postgres"
    assert config.pop("connection.username") == "${secrets:jobflow/jobflow-postgres:username}"
    assert config.pop("connection.password") == "${secrets:jobflow/jobflow-postgres:password}"
    assert config == contract
    (connect,) = kinds(render(), "KafkaConnect").values()
    assert connector["metadata"]["labels"]["strimzi.io/cluster"] == connect["metadata"]["name"]
    assert connect["metadata"]["annotations"]["strimzi.io/use-connector-resources"] == "true"
    assert connect["spec"]["config"]["config.providers.secrets.class"] == (
        "io.strimzi.kafka.KubernetesSecretConfigProvider"
    )
    (secret_role,) = (
        r for r in kinds(render(), "Role").values() if r["metadata"]["name"].endswith("secrets")
    )
    assert secret_role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["jobflow-postgres"],
            "verbs": ["get"],
        }
    ]


def test_the_sink_reads_committed_records_only() -> None:
    (connect,) = kinds(render(), "KafkaConnect").values()
    assert connect["spec"]["config"]["consumer.isolation.level"] == "read_committed"
    # The connector's own override must be allowed, or Connect refuses the connector.
    assert connect["spec"]["config"]["connector.client.config.override.policy"] == "All"
    (connector,) = kinds(render(), "KafkaConnector").values()
    assert connector["spec"]["config"]["consumer.override.isolation.level"] == "read_committed"


def test_postgres_tables_come_from_the_migrations_alone_whoever_runs_the_server() -> None:
    # No init script besides: the operator's migrations make table jobs, and record it.
    objects = render()
    assert "jobflow-postgres-init" not in kinds(objects, "ConfigMap")
    statefulset = kinds(objects, "StatefulSet")["jobflow-postgres"]["spec"]["template"]["spec"]
    assert "init" not in {volume["name"] for volume in statefulset["volumes"]}
    external = kinds(render(*PROFILES["external-postgres"]), "StreamSchema")["jobflow-postgres"]
    assert external["spec"]["target"]["url"] == "postgresql://db.example:5432/postgres"


def test_the_database_credentials_are_generated_never_fixed() -> None:
    first, second = kinds(render(), "Secret"), kinds(render(), "Secret")
    assert set(first) == {"jobflow-postgres", "clickhouse-credentials"}
    for name, secret in first.items():
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert base64.b64decode(secret["data"]["username"]) == b"jobflow"
        assert len(base64.b64decode(secret["data"]["password"])) == 32
        assert second[name]["data"]["password"] != secret["data"]["password"], name
    # A Secret of an external server holds that server's credentials: never generated.
    external = render(*PROFILES["external-postgres"])
    assert set(kinds(external, "Secret")) == {"clickhouse-credentials"}


def test_no_password_is_written_into_any_object_but_the_secret() -> None:
    for manifest in render("--set", "informer.backend=postgres"):
        if manifest["kind"] == "Secret":
            continue
        # Naming a password's place is fine: a Secret's key, a config provider's reference, a
        # mounted Secret's file.
        text = re.sub(r"/run/secrets/\w+/password|_PASSWORD_FILE", "", json.dumps(manifest))
        assert "password" not in text.lower() or "secretKeyRef" in text or "${secrets:" in text, (
            manifest["kind"],
            manifest["metadata"]["name"],
        )


def test_an_external_postgres_replaces_the_statefulset() -> None:
    objects = render("--set", "postgres.enabled=false", "--set", "postgres.host=db.example")
    assert not kinds(objects, "StatefulSet")
    (connector,) = kinds(objects, "KafkaConnector").values()
    assert (
        connector["spec"]["config"]["connection.url"]
        == "jdbc:postgresql://db.example:5432/postgres"
    )
    result = helm("template", "jobflow", str(CHART), "--set", "postgres.enabled=false")
    assert result.returncode != 0
    assert "/postgres/host" in result.stderr


def test_the_profiles_are_the_ones_documented() -> None:
    assert set(PROFILES) == {
        "lite",
        "loadtest",
        "loadtest-bfg",
        "external-postgres",
        "external-kafka",
        "kafka-auth",
    }


@pytest.mark.parametrize(
    "profile",
    [(), *PROFILES.values(), WITH_PROMETHEUS_OPERATOR, WITH_KEDA],
    ids=["default", *PROFILES, "prometheus-operator", "keda"],
)
def test_each_profile_passes_the_strict_dry_run(
    control_plane: ControlPlane,
    strimzi_crds: list[str],
    jobflow_crds: list[str],
    prometheus_operator_crds: list[str],
    keda_crds: list[str],
    profile: tuple[str, ...],
) -> None:
    admin = api_client(control_plane.admin_kubeconfig)
    namespace = f"profile-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": namespace}})
    for manifest in render(*profile):
        dry_run_create(admin, manifest, namespace)


def test_kafka_auth_makes_the_contract_files_users_and_logs_each_client_in_as_its_own() -> None:
    objects = render(*PROFILES["kafka-auth"])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    contract = yaml.safe_load((CONTRACTS / "kafka-users.yaml").read_text())["users"]
    users = kinds(objects, "KafkaUser")
    assert set(users) == {f"jobflow-{user}" for user in contract}
    for user, spec in contract.items():
        kafka_user = users[f"jobflow-{user}"]
        assert kafka_user["metadata"]["labels"]["strimzi.io/cluster"] == "jobflow"
        assert kafka_user["spec"]["authentication"] == {"type": "scram-sha-512"}
        expected = json.loads(json.dumps(spec["acls"]).replace("${connect}", "jobflow-connect"))
        assert kafka_user["spec"]["authorization"] == {"type": "simple", "acls": expected}

    bootstrap = values["kafkaAuth"]["bootstrapServers"]
    deployments = kinds(objects, "Deployment")
    for service in [name for name in PIPELINE_SERVICES if name in contract]:
        pod = deployments[f"jobflow-{service}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == bootstrap
        assert env["KAFKA_SASL_USERNAME"] == f"jobflow-{service}"
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        mounted = {
            mount["mountPath"]: next(
                v["secret"]["secretName"] for v in pod["volumes"] if v["name"] == mount["name"]
            )
            for mount in container["volumeMounts"]
        }
        assert mounted == {
            str(Path(env["KAFKA_SASL_PASSWORD_FILE"]).parent): f"jobflow-{service}",
            str(Path(env["KAFKA_SSL_CA_LOCATION"]).parent): "jobflow-cluster-ca-cert",
        }
    informer = deployments["jobflow-informer"]["spec"]["template"]["spec"]["containers"][0]
    assert not [e for e in informer["env"] if e["name"].startswith("KAFKA_S")]
    (connect,) = kinds(objects, "KafkaConnect").values()
    assert connect["spec"]["bootstrapServers"] == bootstrap
    assert connect["spec"]["authentication"]["username"] == "jobflow-connect"
    assert not kinds(render(), "KafkaUser")


def test_kafka_auths_address_is_the_brokers_scram_listener() -> None:
    kafka = next(
        document
        for document in yaml.safe_load_all((REPO / "k8s" / "strimzi" / "kafka.yaml").read_text())
        if document and document["kind"] == "Kafka"
    )
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    port = int(values["kafkaAuth"]["bootstrapServers"].rsplit(":", 1)[1])
    listeners = kafka["spec"]["kafka"]["listeners"]
    (listener,) = [each for each in listeners if each["port"] == port]
    assert listener["tls"] is True
    assert listener["authentication"] == {"type": "scram-sha-512"}
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("networkPolicy.enabled=false", "kafkaAuth needs networkPolicy.enabled"),
        (
            "processor.env.PROCESSOR_GROUP_ID=other",
            "processor.env.PROCESSOR_GROUP_ID changes a name",
        ),
    ],
)
def test_kafka_auth_refuses_what_its_acls_do_not_cover(setting: str, complaint: str) -> None:
    result = helm("template", "jobflow", str(CHART), *PROFILES["kafka-auth"], "--set", setting)
    assert result.returncode != 0
    assert complaint in result.stderr


@pytest.mark.parametrize("profile", [(), PROFILES["kafka-auth"]], ids=["default", "kafka-auth"])
@pytest.mark.parametrize(
    "setting",
    [
        "receiver.env.KAFKA_RECEIVER_TOPIC=jobs",
        "processor.env.KAFKA_PROCESSOR_TOPIC=done",
        "converter.env.KAFKA_CLICKHOUSE_TOPIC=ch",
        "converter.env.KAFKA_DLQ_SUFFIX=.dead",
        "informer.env.KAFKA_POSTGRES_TOPIC=pg",
    ],
)
def test_a_service_told_another_topic_name_is_refused(
    profile: tuple[str, ...], setting: str
) -> None:
    # The DDL, the connector and the ACLs read the names of files/topics.yaml: a service
    # writing elsewhere would feed no sink.
    result = helm("template", "jobflow", str(CHART), *profile, "--set", setting)
    assert result.returncode != 0
    service, _, name = setting.split("=")[0].split(".")
    assert f"{service}.env.{name}: the topic names are fixed" in result.stderr
