"""The NetworkPolicies, judged flow by flow by an engine that is not ours.

The chart's policies (each profile), ClickHouse's and ksqlDB's (k8s/), and the policy Strimzi
makes of the Kafka listeners' networkPolicyPeers (k8s/strimzi/kafka.yaml) are handed, with
every flow between the pipeline's pods and its neighbours, to netpol-verdict: cyclonus's
NetworkPolicy matcher (tools/netpol), which cyclonus checks against real network plugins. Each
flow's ingress and egress verdicts must be exactly what the pipeline needs: a flow it needs
that a policy blocks fails here, and so does any flow a policy lets through that it does not
need. The pods' labels and ports are read from the rendered chart, the platform manifests and
the operator's own Job builder; only Strimzi's pods (brokers, operator) and the cluster's
(DNS, Prometheus, the API server) are described here, by their documented labels.
Every policy object also passes the strict server-side dry-run of tests/kube/test_chart.py and
test_platform_manifests.py.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import pytest

from jobflow.components import PIPELINE_SERVICES, SERVICES
from jobflow.operator.jobs import build_job
from tests.kube.apiserver import binaries
from tests.kube.chart import PROFILES, kinds, platform_objects, render

# run by make security-check and make chart-check too (tests/targets.mk)
pytestmark = [pytest.mark.security, pytest.mark.chart]

NAMESPACE = "jobflow"
# A flow: (source, destination, the destination's port name).
Flow = tuple[str, str, str]


@dataclass(frozen=True)
class Endpoint:
    """A pod (or an address outside the cluster) and the ports it serves: name -> (number,
    protocol). Egress or ingress "policed": some policy of ours selects it in that direction."""

    name: str
    labels: dict[str, str]
    namespace: str = NAMESPACE
    ports: dict[str, tuple[int, str]] = field(default_factory=dict)
    ip: str = ""
    external: bool = False
    policed_egress: bool = False
    policed_ingress: bool = False

    def peer(self) -> dict[str, Any]:
        if self.external:
            return {"Internal": None, "IP": self.ip}
        return {
            "Internal": {
                "PodLabels": self.labels,
                "NamespaceLabels": {"kubernetes.io/metadata.name": self.namespace},
                "Namespace": self.namespace,
            },
            "IP": self.ip,
        }


def tcp(**ports: int) -> dict[str, tuple[int, str]]:
    return {name: (number, "TCP") for name, number in ports.items()}


# The neighbours no file of ours describes, by the labels their makers document.
BROKER_LABELS = {
    "strimzi.io/cluster": "jobflow",
    "strimzi.io/kind": "Kafka",
    "strimzi.io/name": "jobflow-kafka",
    "strimzi.io/pool-name": "dual-role",
    "strimzi.io/broker-role": "true",
    "strimzi.io/controller-role": "true",
}
NEIGHBOURS = [
    Endpoint(
        "dns",
        {"k8s-app": "kube-dns"},
        "kube-system",
        {"dns": (53, "UDP"), "dns-tcp": (53, "TCP")},
    ),
    Endpoint(
        "prometheus",
        {"app.kubernetes.io/name": "prometheus", "prometheus": "kube-prometheus-stack"},
        "monitoring",
        tcp(web=9090),
    ),
    Endpoint(
        "strimzi-operator",
        {"name": "strimzi-cluster-operator", "strimzi.io/kind": "cluster-operator"},
        "kafka",
        tcp(http=8080),
    ),
    # KEDA's operator, which reads the processor's lag when it autoscales.
    Endpoint("keda", {"app.kubernetes.io/name": "keda-operator"}, "keda", tcp(metrics=8080)),
    # Somebody else's pod, in jobflow's namespace and in another, and a host on the internet:
    # each serves every port any endpoint serves (PROBES), so that a rule letting a port through
    # to more than its one peer shows here.
    Endpoint("neighbour", {"app": "neighbour"}, NAMESPACE),
    Endpoint("stranger", {"app": "stranger"}, "default"),
    Endpoint("internet", {}, "", ip="203.0.113.7", external=True),
    # The API server as minikube serves it.
    Endpoint("api-server", {}, "", tcp(https=8443), ip="192.168.49.2", external=True),
]
PROBES = ("neighbour", "stranger", "internet")
API_SERVER_PORTS = (443, 6443, 8443)
EXTERNAL_POSTGRES = Endpoint(
    "external-postgres", {}, "", tcp(postgres=5432), ip="198.51.100.7", external=True
)
# Who calls the APIs through an ingress controller, when apiClients names it.
INGRESS_CONTROLLER = Endpoint(
    "ingress-controller",
    {"app.kubernetes.io/name": "ingress-nginx"},
    "ingress-nginx",
    tcp(http=80),
)
API_CLIENTS = [
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
]


def container_ports(pod_spec: dict[str, Any]) -> dict[str, tuple[int, str]]:
    return {
        port["name"]: (port["containerPort"], port.get("protocol", "TCP"))
        for container in pod_spec["containers"]
        for port in container.get("ports", [])
    }


def pods_of(objects: list[dict[str, Any]]) -> dict[str, tuple[dict[str, str], dict[str, Any]]]:
    """Pod labels and pod specs of the workloads among ``objects``, by component or app name."""
    pods = {}
    for o in objects:
        if o["kind"] in {"Deployment", "StatefulSet", "Job"}:
            template = o["spec"]["template"]
            labels, spec = template["metadata"]["labels"], template["spec"]
        elif o["kind"] == "Pod":
            labels, spec = o["metadata"]["labels"], o["spec"]
        else:
            continue
        name = labels.get("app.kubernetes.io/component") or labels["app.kubernetes.io/name"]
        pods[name] = (labels, spec)
    return pods


def schema_apply_labels(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The apply Job's pod labels: the operator's own, then its StreamSchema's (kopf.adopt
    adds the owner's labels without overriding; tests/kube/test_operator.py checks it)."""
    schema = next(iter(kinds(objects, "StreamSchema").values()))
    job = build_job("schema", schema["spec"], "", "0" * 64)
    return {**schema["metadata"]["labels"], **job["spec"]["template"]["metadata"]["labels"]}


