"""A second, real Kafka broker that authenticates and authorizes, as the chart's kafkaAuth asks.

The same Kafka 4.3.1 jars as the local stack, one KRaft node in a folder of its own, with:
- SECURE: SASL_SSL with SCRAM-SHA-512, its certificate made by keytool here and trusted by the
  clients through its PEM (as Strimzi's cluster CA is, through a mounted Secret);
- ADMIN: plaintext, whose anonymous user is the super user, as on Strimzi's plain listener in
  kafkaAuth (k8s/strimzi/kafka.yaml); the test sets the broker up through it;
- StandardAuthorizer, so the SECURE listener's users can do only what their ACLs allow.
The users and ACLs come from charts/jobflow/files/kafka-users.yaml, as the chart's KafkaUsers do.
"""

from __future__ import annotations

import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)
from confluent_kafka.cimpl import NewTopic
from local.components import kafka_cluster_id
from local.config import CONTRACTS

from jobflow.topics import TopicSpec
from tests.ports import free_ports

KAFKA_USERS = CONTRACTS / "kafka-users.yaml"
# The throwaway keystore of a test broker.
STORE_PASSWORD = "broker-keystore"  # noqa: S105
RESOURCE_TYPES = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactionalId": ResourceType.TRANSACTIONAL_ID,
    "cluster": ResourceType.BROKER,
}
PATTERNS = {"literal": ResourcePatternType.LITERAL, "prefix": ResourcePatternType.PREFIXED}
OPERATIONS = {
    "Read": AclOperation.READ,
    "Write": AclOperation.WRITE,
    "Create": AclOperation.CREATE,
    "Describe": AclOperation.DESCRIBE,
    "DescribeConfigs": AclOperation.DESCRIBE_CONFIGS,
}


@dataclass(frozen=True)
class SecuredKafka:
    admin_bootstrap: str  # plaintext, anonymous super user
    secure_bootstrap: str  # SASL_SSL, SCRAM-SHA-512
    ca_file: Path
    passwords: dict[str, str]  # user -> password
    folder: Path

    def client_environment(self, user: str, password: str | None = None) -> dict[str, str]:
        """KAFKA_* of a service that logs in as ``user``, the password as a mounted file."""
        password_file = self.folder / f"{user}-{uuid.uuid4().hex[:6]}.password"
        password_file.write_text(password if password is not None else self.passwords[user])
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.secure_bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD_FILE": str(password_file),
            "KAFKA_SSL_CA_LOCATION": str(self.ca_file),
        }

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.admin_bootstrap, "log_level": 0})


