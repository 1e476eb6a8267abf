"""The servers the cluster's pods use, on the host: a second instance of the local stack's
Kafka, Kafka Connect, PostgreSQL and ClickHouse, listening on the host's end of the node link
only, with data of its own under ``.local/cluster/data-plane``.

It stands for what a user's cluster reaches outside itself (a Kafka the chart does not
manage, a database server), and is deliberately bare, as such servers come: it makes
PostgreSQL's table (the database's owner's job, as with any external server) and nothing
else. The topics, the connector and ClickHouse's tables are the release's to make, by its hook
Jobs and its operator.
"""

from __future__ import annotations

from jobflow.core.settings import PostgresSettings
from local.cluster.config import ClusterSettings
from local.components import ClickHouse, Component, Connect, Kafka, Postgres
from local.config import StackSettings
from local.stack import start_all
from local.supervisor import Supervisor


def stack_settings(cluster: ClusterSettings) -> StackSettings:
    return StackSettings(
        dir=cluster.path("data-plane"),
        host=str(cluster.host_address),
        client_network=cluster.link.network,
        # Its jars are the local stack's (make up installs them), not copies.
    )


def postgres_settings(cluster: ClusterSettings) -> PostgresSettings:
    return PostgresSettings(host=str(cluster.host_address))


def components(cluster: ClusterSettings) -> tuple[StackSettings, list[Component]]:
    stack = stack_settings(cluster)
    jars = StackSettings()
    postgres = postgres_settings(cluster)
    kafka = Kafka(stack, jars.path("java", "lib"))
    return stack, [
        Postgres(stack, postgres),
        kafka,
        ClickHouse(stack),
        Connect(stack, kafka, postgres, jars.path("java", "plugins")),
    ]


async def up(cluster: ClusterSettings) -> None:
    stack, parts = components(cluster)
    await start_all(stack, parts, [part for part in parts if isinstance(part, Postgres)])


def down(cluster: ClusterSettings) -> None:
    supervisor = Supervisor(stack_settings(cluster))
    if supervisor.running():
        supervisor.shutdown()