def strimzi_listener_policy(kafka: dict[str, Any]) -> dict[str, Any]:
    """The ingress policy Strimzi makes for the brokers from their listeners'
    networkPolicyPeers (a listener without peers admits anyone)."""
    rules = []
    for listener in kafka["spec"]["kafka"]["listeners"]:
        rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": listener["port"]}]}
        if "networkPolicyPeers" in listener:
            rule["from"] = listener["networkPolicyPeers"]
        rules.append(rule)
    return {
        "metadata": {"name": "jobflow-network-policy-kafka", "namespace": NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": {"strimzi.io/name": "jobflow-kafka"}},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


@dataclass
class Cluster:
    """Everything a profile deploys, its neighbours, and the policies that govern them."""

    endpoints: dict[str, Endpoint]
    policies: list[dict[str, Any]]

    def verdicts(self, flows: list[Flow]) -> list[dict[str, bool]]:
        traffic = []
        for source, destination, port in flows:
            number, protocol = self.endpoints[destination].ports[port]
            traffic.append(
                {
                    "Source": self.endpoints[source].peer(),
                    "Destination": self.endpoints[destination].peer(),
                    "Protocol": protocol,
                    "ResolvedPort": number,
                    "ResolvedPortName": port,
                }
            )
        answer = subprocess.run(  # noqa: S603
            [str(binaries().netpol_verdict)],
            input=json.dumps({"policies": self.policies, "traffic": traffic}),
            capture_output=True,
            text=True,
            check=True,
        )
        return list(json.loads(answer.stdout))


def selects(policy: dict[str, Any], endpoint: Endpoint, direction: str) -> bool:
    """Whether ``policy`` selects ``endpoint`` in ``direction`` (matchLabels and In only, which
    is all these policies use; the engine judges the flows themselves)."""
    if endpoint.external or endpoint.namespace != policy["metadata"]["namespace"]:
        return False
    if direction not in policy["spec"]["policyTypes"]:
        return False
    selector = policy["spec"]["podSelector"]
    if any(endpoint.labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    return all(
        endpoint.labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])
    )


def hook_job_env(chart: list[dict[str, Any]], name: str) -> dict[str, str]:
    (container,) = kinds(chart, "Job")[name]["spec"]["template"]["spec"]["containers"]
    return {variable["name"]: variable["value"] for variable in container["env"]}


def cluster_of(*helm_arguments: str) -> Cluster:
    chart = render(*helm_arguments)
    platform = platform_objects()
    ksqldb_enabled = any(
        o["kind"] == "StreamSchema" and o["spec"]["target"]["type"] == "ksqldb" for o in chart
    )
    pods = pods_of(chart) | {
        name: pod
        for name, pod in pods_of(platform).items()
        if name == "clickhouse" or (name == "ksqldb" and ksqldb_enabled)
    }
    endpoints = [
        Endpoint(name, labels, ports=container_ports(spec)) for name, (labels, spec) in pods.items()
    ]
    # Strimzi's Connect pods: the template's labels, then Strimzi's own, which win where both
    # set one (app.kubernetes.io/name and instance). A Kafka Connect of the user's own is an
    # address outside the cluster, the connector Job's URL.
    for connect in kinds(chart, "KafkaConnect").values():
        name = connect["metadata"]["name"]
        endpoints.append(
            Endpoint(
                "connect",
                {
                    **connect["spec"]["template"]["pod"]["metadata"]["labels"],
                    "app.kubernetes.io/name": "kafka-connect",
                    "app.kubernetes.io/instance": name,
                    "strimzi.io/cluster": name,
                    "strimzi.io/kind": "KafkaConnect",
                    "strimzi.io/name": f"{name}-connect",
                },
                # Strimzi's names: the REST API, and the metrics of the metricsConfig.
                ports=tcp(**{"rest-api": 8083, "tcp-prometheus": 9404}),
            )
        )
    if "connector" in pods:
        url = urlparse(hook_job_env(chart, "jobflow-connector")["CONNECTOR_URL"])
        assert url.hostname
        assert url.port
        endpoints.append(
            Endpoint("connect", {}, "", tcp(**{"rest-api": url.port}), url.hostname, external=True)
        )
    endpoints.append(Endpoint("schema-apply", schema_apply_labels(chart)))
    # Strimzi's brokers (k8s/strimzi), or the user's at the topics Job's bootstrap address.
    policies = [
        {**o, "metadata": {**o["metadata"], "namespace": NAMESPACE}}
        for o in [*chart, *platform]
        if o["kind"] == "NetworkPolicy"
    ]
    if kinds(chart, "KafkaTopic"):
        (kafka,) = (o for o in platform if o["kind"] == "Kafka")
        listeners = kafka["spec"]["kafka"]["listeners"]
        endpoints.append(
            Endpoint(
                "kafka",
                BROKER_LABELS,
                ports={f"tcp-{each['name']}": (each["port"], "TCP") for each in listeners},
            )
        )
        policies.append(strimzi_listener_policy(kafka))
    else:
        (bootstrap,) = hook_job_env(chart, "jobflow-topics")["KAFKA_BOOTSTRAP_SERVERS"].split(",")
        host, port = bootstrap.rsplit(":", 1)
        endpoints.append(
            Endpoint("kafka", {}, "", {"tcp-plain": (int(port), "TCP")}, host, external=True)
        )
    endpoints += [*NEIGHBOURS, EXTERNAL_POSTGRES, INGRESS_CONTROLLER]
    every_port = {
        f"{protocol}-{number}": (number, protocol)
        for endpoint in endpoints
        for number, protocol in endpoint.ports.values()
    } | {f"TCP-{number}": (number, "TCP") for number in API_SERVER_PORTS}
    judged = {}
    for number, endpoint in enumerate(endpoints):
        judged[endpoint.name] = Endpoint(
            **{
                **endpoint.__dict__,
                "ip": endpoint.ip or f"10.244.0.{number + 10}",
                "ports": every_port if endpoint.name in PROBES else endpoint.ports,
                "policed_egress": any(selects(p, endpoint, "Egress") for p in policies),
                "policed_ingress": any(selects(p, endpoint, "Ingress") for p in policies),
            }
        )
    return Cluster(judged, policies)


# What the pipeline needs. -----------------------------------------------------------------------

CHART_KAFKA_CLIENTS = ("receiver", "processor", "converter", "connect", "topics")
KAFKA_CLIENTS = (*CHART_KAFKA_CLIENTS, "clickhouse", "ksqldb", "keda")


def needed_flows(
    cluster: Cluster, *, informer_reads: str, postgres: str, listener: str = "tcp-plain"
) -> set[Flow]:
    """``listener``: the one the chart's Kafka clients use (tcp-scram with kafkaAuth)."""
    present = cluster.endpoints
    # Without Strimzi, Kafka and Kafka Connect are addresses of the user's: what they do among
    # themselves is no policy's of ours, and k8s/'s ClickHouse and ksqlDB reach Strimzi's
    # brokers only.
    strimzi_kafka = not present["kafka"].external
    strimzi_connect = not present["connect"].external
    flows: set[Flow] = set()
    for name, endpoint in present.items():
        if endpoint.policed_egress:
            flows |= {(name, "dns", "dns"), (name, "dns", "dns-tcp")}
    flows |= {
        (client, "kafka", listener)
        for client in CHART_KAFKA_CLIENTS
        if client in present and (client != "connect" or strimzi_connect)
    }
    flows |= {
        (client, "kafka", "tcp-plain")
        for client in ("clickhouse", "ksqldb")
        if client in present and strimzi_kafka
    }
    flows |= {("prometheus", service, "http") for service in PIPELINE_SERVICES}
    flows.add(("informer", informer_reads, "postgres" if informer_reads != "ksqldb" else "http"))
    flows.add(("connect", postgres, "postgres"))
    api_callers = ["operator"]
    if strimzi_connect:
        if postgres == EXTERNAL_POSTGRES.name:
            # An external server is any address outside the pod network unless narrowed.
            flows.add(("connect", "internet", "TCP-5432"))
        flows |= {
            ("connect", "connect", "rest-api"),
            ("strimzi-operator", "connect", "rest-api"),
            ("prometheus", "connect", "tcp-prometheus"),
        }
        api_callers.append("connect")
    else:
        flows.add(("connector", "connect", "rest-api"))
    # The API server's address differs between clusters: 443, 6443 or 8443 outside the pods.
    for caller in api_callers:
        flows.add((caller, "api-server", "https"))
        flows |= {(caller, "internet", f"TCP-{number}") for number in API_SERVER_PORTS}
    flows.add(("schema-apply", "clickhouse", "http"))
    flows.add(("schema-apply", postgres, "postgres"))
    if postgres == EXTERNAL_POSTGRES.name:
        flows.add(("schema-apply", "internet", "TCP-5432"))
    if "ksqldb" in present:
        flows.add(("schema-apply", "ksqldb", "http"))
    for caller in ("smoke-test", "loadtest"):
        if caller in present:
            flows |= {(caller, "receiver", "http"), (caller, "informer", "http")}
    return flows


def check(cluster: Cluster, needed: set[Flow], open_ingress: set[tuple[str, str]]) -> None:
    """Every flow between any two endpoints: each direction's verdict is what is needed (a
    side no policy governs lets everything through). ``open_ingress``: (destination, port)
    that anyone may reach. Every listener of the brokers admits all of the pipeline's Kafka
    clients (and KEDA), though each uses one."""
    admitted = needed | {
        (client, "kafka", listener)
        for client in KAFKA_CLIENTS
        for listener in cluster.endpoints["kafka"].ports
    }
    flows = [
        (source.name, destination.name, port)
        for source, destination in itertools.product(cluster.endpoints.values(), repeat=2)
        for port in destination.ports
    ]
    wrong = []
    for flow, verdict in zip(flows, cluster.verdicts(flows), strict=True):
        source, destination = cluster.endpoints[flow[0]], cluster.endpoints[flow[1]]
        egress = not source.policed_egress or flow in needed
        ingress = (
            not destination.policed_ingress
            or flow in admitted
            or (destination.name, flow[2]) in open_ingress
        )
        if (verdict["egress"], verdict["ingress"]) != (egress, ingress):
            wrong.append(f"{flow}: egress {verdict['egress']}, ingress {verdict['ingress']}")
    assert not wrong, "\n".join(wrong)


OPEN_APIS = {("receiver", "http"), ("informer", "http")}


@pytest.mark.parametrize(
    ("profile", "informer_reads", "postgres", "listener"),
    [
        ("default", "ksqldb", "postgres", "tcp-plain"),
        ("lite", "postgres", "postgres", "tcp-plain"),
        ("external-postgres", "ksqldb", "external-postgres", "tcp-plain"),
        ("loadtest", "ksqldb", "postgres", "tcp-plain"),
        ("loadtest-bfg", "ksqldb", "postgres", "tcp-plain"),
        ("kafka-auth", "ksqldb", "postgres", "tcp-scram"),
        ("external-kafka", "ksqldb", "postgres", "tcp-plain"),
        ("lite+external-kafka", "postgres", "postgres", "tcp-plain"),
    ],
)
def test_each_profile_allows_exactly_the_flows_the_pipeline_needs(
    profile: str, informer_reads: str, postgres: str, listener: str
) -> None:
    cluster = cluster_of(*(a for name in profile.split("+") for a in PROFILES.get(name, ())))
    assert ("loadtest" in cluster.endpoints) == profile.startswith("loadtest")
    assert ("topics" in cluster.endpoints) == profile.endswith("external-kafka")
    known = {
        "lite",
        "external-postgres",
        "loadtest",
        "loadtest-bfg",
        "kafka-auth",
        "external-kafka",
    }
    assert set(PROFILES) <= known, "a new one?"
    needed = needed_flows(
        cluster, informer_reads=informer_reads, postgres=postgres, listener=listener
    )
    check(cluster, needed, OPEN_APIS)


def test_named_api_clients_and_the_releases_own_tests_alone_reach_the_apis() -> None:
    cluster = cluster_of(
        *PROFILES["loadtest"], "--set-json", f"networkPolicy.apiClients={json.dumps(API_CLIENTS)}"
    )
    needed = needed_flows(cluster, informer_reads="ksqldb", postgres="postgres")
    needed |= {("ingress-controller", api, "http") for api in ("receiver", "informer")}
    check(cluster, needed, open_ingress=set())


def test_every_pod_of_the_release_is_under_default_deny() -> None:
    cluster = cluster_of()
    release = [
        e
        for e in cluster.endpoints.values()
        if e.labels.get("app.kubernetes.io/instance") == "jobflow"
    ]
    assert {e.name for e in release} >= {*SERVICES, "postgres", "schema-apply"}
    # Kafka Connect's pods are Strimzi's, under a policy of their own.
    release.append(cluster.endpoints["connect"])
    assert all(e.policed_egress and e.policed_ingress for e in release)


def test_the_hook_jobs_without_strimzi_are_under_default_deny() -> None:
    cluster = cluster_of(*PROFILES["external-kafka"])
    for job in ("topics", "connector"):
        assert cluster.endpoints[job].policed_egress, job
        assert cluster.endpoints[job].policed_ingress, job


def test_switched_off_the_chart_renders_no_policy() -> None:
    chart = render("--set", "networkPolicy.enabled=false")
    assert not kinds(chart, "NetworkPolicy")
    assert kinds(render(), "NetworkPolicy")


def test_a_release_postgres_on_another_service_port_is_reached_on_its_pods_port() -> None:
    """Policies judge the pod's port, after the Service: postgres.port is the Service's."""
    cluster = cluster_of("--set", "postgres.port=6432")
    assert cluster.endpoints["postgres"].ports["postgres"] == (5432, "TCP")
    check(cluster, needed_flows(cluster, informer_reads="ksqldb", postgres="postgres"), OPEN_APIS)