def acl_bindings(user: str, rules: list[dict[str, Any]], connect: str) -> list[AclBinding]:
    """A KafkaUser's ACL rules (Strimzi's format) as the broker's ACL bindings."""
    bindings = []
    for rule in rules:
        resource = rule["resource"]
        for operation in rule["operations"]:
            bindings.append(
                AclBinding(
                    RESOURCE_TYPES[resource["type"]],
                    resource.get("name", "kafka-cluster").replace("${connect}", connect),
                    PATTERNS[resource.get("patternType", "literal")],
                    f"User:{user}",
                    rule.get("host", "*"),
                    OPERATIONS[operation],
                    AclPermissionType.ALLOW,
                )
            )
    return bindings


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 in a PKCS12 keystore, and its PEM."""
    keystore, pem = folder / "broker.p12", folder / "ca.crt"
    store = ["-keystore", str(keystore), "-storetype", "PKCS12", "-storepass", STORE_PASSWORD]
    generate = ["-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048"]
    subject = ["-validity", "2", "-dname", "CN=127.0.0.1", "-ext", "SAN=ip:127.0.0.1,dns:localhost"]
    subprocess.run(  # noqa: S603
        ["keytool", *generate, *subject, *store],  # noqa: S607
        check=True,
        capture_output=True,
    )
    subprocess.run(  # noqa: S603
        ["keytool", "-exportcert", "-rfc", "-alias", "broker", "-file", str(pem), *store],  # noqa: S607
        check=True,
        capture_output=True,
    )
    return keystore, pem


def _server_properties(folder: Path, keystore: Path, ports: dict[str, int]) -> Path:
    admin, secure, controller = ports["admin"], ports["secure"], ports["controller"]
    properties = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller}",
        "controller.listener.names": "CONTROLLER",
        "listeners": (
            f"ADMIN://127.0.0.1:{admin},SECURE://127.0.0.1:{secure},"
            f"CONTROLLER://127.0.0.1:{controller}"
        ),
        "advertised.listeners": f"ADMIN://127.0.0.1:{admin},SECURE://127.0.0.1:{secure}",
        "listener.security.protocol.map": "ADMIN:PLAINTEXT,SECURE:SASL_SSL,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "ADMIN",
        "listener.name.secure.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.secure.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "ssl.keystore.location": str(keystore),
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.password": STORE_PASSWORD,
        "ssl.key.password": STORE_PASSWORD,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:ANONYMOUS",
        "allow.everyone.if.no.acl.found": "false",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.dirs": str(folder / "data"),
    }
    path = folder / "server.properties"
    path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
    return path


def _wait_until_up(admin: AdminClient, broker: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        assert broker.poll() is None, log.read_text()[-3000:]
        try:
            admin.list_topics(timeout=2)
            return
        except Exception:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)


def _set_up(
    kafka: SecuredKafka, topics: list[TopicSpec], users: dict[str, Any], connect: str
) -> None:
    admin = kafka.admin()
    created = admin.create_topics(
        [NewTopic(t.name, num_partitions=t.partitions, replication_factor=1) for t in topics]
    )
    for future in created.values():
        future.result(30)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(
            user,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
            kafka.passwords[user].encode(),
        )
        for user in users
    ]
    for future in admin.alter_user_scram_credentials(upserts).values():
        future.result(30)
    bindings = [
        b for user, spec in users.items() for b in acl_bindings(user, spec["acls"], connect)
    ]
    for future in admin.create_acls(bindings).values():
        future.result(30)
    # Created is not yet in force: wait until the broker's authorizer lists every binding.
    # None matches any name, principal and host (the client's documentation; its stubs say str).
    anything: Any = None
    everything = AclBindingFilter(
        ResourceType.ANY,
        anything,
        ResourcePatternType.ANY,
        anything,
        anything,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    deadline = time.monotonic() + 30
    while len(admin.describe_acls(everything).result(10)) < len(bindings):
        assert time.monotonic() < deadline, "the ACLs never came into force"
        time.sleep(0.2)


@contextmanager
def secured_kafka(lib: Path, folder: Path, topics: list[TopicSpec]) -> Iterator[SecuredKafka]:
    """Start the broker with ``lib``'s jars in ``folder``, with ``topics`` and every user of
    kafka-users.yaml (connect's resources under the name "connect"); stop it afterwards."""
    keystore, pem = _certificate(folder)
    ports = dict(zip(("admin", "secure", "controller"), free_ports(3), strict=True))
    config = _server_properties(folder, keystore, ports)
    java = ["java", "-Xmx512m", "-Xms512m", "-cp", f"{lib}/*"]
    cluster_id = kafka_cluster_id()
    storage = ["kafka.tools.StorageTool", "format", "--standalone", "--cluster-id", cluster_id]
    subprocess.run(  # noqa: S603
        [*java, *storage, "--config", str(config)],
        check=True,
        capture_output=True,
    )
    log = folder / "broker.log"
    with log.open("wb") as output:
        broker = subprocess.Popen([*java, "kafka.Kafka", str(config)], stdout=output, stderr=output)  # noqa: S603
    users = yaml.safe_load(KAFKA_USERS.read_text())["users"]
    kafka = SecuredKafka(
        admin_bootstrap=f"127.0.0.1:{ports['admin']}",
        secure_bootstrap=f"127.0.0.1:{ports['secure']}",
        ca_file=pem,
        passwords={user: secrets.token_urlsafe(24) for user in users},
        folder=folder,
    )
    try:
        _wait_until_up(kafka.admin(), broker, log)
        _set_up(kafka, topics, users, connect="connect")
        yield kafka
    finally:
        broker.terminate()
        try:
            broker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()
