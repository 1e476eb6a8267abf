"""Restart the connector's failed tasks, with a growing pause between restarts.

What Strimzi's KafkaConnector ``autoRestart`` does in a cluster, for the local stack: a sink
task that hit an error it does not retry (the database went away mid-statement) stops, keeps
its uncommitted offsets, and carries on from them once restarted.

    python -m local.connect_watchdog <connect url> <connector>
"""

from __future__ import annotations

import logging
import sys
import time

import httpx

from jobflow.connector import restart_failed

log = logging.getLogger("connect-watchdog")

CHECK_EVERY_S = 5.0
MAX_PAUSE_S = 60.0


def watch(url: str, connector: str) -> None:
    restarts_in_a_row = 0
    next_restart_at = 0.0
    with httpx.Client(base_url=url, timeout=10) as client:
        while True:
            try:
                if time.monotonic() >= next_restart_at:
                    restarted = restart_failed(client, connector)
                    if restarted:
                        restarts_in_a_row += 1
                        pause_s = min(MAX_PAUSE_S, CHECK_EVERY_S * 2 ** (restarts_in_a_row - 1))
                        next_restart_at = time.monotonic() + pause_s
                        log.warning(
                            "restarted %s of %s (restart %d in a row; next no sooner than %.0f s)",
                            ", ".join(restarted),
                            connector,
                            restarts_in_a_row,
                            pause_s,
                        )
                    else:
                        restarts_in_a_row = 0
            except httpx.HTTPError as exc:
                log.info("Connect not answering (%s); trying again", exc)
            time.sleep(CHECK_EVERY_S)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    watch(*sys.argv[1:3])
