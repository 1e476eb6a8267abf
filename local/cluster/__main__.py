"""``python -m local.cluster {up,down,status}``: the one-node cluster on this machine."""

from __future__ import annotations

import argparse
import sys

from local.cluster.cluster import Cluster, ClusterError
from local.cluster.config import ClusterSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.cluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start the node (idempotent) and wait until it is Ready")
    commands.add_parser("down", help="stop everything the cluster started; keep its state")
    commands.add_parser("status", help="state and pid of every process of the node")
    commands.add_parser("images", help="build every image into the node's containerd")
    commands.add_parser("deploy", help="install or upgrade the release on the cluster")
    arguments = parser.parse_args(argv)
    cluster = Cluster(ClusterSettings())
    try:
        if arguments.command == "up":
            cluster.up()
        elif arguments.command == "down":
            cluster.down()
        elif arguments.command == "images":
            cluster.project_images()
        elif arguments.command == "deploy":
            cluster.deploy()
        else:
            for name, state, pid in cluster.status():
                print(f"{name:<24} {state:<12} {pid or ''}")
    except ClusterError as error:
        print(f"!!! cluster: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
